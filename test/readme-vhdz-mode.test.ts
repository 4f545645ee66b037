// SPDX-License-Identifier: MIT
/**
 * README "urBackup's VHD, VHDZ, VHDX and VHDXZ backups": "A block that cannot be decoded fails
 * that read with EIO and is logged once with the file and the block." A `.vhdz` written as
 * urBackup writes it (fixtures/urbackup-images.ts) gets one block record's mode field set to 7
 * (CompressedFile.cpp knows 0 stored, 1 zlib, 2 zstd; docs/urbackup-image-formats.md §2):
 * through the mount the reads of that block answer EIO and every other byte is the truth disk's;
 * `materialize` exits 1 with one line naming the file.
 */
import { copyFile, mkdir, mkdtemp, open, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureVolume } from '../fixtures/build-fixtures.js';
import { seededRandom, writeUrbackupImage } from '../fixtures/urbackup-images.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { startMount, tempMountpoint } from './helpers/fuse-mount.js';
import { runOk, synthvhd } from './helpers/run.js';

const fixtures = inject('fixtures');
const KiB = 1024;
const RAW_VOLUME_OFFSET = 512 * KiB;
const CLIENT_BLOCK = 4 * KiB;
/** urBackup's image VHD block (ImageBackup.cpp): 512 KiB of disk per block. */
const VHD_BLOCK = 512 * KiB;
/** CompressedFile.cpp: 2 MiB blocks, header magic 29 bytes then index offset i64 LE at 29. */
const COMPRESSED_BLOCK = 2 * 1024 * KiB;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-readme-vhdz-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function readVolume(volume: FixtureVolume): Promise<Uint8Array> {
  const handle = await open(volume.rawPath, 'r');
  try {
    const bytes = new Uint8Array(volume.volumeLength);
    await handle.read(bytes, 0, bytes.length, RAW_VOLUME_OFFSET);
    return bytes;
  } finally {
    await handle.close();
  }
}

/** The client blocks holding anything but zeros (a full image backup writes only those). */
function usedBlocks(volume: Uint8Array): number[] {
  const blocks: number[] = [];
  for (let block = 0; block * CLIENT_BLOCK < volume.length; block++) {
    if (volume.subarray(block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK).some((byte) => byte !== 0)) blocks.push(block);
  }
  return blocks;
}

describe('README: a .vhdz block record of an unknown mode', () => {
  it('reads of it answer EIO through the mount (logged with file and block), materialize exits 1 with one line', async () => {
    const disk = fixtureDisk(fixtures, 'bios-mbr');
    const root = join(work, 'root');
    const client = join(root, disk.client);
    // The companion (System Reserved) as RAW, C: as a full VHDZ with the same side files.
    await mkdir(client, { recursive: true });
    for (const volume of disk.volumes) {
      if (volume !== disk.anchor) await runOk('cp', ['-a', '--sparse=always', volume.backupDir, join(client, basename(volume.backupDir))]);
    }
    const folder = join(client, basename(disk.anchor.backupDir));
    await mkdir(folder, { recursive: true });
    const volume = await readVolume(disk.anchor);
    const image = writeUrbackupImage(volume, usedBlocks(volume), { random: seededRandom(20), compressed: { codec: 'zstd' } });
    const vhdz = join(folder, `Image_C_${disk.anchor.timestamp}.vhdz`);
    await writeFile(vhdz, image.bytes);
    await copyFile(`${disk.anchor.rawPath}.mbr`, `${vhdz}.mbr`);
    await writeFile(`${vhdz}.sync`, '');

    // The record the index names for a block in the middle of the VHD (index: i64 LE per block
    // at the offset the header gives at 29).
    const bytes = Buffer.from(image.bytes);
    const indexOffset = Number(bytes.readBigInt64LE(29));
    const logicalSize = Number(bytes.readBigInt64LE(37)); // the VHD's size, at 37 in the header
    const block = Math.floor(Math.ceil(logicalSize / COMPRESSED_BLOCK) / 2);
    const record = Number(bytes.readBigInt64LE(indexOffset + block * 8));
    expect(record).toBeGreaterThan(0);
    expect(image.records?.some(([written, at]) => written === block && at === record)).toBe(true);
    expect(bytes.readUInt32LE(record + 4)).toBe(2); // zstd, as written

    const expected = join(work, 'expected.raw');
    await assembleExpectedDisk(disk, expected);
    const truth = await readFile(expected);

    const mountpoint = await tempMountpoint('synthvhd-readme-vhdz-');
    const mounted = await startMount(root, mountpoint.path);
    try {
      const served = join(mountpoint.path, disk.client, basename(folder), `Image_C_${disk.anchor.timestamp}.disk.vhd`);
      // The mount composes an image backup's disk in the background (its sector bitmaps).
      for (const deadline = performance.now() + 60_000; ; ) {
        if (await stat(served).then(() => true, () => false)) break;
        if (performance.now() > deadline) throw new Error(`${served} never appeared\n${mounted.stderr()}`);
        await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
      }
      // Damage the record after the disk was composed, as bit rot does: in place, the file's
      // size and times unchanged, so the mount has no reason to compose the disk again.
      const info = await stat(vhdz);
      const handle = await open(vhdz, 'r+');
      const mode = Buffer.alloc(4);
      mode.writeUInt32LE(7);
      await handle.write(mode, 0, 4, record + 4);
      await handle.close();
      await utimes(vhdz, info.atime, info.mtime);

      // Every 512 KiB of the disk (a fixed VHD: the disk, then its footer): the truth, or EIO.
      const failed: number[] = [];
      const disk512 = await open(served, 'r');
      try {
        const piece = Buffer.alloc(VHD_BLOCK);
        // Through the page cache a read that meets the failing pages returns what came before
        // them (a short read); reading on from there must then fail.
        const readAt = async (position: number, length: number): Promise<number | 'EIO'> => {
          try {
            return (await disk512.read(piece, 0, length, position)).bytesRead;
          } catch (error) {
            if ((error as NodeJS.ErrnoException).code !== 'EIO') throw error;
            return 'EIO';
          }
        };
        for (let position = 0; position < truth.length; position += VHD_BLOCK) {
          const length = Math.min(VHD_BLOCK, truth.length - position);
          const got = await readAt(position, length);
          if (got === 'EIO') {
            failed.push(position);
            continue;
          }
          expect(piece.subarray(0, got).equals(truth.subarray(position, position + got)), `disk bytes at ${position}`).toBe(true);
          if (got < length) {
            expect(await readAt(position + got, length - got), `the read on from ${position + got}`).toBe('EIO');
            failed.push(position);
          }
        }
      } finally {
        await disk512.close();
      }
      // One 2 MiB record holds parts of at most five 512 KiB VHD blocks: that much fails, no more.
      expect(failed.length).toBeGreaterThan(0);
      expect(failed.length).toBeLessThanOrEqual(5);
      const logged = mounted.stderr().split('\n').filter((line) => line.includes('cannot be decoded'));
      expect(logged).toHaveLength(1); // once, however many reads failed
      expect(logged[0]).toContain(`${vhdz}: the compressed block at offset ${record} cannot be decoded (unknown mode 7 `);
      // The record held sector bitmaps too (a 2 MiB record holds those of about four 512 KiB VHD
      // blocks): the block whose bitmap cannot be read is named, once.
      const bitmapLines = mounted.stderr().split('\n').filter((line) => line.includes('its sector bitmap at'));
      expect(bitmapLines.length).toBeGreaterThan(0);
      expect(bitmapLines[0]).toMatch(new RegExp(`^synthvhd: .*${vhdz.replace(/[.]/g, '\\.')}: VHD block \\d+: its sector bitmap at \\d+ cannot be read; reads of it answer EIO$`));
      expect(new Set(bitmapLines).size).toBe(bitmapLines.length);
    } finally {
      await mounted.stop();
      await mountpoint.cleanup();
    }

    const output = join(work, 'materialized.vhdx');
    const result = await synthvhd(['materialize', folder, '-o', output]);
    expect(result.code).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(vhdz);
    expect(lines[0]).toMatch(/mode 7/);
    await expect(stat(output)).rejects.toThrow();
  });
});
