// SPDX-License-Identifier: MIT
/**
 * urBackup's image formats served end to end (issue #15): the fixture backups' RAW C: volumes
 * are rewritten as urBackup writes them (fixtures/urbackup-images.ts) into a separate backup
 * root, with their `.mbr` side files copied under the image's name: a full VHDZ for run 1 and a
 * differencing VHDZ child of it for run 2; then a full VHDX for run 1 and a VHDXZ child of it
 * for run 2. `ls` serves them, `materialize` writes disks that qemu-img and libvhdi find
 * identical to the truth disk, and the mount serves the same disks.
 * The fixture backup tree itself is only read.
 */
import { copyFile, cp, mkdir, mkdtemp, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk, FixtureVolume } from '../fixtures/build-fixtures.js';
import { seededRandom, writeUrbackupImage, writeUrbackupVhdxImage } from '../fixtures/urbackup-images.js';
import { withVhdiMount } from './helpers/blocklist.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { startMount, tempMountpoint } from './helpers/fuse-mount.js';
import { runOk, synthvhd } from './helpers/run.js';
import { vhdxPresentRanges } from './helpers/vhdx-present.js';

const RAW_VOLUME_OFFSET = 524288;
const CLIENT_BLOCK = 4096;

let work: string;
let root: string;

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

/** The 4 KiB blocks that differ from `base` (all non-zero ones without a base). */
function blocksToWrite(volume: Uint8Array, base?: Uint8Array): number[] {
  const blocks: number[] = [];
  for (let block = 0; block * CLIENT_BLOCK < volume.length; block++) {
    const piece = volume.subarray(block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const other = base?.subarray(block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const same = other === undefined ? piece.every((byte) => byte === 0) : piece.every((byte, index) => byte === other[index]);
    if (!same) blocks.push(block);
  }
  return blocks;
}

const DIFF_CHUNK = 512 * 1024;
/** Each test writes, materializes, compares and mounts several 256 MiB disks: minutes on a busy machine. */
const E2E_TIMEOUT_MS = 600_000;

/**
 * The disk ranges of the 512 KiB chunks of `volume` (chunk i: volume bytes [i·512 KiB, +512 KiB))
 * whose bytes differ between two expected disks, compared here byte by byte; everything outside
 * the volume must be the same in both (else the expectation would be incomplete).
 */
async function changedChunkRanges(olderDisk: string, newerDisk: string, volume: FixtureVolume): Promise<[number, number][]> {
  const a = await open(olderDisk, 'r');
  const b = await open(newerDisk, 'r');
  try {
    const size = (await a.stat()).size;
    expect((await b.stat()).size).toBe(size);
    const x = Buffer.alloc(DIFF_CHUNK);
    const y = Buffer.alloc(DIFF_CHUNK);
    const differs = async (position: number, length: number): Promise<boolean> => {
      await a.read(x, 0, length, position);
      await b.read(y, 0, length, position);
      return !x.subarray(0, length).equals(y.subarray(0, length));
    };
    const volumeEnd = volume.partitionOffset + volume.volumeLength;
    for (const [start, end] of [[0, volume.partitionOffset], [volumeEnd, size]] as const) {
      for (let position = start; position < end; position += DIFF_CHUNK) {
        expect(await differs(position, Math.min(DIFF_CHUNK, end - position)), `the disks differ at ${position}, outside the volume`).toBe(false);
      }
    }
    const ranges: [number, number][] = [];
    for (let offset = 0; offset < volume.volumeLength; offset += DIFF_CHUNK) {
      const length = Math.min(DIFF_CHUNK, volume.volumeLength - offset);
      if (!(await differs(volume.partitionOffset + offset, length))) continue;
      const start = volume.partitionOffset + offset;
      const last = ranges.at(-1);
      if (last !== undefined && last[1] === start) last[1] = start + length;
      else ranges.push([start, start + length]);
    }
    return ranges;
  } finally {
    await a.close();
    await b.close();
  }
}

/** Copies every volume folder of `disk` into `into` (the test root), without the anchor's image. */
async function copyDisk(disk: FixtureDisk, into = root): Promise<Map<string, string>> {
  const folders = new Map<string, string>();
  for (const volume of disk.volumes) {
    const target = join(into, disk.client, basename(volume.backupDir));
    await mkdir(target, { recursive: true });
    if (volume.letter !== disk.anchor.letter) {
      await cp(volume.backupDir, target, { recursive: true });
    } else {
      for (const name of await readdir(volume.backupDir)) {
        if (!name.endsWith('.raw') && !name.includes('.raw.')) await copyFile(join(volume.backupDir, name), join(target, name));
      }
    }
    folders.set(volume.letter, target);
  }
  return folders;
}

function imageName(volume: FixtureVolume, extension: string): string {
  return `Image_${volume.letter}_${volume.timestamp}.${extension}`;
}

async function placeImage(volume: FixtureVolume, folder: string, extension: string, bytes: Uint8Array): Promise<string> {
  const path = join(folder, imageName(volume, extension));
  await writeFile(path, bytes);
  await copyFile(`${volume.rawPath}.mbr`, `${path}.mbr`);
  // urBackup hashes the volume the same way whatever the image format (SHA-256 per 512 KiB).
  await copyFile(`${volume.rawPath}.hash`, `${path}.hash`).catch(() => undefined);
  await writeFile(`${path}.sync`, '');
  return path;
}

async function expectSameDisk(format: 'vhdx' | 'vpc', image: string, disk: FixtureDisk): Promise<void> {
  const expected = join(work, `${disk.name}.expected.raw`);
  await assembleExpectedDisk(disk, expected);
  await runOk('qemu-img', ['compare', '-q', '-f', format, '-F', 'raw', image, expected]);
}

/**
 * Runs 1 and 2 of the UEFI fixture disk copied into `into` (a week apart: neither is a
 * companion of the other), their C: folders and volume bytes; the caller places the images.
 */
async function twoRuns(into: string): Promise<{ run1: FixtureDisk; run2: FixtureDisk; folder1: string; folder2: string; volume1: Uint8Array; volume2: Uint8Array }> {
  const fixtures = inject('fixtures');
  const run1 = fixtureDisk(fixtures, 'uefi-gpt-run1');
  const run2 = fixtureDisk(fixtures, 'uefi-gpt-run2');
  const folder1 = (await copyDisk(run1, into)).get(run1.anchor.letter) ?? '';
  const folder2 = (await copyDisk(run2, into)).get(run2.anchor.letter) ?? '';
  return { run1, run2, folder1, folder2, volume1: await readVolume(run1.anchor), volume2: await readVolume(run2.anchor) };
}

/**
 * Waits until `path` exists: the mount composes the disk of an image backup in the background
 * (reading its sector bitmaps) and lists its files once ready; a lookup never waits for it.
 */
async function waitForPath(path: string, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      await stat(path);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || performance.now() > deadline) throw error;
    }
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
  }
}

/**
 * Drops the page cache of `path` (posix_fadvise DONTNEED through dd's iflag=nocache, count=0:
 * the whole file) and proves it with fincore.
 */
async function dropPageCache(path: string): Promise<void> {
  await runOk('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
  const resident = await runOk('fincore', ['--bytes', '--noheadings', '--output', 'RES', path]);
  expect(Number(resident.stdout.trim()), `${path} still has pages in the page cache`).toBe(0);
}

/** libvhdi, a second reader, finds `image` (a file we wrote) identical to the truth disk. */
async function expectSameDiskLibvhdi(image: string, disk: FixtureDisk): Promise<void> {
  const expected = join(work, `${disk.name}.expected.raw`);
  await assembleExpectedDisk(disk, expected);
  await withVhdiMount(image, async (rawDisk) => {
    await runOk('cmp', [rawDisk, expected]);
  });
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-urbimages-e2e-'));
  root = join(work, 'root');
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('VHDZ backups that cannot be served', () => {
  it('unfinished, truncated, orphaned: one clear line each in ls and doctor, materialize writes nothing', async () => {
    const fixtures = inject('fixtures');
    const run1 = fixtureDisk(fixtures, 'uefi-gpt-run1');
    const bad = join(work, 'bad-root');
    const random = seededRandom(99);
    const volume = new Uint8Array(8 * 1024 * 1024);
    volume.fill(0x42, 0, 65536);
    const cases: [string, Uint8Array, RegExp][] = [];
    const unfinished = writeUrbackupImage(volume, [0, 1, 2], { random, compressed: { codec: 'zstd' }, unfinished: true });
    cases.push(['260601-0101', unfinished.bytes, /never finished/]);
    const full = writeUrbackupImage(volume, [0, 1, 2], { random, compressed: { codec: 'zstd' } });
    cases.push(['260601-0102', full.bytes.subarray(0, full.bytes.length - 16), /index at \d+ .* not inside/]);
    const orphan = writeUrbackupImage(volume, [3], {
      random,
      compressed: { codec: 'zlib' },
      parent: { path: join(bad, run1.client, '260601-0100_Image_C', 'Image_C_260601-0100.vhdz'), uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize },
    });
    cases.push(['260601-0103', orphan.bytes, /parent not found/]);
    for (const [timestamp, bytes] of cases) {
      const folder = join(bad, run1.client, `${timestamp}_Image_C`);
      await mkdir(folder, { recursive: true });
      const path = join(folder, `Image_C_${timestamp}.vhdz`);
      await writeFile(path, bytes);
      await copyFile(`${run1.anchor.rawPath}.mbr`, `${path}.mbr`);
      await writeFile(`${path}.sync`, '');
    }
    const ls = await synthvhd(['ls', '--json', bad]);
    const doctor = await synthvhd(['doctor', bad]);
    for (const [timestamp, , reason] of cases) {
      const name = `Image_C_${timestamp}.vhdz`;
      expect(ls.stdout + ls.stderr).toMatch(new RegExp(`${name}[^\\n]*${reason.source}`));
      const lines = doctor.stdout.split('\n').filter((line) => line.includes(timestamp));
      expect(lines.length, doctor.stdout).toBeGreaterThan(0);
      expect(lines.join('\n')).toMatch(reason);
      const out = join(work, `${timestamp}.vhdx`);
      const materialized = await synthvhd(['materialize', join(bad, run1.client, `${timestamp}_Image_C`), '-o', out]);
      expect(materialized.code).toBe(1);
      expect(materialized.stderr.trim().split('\n')).toHaveLength(1);
      expect(materialized.stderr).toMatch(reason);
      await expect(open(out, 'r')).rejects.toThrow();
    }
  });
});

describe('VHDZ backups through ls, materialize and the mount', () => {
  it('a full VHDZ (run 1) and a differencing VHDZ child (run 2) read as the truth disks', async () => {
    const fixtures = inject('fixtures');
    const run1 = fixtureDisk(fixtures, 'uefi-gpt-run1');
    const run2 = fixtures.disks.find((disk) => disk.name === 'uefi-gpt-run2');
    expect(run2).toBeDefined();
    const random = seededRandom(12);
    const folders1 = await copyDisk(run1);
    const volume1 = await readVolume(run1.anchor);
    const full = writeUrbackupImage(volume1, blocksToWrite(volume1), { random, compressed: { codec: 'zstd', shuffle: true } });
    const fullPath = await placeImage(run1.anchor, folders1.get(run1.anchor.letter) ?? '', 'vhdz', full.bytes);

    const ls = JSON.parse((await synthvhd(['ls', '--json', root])).stdout) as unknown;
    expect(JSON.stringify(ls)).toContain(imageName(run1.anchor, 'disk.vhdx'));

    const out1 = join(work, 'run1.vhdx');
    const materialized = await synthvhd(['materialize', '--json', folders1.get(run1.anchor.letter) ?? '', '-o', out1]);
    expect(materialized.code, materialized.stderr).toBe(0);
    expect(materialized.stdout).toMatch(/urBackup-compressed: decoded and copied/);
    await expectSameDisk('vhdx', out1, run1);
    await expectSameDiskLibvhdi(out1, run1);

    // urBackup's .vhdz.hash matches the volume read through the VHDZ.
    const verified = await synthvhd(['verify', folders1.get(run1.anchor.letter) ?? '']);
    expect(verified.code, verified.stderr).toBe(0);

    // The blocklist of the VHDZ backup's disk is the list of the materialized disk.
    const cache = join(work, 'lists');
    const listed = await synthvhd(['blocklist', 'create', '--cache-dir', cache, folders1.get(run1.anchor.letter) ?? '']);
    expect(listed.code, listed.stderr).toBe(0);
    const own = await synthvhd(['blocklist', 'create', out1]);
    expect(own.code, own.stderr).toBe(0);
    const cached = (await readdir(join(cache, run1.client, basename(run1.anchor.backupDir)))).find((name) => name.endsWith('.blocklist.bin'));
    expect(cached).toBeDefined();
    const fromBackup = await readFile(join(cache, run1.client, basename(run1.anchor.backupDir), cached ?? ''));
    expect(fromBackup.equals(await readFile(`${out1}.blocklist.bin`))).toBe(true);

    if (run2 !== undefined) {
      const folders2 = await copyDisk(run2);
      const volume2 = await readVolume(run2.anchor);
      const child = writeUrbackupImage(volume2, blocksToWrite(volume2, volume1), {
        random,
        compressed: { codec: 'zlib' },
        parent: { path: fullPath, uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize },
      });
      await placeImage(run2.anchor, folders2.get(run2.anchor.letter) ?? '', 'vhdz', child.bytes);
      const out2 = join(work, 'run2.vhd');
      const result = await synthvhd(['materialize', folders2.get(run2.anchor.letter) ?? '', '-o', out2]);
      expect(result.code, result.stderr).toBe(0);
      await expectSameDisk('vpc', out2, run2);

      // The backup-run diff comes from the child's own BAT and bitmaps. Minimal: it holds exactly
      // the 512 KiB chunks of C: that differ between the two truth disks (read here, byte by
      // byte), read by hand from its BAT and sector bitmaps (helpers/vhdx-present.ts): a diff
      // that marked every chunk changed fails here. Merged onto run 1's disk it gives run 2's disk.
      const diffPath = join(work, 'run2_diff.vhdx');
      const diff = await synthvhd(['diff', '--json', '--parent', out1, folders1.get(run1.anchor.letter) ?? '', folders2.get(run2.anchor.letter) ?? '', '-o', diffPath]);
      expect(diff.code, diff.stderr).toBe(0);
      expect(diff.stdout).toMatch(/BATs and sector bitmaps/);
      const expected1 = join(work, `${run1.name}.expected.raw`);
      const expected2 = join(work, `${run2.name}.expected.raw`);
      await assembleExpectedDisk(run1, expected1);
      await assembleExpectedDisk(run2, expected2);
      const truthRanges = await changedChunkRanges(expected1, expected2, run2.anchor);
      expect(truthRanges.length).toBeGreaterThan(0);
      const present = await vhdxPresentRanges(diffPath);
      expect(present.hasParent).toBe(true);
      expect(present.ranges).toEqual(truthRanges);
      const changedBytes = truthRanges.reduce((sum, [start, end]) => sum + end - start, 0);
      expect(changedBytes).toBeLessThan(run2.anchor.volumeLength / 4);
      const merged = join(work, 'run2.merged.vhdx');
      const merge = await synthvhd(['merge', diffPath, '-o', merged]);
      expect(merge.code, merge.stderr).toBe(0);
      await expectSameDisk('vhdx', merged, run2);
    }

    // The mount serves the same disk from the VHDZ.
    const mountpoint = await tempMountpoint();
    const mount = await startMount(root, mountpoint.path);
    try {
      const served = join(mountpoint.path, run1.client, basename(run1.anchor.backupDir), `Image_${run1.anchor.letter}_${run1.anchor.timestamp}.disk.vhdx`);
      await waitForPath(served);
      await expectSameDisk('vhdx', served, run1);
    } finally {
      await mount.stop();
      await mountpoint.cleanup();
    }
  }, E2E_TIMEOUT_MS);
});

describe("urBackup's VHDX and VHDXZ backups through materialize and the mount", () => {
  it('a full VHDX (run 1) and a VHDXZ child of it (run 2) are served and materialized as the truth disks', async () => {
    const vhdxRoot = join(work, 'vhdx-root');
    const { run1, run2, folder1, folder2, volume1, volume2 } = await twoRuns(vhdxRoot);
    const random = seededRandom(21);
    const full = writeUrbackupVhdxImage(volume1, blocksToWrite(volume1), { random });
    const fullPath = await placeImage(run1.anchor, folder1, 'vhdx', full.bytes);
    // urBackup's VHDX child names its parent by the parent's absolute server path.
    const child = writeUrbackupVhdxImage(volume2, blocksToWrite(volume2, volume1), {
      random,
      compressed: { codec: 'zstd', shuffle: true },
      parent: { path: fullPath, dataWriteGuid: full.dataWriteGuid },
    });
    await placeImage(run2.anchor, folder2, 'vhdxz', child.bytes);

    const out1 = join(work, 'vhdx-run1.vhdx');
    const materialized1 = await synthvhd(['materialize', folder1, '-o', out1]);
    expect(materialized1.code, materialized1.stderr).toBe(0);
    await expectSameDisk('vhdx', out1, run1);
    await expectSameDiskLibvhdi(out1, run1);
    const out2 = join(work, 'vhdxz-run2.vhd');
    const materialized2 = await synthvhd(['materialize', folder2, '-o', out2]);
    expect(materialized2.code, materialized2.stderr).toBe(0);
    await expectSameDisk('vpc', out2, run2);
    await expectSameDiskLibvhdi(out2, run2);

    const mountpoint = await tempMountpoint();
    const mount = await startMount(vhdxRoot, mountpoint.path);
    try {
      for (const disk of [run1, run2]) {
        const folder = join(mountpoint.path, disk.client, basename(disk.anchor.backupDir));
        const name = `Image_${disk.anchor.letter}_${disk.anchor.timestamp}`;
        await waitForPath(join(folder, `${name}.disk.vhdx`));
        await expectSameDisk('vhdx', join(folder, `${name}.disk.vhdx`), disk);
        await expectSameDisk('vpc', join(folder, `${name}.disk.vhd`), disk);
      }
    } finally {
      await mount.stop();
      await mountpoint.cleanup();
    }
  }, E2E_TIMEOUT_MS);
});

describe('a differencing image whose parent changes under the mount', () => {
  it('stops serving the child (and its open handles answer EIO) once the parent file is replaced', async () => {
    // Nothing but the chain ties run 2's disk to run 1's file (the runs are a week apart).
    const chainRoot = join(work, 'chain-root');
    const { run1, run2, folder1, folder2, volume1, volume2 } = await twoRuns(chainRoot);
    const random = seededRandom(33);
    const full = writeUrbackupImage(volume1, blocksToWrite(volume1), { random, compressed: { codec: 'zstd' } });
    const fullPath = await placeImage(run1.anchor, folder1, 'vhdz', full.bytes);
    const child = writeUrbackupImage(volume2, blocksToWrite(volume2, volume1), {
      random,
      compressed: { codec: 'zlib' },
      parent: { path: fullPath, uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize },
    });
    await placeImage(run2.anchor, folder2, 'vhdz', child.bytes);

    const mountpoint = await tempMountpoint();
    // The background work waits for `gate` (the SYNTHVHD_TEST_HOLD_BACKGROUND test hook,
    // src/util/test-hold.ts): the first lookup is answered while composing is surely pending.
    const gate = join(work, 'chain-gate');
    const mount = await startMount(chainRoot, mountpoint.path, [], 30_000, { SYNTHVHD_TEST_HOLD_BACKGROUND: gate });
    try {
      const served = join(mountpoint.path, run2.client, basename(run2.anchor.backupDir), `Image_${run2.anchor.letter}_${run2.anchor.timestamp}.disk.vhdx`);
      // The first lookup answers at once (no file yet) and starts composing in the background.
      await expect(stat(served)).rejects.toMatchObject({ code: 'ENOENT' });
      await writeFile(gate, '');
      await waitForPath(served);
      expect(mount.stderr() + mount.stdout()).toMatch(/composing its disk in the background/);
      await expectSameDisk('vhdx', served, run2);
      // qemu-img just read the disk through the page cache: drop the file's pages (and check it
      // with fincore), so the read below must reach the mount.
      await dropPageCache(served);
      const handle = await open(served, 'r');
      try {
        // Another full backup takes the parent's name (a new file, renamed over it): its
        // Unique Id is not the one the child names.
        const other = writeUrbackupImage(volume1, blocksToWrite(volume1), { random, compressed: { codec: 'zstd' } });
        await writeFile(`${fullPath}.new`, other.bytes);
        await rename(`${fullPath}.new`, fullPath);
        // Composed again (in the background), the child is refused: its parent is not the one it names.
        let refused = false;
        for (let attempt = 0; attempt < 150 && !refused; attempt++) {
          await new Promise((resolvePromise) => setTimeout(resolvePromise, 200));
          // Sources are looked at again when a client looks (at most once a second).
          await stat(served).catch(() => undefined);
          refused = /wrong parent: .*Unique Id/.test(mount.stderr() + mount.stdout());
        }
        expect(refused, 'the child disk was not composed again after its parent was replaced').toBe(true);
        await expect(stat(served)).rejects.toMatchObject({ code: 'ENOENT' });
        // Not in the page cache (dropped above, nothing read it since): the daemon answers.
        const buffer = Buffer.alloc(4096);
        await expect(handle.read(buffer, 0, 4096, 64 * 1024 * 1024 + 12_288)).rejects.toMatchObject({ code: 'EIO' });
      } finally {
        await handle.close();
      }
    } finally {
      await mount.stop();
      await mountpoint.cleanup();
    }
  }, E2E_TIMEOUT_MS);
});
