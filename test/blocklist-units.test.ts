// SPDX-License-Identifier: MIT
/**
 * The pure pieces under the blocklist commands: bitmap runs in both bit orders, hole punching,
 * list arithmetic with a short last block, and a raw image whose size is not a multiple of 2 MiB
 * (VhdBlockBackup hashes the last block over its remainder only).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blockRanges, changedBlocks, zeroBlockHash } from '../src/blocklist/blocklist.js';
import { BlocklistPrecomputer } from '../src/blocklist/cache.js';
import { dataBlockFlags, hashDisk } from '../src/blocklist/hash.js';
import type { DiskImage } from '../src/disk/disk-image.js';
import { makeLayout, type Extent } from '../src/extents/extent.js';
import type { VolumeBackup } from '../src/urbackup/backup-tree.js';
import { bitRuns } from '../src/util/bit-runs.js';
import { punchHoles } from '../src/extents/holes.js';
import { LayoutBuilder } from '../src/extents/layout-builder.js';
import { independentList } from './helpers/blocklist.js';
import { synthvhd } from './helpers/run.js';
import { processIo } from './helpers/io-witness.js';

const MiB = 1024 * 1024;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-blocklist-units-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('bitmap runs', () => {
  it('reads VHD bitmaps MSB-first and VHDX bitmaps LSB-first', () => {
    const bits = new Uint8Array([0b1100_0001, 0xff, 0x00]);
    expect(bitRuns(bits, 24, 'msb')).toEqual([
      { present: true, start: 0, count: 2 },
      { present: false, start: 2, count: 5 },
      { present: true, start: 7, count: 9 },
      { present: false, start: 16, count: 8 },
    ]);
    expect(bitRuns(bits, 24, 'lsb')).toEqual([
      { present: true, start: 0, count: 1 },
      { present: false, start: 1, count: 5 },
      { present: true, start: 6, count: 10 },
      { present: false, start: 16, count: 8 },
    ]);
    expect(bitRuns(new Uint8Array([0xff]), 3, 'lsb')).toEqual([{ present: true, start: 0, count: 3 }]);
  });
});

describe('hole punching', () => {
  it('turns the holes of one file into zero extents and keeps everything else', () => {
    const layout = new LayoutBuilder().bytes(new Uint8Array(10), 'B').file('/a', 100, 50, 'A').file('/b', 0, 20, 'B').build();
    const punched = punchHoles(layout, '/a', [[90, 20], [130, 5], [149, 100]]);
    expect(punched.extents.map((extent) => [extent.kind, extent.start, extent.length, extent.kind === 'file' ? extent.offset : -1])).toEqual([
      ['bytes', 0, 10, -1],
      ['file', 10, 10, 100],
      ['zero', 20, 20, -1],
      ['file', 40, 5, 130],
      ['zero', 45, 14, -1],
      ['file', 59, 1, 149],
      ['file', 60, 20, 0],
    ]);
    expect(punchHoles(layout, '/a', []).extents.filter((extent) => extent.kind === 'file')).toHaveLength(1);
  });
});

describe('list arithmetic', () => {
  it('compares entries, merges changed blocks into ranges, clips the short last block', () => {
    const a = new Uint8Array(16 * 5);
    const b = Uint8Array.from(a);
    for (const index of [1, 2, 4]) b[index * 16 + 15] = 1;
    expect(changedBlocks(a, b)).toEqual([1, 2, 4]);
    const size = 4 * 2 * MiB + 4096;
    expect(blockRanges([1, 2, 4], size)).toEqual([
      { start: 2 * MiB, length: 4 * MiB },
      { start: 8 * MiB, length: 4096 },
    ]);
    expect(Buffer.from(zeroBlockHash(4096))).toEqual(createHash('sha1').update(Buffer.alloc(4096)).digest().subarray(0, 16));
  });

  it('marks the 2 MiB blocks any non-zero extent touches', () => {
    const layout = new LayoutBuilder().zero(2 * MiB + 5, 'zeros: Z').bytes(new Uint8Array(2 * MiB), 'B').zero(5 * MiB, 'zeros: Z').file('/x', 0, 1, 'X').build();
    expect([...dataBlockFlags(layout)]).toEqual([0, 1, 1, 0, 1]);
  });

  it('a raw image of 5 MiB + 1536 bytes with a hole: the last block is hashed over its remainder', async () => {
    const image = join(work, 'odd.img');
    await writeFile(image, '');
    const handle = await open(image, 'r+');
    try {
      await handle.write(randomBytes(MiB), 0, MiB, 0);
      await handle.write(randomBytes(1536), 0, 1536, 5 * MiB);
    } finally {
      await handle.close();
    }
    const result = await synthvhd(['blocklist', 'create', image]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const list = await readFile(`${image}.blocklist.bin`);
    expect(list).toHaveLength(3 * 16);
    expect(list).toEqual(await independentList(image));
  });
});

describe('stopping a background list (the mount unmounting while it precomputes)', () => {
  /** A 2 GiB disk of data: 32 MiB of random bytes repeated, read from the page cache. */
  async function bigDisk(directory = work): Promise<DiskImage> {
    await mkdir(directory, { recursive: true });
    const source = join(directory, 'pattern.bin');
    await writeFile(source, randomBytes(32 * MiB));
    const extents: Extent[] = Array.from({ length: 64 }, (_, index) => ({ kind: 'file', start: index * 32 * MiB, length: 32 * MiB, path: source, offset: 0, what: 'pattern' }));
    return { layout: makeLayout(extents, 64 * 32 * MiB), sectorSize: 512, identity: new Uint8Array(32), mtimeMs: 0 };
  }

  // Witness: the kernel's count of what this test process read (vitest runs each file in a
  // process of its own), not the hasher's own progress or a clock.
  it('hashDisk rejects once its signal is aborted, after the chunks in flight', async () => {
    const disk = await bigDisk();
    const controller = new AbortController();
    const before = await processIo(process.pid);
    // Aborted as soon as the first 16 MiB chunk is hashed: at most the chunks in flight follow.
    const hashing = hashDisk(disk.layout, { workers: 1, signal: controller.signal, onProgress: (done) => { if (done > 0) controller.abort(); } });
    await expect(hashing).rejects.toThrow(/stopped before it was complete/);
    expect((await processIo(process.pid)).rchar - before.rchar).toBeLessThan(disk.layout.size / 8);
  });

  it('BlocklistPrecomputer.close() stops the list being computed and writes nothing', async () => {
    // Its source inside the backup root: the precomputer reads nothing from outside it.
    const disk = await bigDisk(join(work, 'root'));
    const cache = join(work, 'stopped-cache');
    const folder = join(work, 'root', 'pc1', '241101-0100_Image_C');
    const anchor: VolumeBackup = { root: join(work, 'root'), client: 'pc1', folder, letter: 'C', timestamp: '241101-0100', rawPath: join(folder, 'Image_C_241101-0100.raw'), mbrPath: join(folder, 'Image_C_241101-0100.raw.mbr'), complete: true };
    const events: string[] = [];
    const precomputer = new BlocklistPrecomputer(cache, { onReady: () => events.push('ready'), onError: (_request, error) => events.push(error.message) });
    const before = await processIo(process.pid);
    precomputer.request(anchor, disk);
    // Closed once it has read its first 16 MiB (it is computing), then it reads no further.
    while ((await processIo(process.pid)).rchar - before.rchar < 16 * MiB) await new Promise((resolvePromise) => setTimeout(resolvePromise, 5));
    await precomputer.close();
    expect((await processIo(process.pid)).rchar - before.rchar).toBeLessThan(disk.layout.size / 4);
    expect(events).toEqual([]);
    expect(await readdir(join(cache, 'pc1', '241101-0100_Image_C'))).toEqual([]);
  });
});
