// SPDX-License-Identifier: MIT
/**
 * Issue 21: a VHD/VHDZ chain's disk is composed from headers and BATs; sector bitmaps are
 * applied when a block is read (src/extents/vhd-chain.ts; natively native/src/read_core.cc
 * ReadChain, whose own oracle test is in native/fuzz/unit_tests.cc).
 * - The resolver against a sector-by-sector oracle of urBackup's rule (VHDFile::Read): random
 *   chains of three files with partial bitmaps and a parent smaller than its child.
 * - Through a real mount: a full VHDZ of incompressible data appears while the daemon has read
 *   (the kernel's /proc/<pid>/io) a small part of the file, and its first reads, made before any
 *   sector bitmap of those blocks was decoded anywhere, are the volume's bytes.
 */
import { copyFile, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeRawBackup } from '../bench/lib/raw-backup.js';
import { seededRandom, writeUrbackupImage } from '../fixtures/urbackup-images.js';
import type { Layout } from '../src/extents/extent.js';
import { CHAIN_BAT_UNUSED, type VhdChain, type VhdChainLevel, resolveChainRange } from '../src/extents/vhd-chain.js';
import { processIo, synthvhdWitnessed } from './helpers/io-witness.js';
import { startMount, tempMountpoint } from './helpers/fuse-mount.js';
import { synthvhd } from './helpers/run.js';

const SECTOR = 512;
const MIB = 1024 * 1024;

interface MemoryLevel {
  readonly level: VhdChainLevel;
  readonly bytes: Uint8Array;
}

/** A VHD's bytes in memory: 1536 header bytes, then per allocated block a bitmap and its data. */
function memoryLevel(path: string, size: number, blockSize: number, random: () => number): MemoryLevel {
  const blocks = Math.ceil(size / blockSize);
  const bat = new Uint32Array(blocks).fill(CHAIN_BAT_UNUSED);
  const parts: Uint8Array[] = [new Uint8Array(1536)];
  let length = 1536;
  for (let block = 0; block < blocks; block++) {
    if (random() < 0.35) continue;
    bat[block] = length / SECTOR;
    const bitmap = new Uint8Array(SECTOR);
    for (let sector = 0; sector < blockSize / SECTOR; ) {
      const set = random() < 0.5;
      const run = 1 + Math.floor(random() * 9);
      for (let k = 0; k < run && sector < blockSize / SECTOR; k++, sector++) if (set) bitmap[sector >>> 3] = (bitmap[sector >>> 3] ?? 0) | (0x80 >> (sector & 7));
    }
    const data = Uint8Array.from({ length: blockSize }, () => 1 + Math.floor(random() * 255));
    parts.push(bitmap, data);
    length += SECTOR + blockSize;
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return { level: { path, size, bat, bitmapSize: SECTOR, compressed: undefined }, bytes };
}

/** urBackup's rule for one byte: the first file whose block is allocated and bit set; zeros past a file's size or when none. */
function oracleByte(levels: readonly MemoryLevel[], blockSize: number, position: number): number {
  for (const { level, bytes } of levels) {
    if (position >= level.size) return 0;
    const block = Math.floor(position / blockSize);
    const entry = level.bat[block] ?? CHAIN_BAT_UNUSED;
    if (entry === CHAIN_BAT_UNUSED) continue;
    const inBlock = position - block * blockSize;
    const sector = Math.floor(inBlock / SECTOR);
    const base = entry * SECTOR;
    if ((((bytes[base + (sector >>> 3)] ?? 0) >> (7 - (sector & 7))) & 1) === 1) return bytes[base + SECTOR + inBlock] ?? -1;
  }
  return 0;
}

/** The bytes of a resolved layout whose file extents name the in-memory levels. */
function readResolved(layout: Layout, byPath: ReadonlyMap<string, Uint8Array>): Uint8Array {
  const out = new Uint8Array(layout.size);
  for (const extent of layout.extents) {
    if (extent.kind === 'zero') continue;
    if (extent.kind !== 'file') throw new Error(`a ${extent.kind} extent in a resolved chain of plain files`);
    const bytes = byPath.get(extent.path);
    if (bytes === undefined) throw new Error(`no level ${extent.path}`);
    out.set(bytes.subarray(extent.offset, extent.offset + extent.length), extent.start);
  }
  return out;
}

describe('a VHD chain resolved when read', () => {
  it('gives urBackup\'s bytes for every range: partial bitmaps take the parent\'s sectors, a smaller parent reads zeros past its end', async () => {
    for (let seed = 1; seed <= 6; seed++) {
      const random = seededRandom(seed);
      const blockSize = 8 * 1024;
      const size = 24 * blockSize;
      const levels = [
        memoryLevel('/chain/child.vhd', size, blockSize, random),
        memoryLevel('/chain/middle.vhd', size, blockSize, random),
        memoryLevel('/chain/full.vhd', 17 * blockSize - 5 * SECTOR, blockSize, random),
      ];
      const chain: VhdChain = { levels: levels.map(({ level }) => level), size, blockSize };
      const byPath = new Map(levels.map(({ level, bytes }) => [level.path, bytes]));
      let bitmapReads = 0;
      const bitmapOf = (index: number, block: number): Promise<Uint8Array> => {
        bitmapReads++;
        const level = levels[index];
        if (level === undefined) throw new Error(`level ${index}`);
        const at = (level.level.bat[block] ?? 0) * SECTOR;
        return Promise.resolve(level.bytes.subarray(at, at + SECTOR));
      };
      const truth = Uint8Array.from({ length: size }, (_, position) => oracleByte(levels, blockSize, position));
      // Some partial bitmaps really send sectors down: the child's bytes and the parents' both appear.
      const fromChild = truth.filter((_, position) => oracleByte(levels.slice(0, 1), blockSize, position) !== 0).length;
      expect(fromChild).toBeGreaterThan(0);
      expect(fromChild).toBeLessThan(truth.filter((byte) => byte !== 0).length);
      for (let round = 0; round < 60; round++) {
        const start = round === 0 ? 0 : Math.floor(random() * size);
        const length = round === 0 ? size : Math.min(size - start, 1 + Math.floor(random() * 3 * blockSize));
        const resolved = await resolveChainRange(chain, start, length, bitmapOf);
        const got = readResolved(resolved, byPath);
        const want = truth.subarray(start, start + length);
        const differs = got.findIndex((byte, index) => byte !== want[index]);
        expect(differs, `seed ${seed}, range ${start} (+${length}): first difference`).toBe(-1);
      }
      // Only blocks some file allocates cost a bitmap read, and no more than one per file and block per range.
      expect(bitmapReads).toBeGreaterThan(0);
    }
  });
});

describe('a full VHDZ through the mount', () => {
  let work: string;
  const timestamp = '261201-0100';
  const volumeBytes = 48 * MIB;
  let volume: Uint8Array;
  let vhdzPath: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'synthvhd-lazy-'));
    // Incompressible data in every client block: the file is as large as the volume, so reading
    // it (or decoding its bitmaps) would show in the daemon's read counters.
    const random = seededRandom(21);
    volume = Uint8Array.from({ length: volumeBytes }, () => Math.floor(random() * 256));
    const used = Array.from({ length: volumeBytes / 4096 }, (_, block) => block);
    const image = writeUrbackupImage(volume, used, { random, compressed: { codec: 'zstd' } });
    const backup = await makeRawBackup(join(work, 'root'), 'client', timestamp, volumeBytes);
    await rm(backup.raw, { force: true });
    await rm(`${backup.raw}.sync`, { force: true });
    vhdzPath = join(backup.folder, `Image_C_${timestamp}.vhdz`);
    await writeFile(vhdzPath, image.bytes);
    await copyFile(`${backup.raw}.mbr`, `${vhdzPath}.mbr`);
    await rm(`${backup.raw}.mbr`, { force: true });
    await writeFile(`${vhdzPath}.sync`, '');
  }, 120_000);

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('appears after reading its headers and BAT only (kernel-counted), and its first reads are the volume', async () => {
    const fileSize = (await stat(vhdzPath)).size;
    expect(fileSize).toBeGreaterThan(volumeBytes);
    const mountpoint = await tempMountpoint();
    const mounted = await startMount(join(work, 'root'), mountpoint.path);
    try {
      const pid = mounted.child.pid;
      if (pid === undefined) throw new Error('no mount pid');
      const before = await processIo(pid);
      const served = join(mountpoint.path, 'client', `${timestamp}_Image_C`, `Image_C_${timestamp}.disk.vhd`);
      const started = Date.now();
      let size: number | undefined;
      while (size === undefined) {
        size = await stat(served).then(
          (info) => info.size,
          () => undefined,
        );
        if (size === undefined) await new Promise((resolvePromise) => setTimeout(resolvePromise, 20));
        if (Date.now() - started > 60_000) throw new Error(`${served} did not appear`);
      }
      const composed = await processIo(pid);
      // The headers, the index, the last container block (the footer), the one holding the BAT
      // and the first ones (synthetic MBR, boot sector): a few 2 MiB blocks, not the 48 MiB.
      expect(composed.rchar - before.rchar).toBeLessThan(12 * MIB);
      // The disk: the .raw.mbr's table puts the volume at 1 MiB.
      const handle = await open(served, 'r');
      try {
        for (const at of [volumeBytes - 64 * 1024, 20 * MIB + 12_345, 0]) {
          const piece = Buffer.alloc(64 * 1024);
          const { bytesRead } = await handle.read(piece, 0, piece.length, MIB + at);
          expect(bytesRead).toBe(piece.length);
          expect(piece.equals(volume.subarray(at, at + piece.length)), `volume bytes at ${at}`).toBe(true);
        }
      } finally {
        await handle.close();
      }
      // Reading three 64 KiB pieces decoded a few more blocks, still far from the whole file.
      expect((await processIo(pid)).rchar - before.rchar).toBeLessThan(24 * MIB);
      expect(mounted.stderr()).not.toMatch(/error|cannot/i);
    } finally {
      await mounted.stop();
      await mountpoint.cleanup();
    }
    // The source was only read.
    expect((await readFile(vhdzPath)).length).toBe(fileSize);
  }, 180_000);

  it('inspect --map --offset names the file, the VHD block and the record a byte of the chain comes from', async () => {
    // The composed disk puts the volume at 1 MiB (the .raw.mbr); the image's own disk at 512 KiB
    // (its synthetic MBR): volume byte v is image-disk byte v + 512 KiB, in VHD block of 512 KiB.
    const volumeByte = 20 * MIB + 777;
    const diskByte = MIB + volumeByte;
    const vhdBlock = Math.floor((volumeByte + 512 * 1024) / (512 * 1024));
    const result = await synthvhd(['inspect', '--map', join(work, 'root', 'client', `${timestamp}_Image_C`), '--offset', String(diskByte)]);
    expect(result.code, result.stderr).toBe(0);
    const line = result.stdout.split('\n').find((text) => text.startsWith('disk: '));
    expect(line).toContain(`disk: byte ${diskByte} is in [${diskByte - (diskByte % 512)}, ${diskByte - (diskByte % 512) + 512}) compressed:`);
    expect(line).toContain(`Image_C_${timestamp}.vhdz VHD block ${vhdBlock} (in VHD blocks)`);
    expect(line).toMatch(new RegExp(`@ block record \\d+ \\+ \\d+  \\(${vhdzPath.replace(/[.]/g, '\\.')}\\)$`));
  }, 60_000);
});

describe('the backups of one client, sharing their parents', () => {
  it('parses each chain file once for all the disks that use it: ls of 12 chained backups reads the full image\'s blocks once, not 12 times (kernel-counted)', async () => {
    const work = await mkdtemp(join(tmpdir(), 'synthvhd-shared-chain-'));
    try {
      // A full VHDZ of incompressible data (each of its 2 MiB blocks is about 2 MiB on disk) and
      // 11 incrementals, each rewriting 64 KiB far from the volume's start.
      const volumeBytes = 24 * MIB;
      const random = seededRandom(22);
      const volume = Uint8Array.from({ length: volumeBytes }, () => Math.floor(random() * 256));
      const root = join(work, 'root');
      const stamp = (hour: number): string => `261203-${String(hour).padStart(2, '0')}00`;
      const place = async (hour: number, bytes: Uint8Array): Promise<string> => {
        const backup = await makeRawBackup(root, 'client', stamp(hour), volumeBytes);
        const path = join(backup.folder, `Image_C_${stamp(hour)}.vhdz`);
        await writeFile(path, bytes);
        await copyFile(`${backup.raw}.mbr`, `${path}.mbr`);
        await rm(`${backup.raw}.mbr`);
        await rm(`${backup.raw}.sync`);
        await rm(backup.raw, { force: true });
        await writeFile(`${path}.sync`, '');
        return path;
      };
      let image = writeUrbackupImage(volume, Array.from({ length: volumeBytes / 4096 }, (_, block) => block), { random, compressed: { codec: 'zstd' } });
      let parentPath = await place(0, image.bytes);
      const fullSize = (await stat(parentPath)).size;
      for (let hour = 1; hour <= 11; hour++) {
        const first = 4096 + hour * 64;
        const changed = Array.from({ length: 16 }, (_, index) => first + index);
        for (const block of changed) volume.fill(hour, block * 4096, (block + 1) * 4096);
        const parent = { path: parentPath, uniqueId: image.uniqueId, timeStamp: image.timeStamp, size: image.diskSize };
        image = writeUrbackupImage(volume, changed, { random, compressed: { codec: 'zstd' }, parent });
        parentPath = await place(hour, image.bytes);
      }
      const listed = await synthvhdWitnessed(['ls', root]);
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stdout.match(/\.disk\.vhdx/g)).toHaveLength(12);
      expect(fullSize).toBeGreaterThan(volumeBytes);
      // Each of the 12 disks reads its first sectors (a block of the full image, about 2 MiB):
      // 25 MiB in all, measured. Parsing the full image (its first and last blocks) again for
      // each disk that uses it measured 45 MiB.
      expect(listed.io.rchar).toBeLessThan(34 * MIB);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }, 180_000);
});
