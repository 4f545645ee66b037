// SPDX-License-Identifier: MIT
/**
 * urBackup's VHD/VHDZ image backups (issue #15), read back against the truth: files written the
 * way urBackup writes them (fixtures/urbackup-images.ts), opened with their chains
 * (src/urbackup/images/), and every byte of the volume compared with the volume that was
 * backed up. qemu-img reads the plain VHD fixture as an independent check of the writer.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSynthvhdError } from '../src/errors/synthvhd-error.js';
import { readAt } from '../src/extents/read-at.js';
import { SourceFiles } from '../src/extents/source-files.js';
import { writeLayout } from '../src/materialize/write-layout.js';
import { findImageBackupFiles, isImageSideFile } from '../src/urbackup/images/image-backup-files.js';
import { readCompressedRecord } from '../src/extents/compressed-record.js';
import { REPO_ROOT, run } from './helpers/run.js';
import { DecodedBlocks } from '../src/extents/decoded-blocks.js';
import { ImageBytes } from '../src/urbackup/images/image-bytes.js';
import { ImageFile, type SourceOpener } from '../src/urbackup/images/image-file.js';
import { volumeLayout, volumeOffsetFromMbr } from '../src/urbackup/images/image-volume.js';
import { changedChunkFlags, changedSince, loadImageVolume } from '../src/urbackup/images/load-image-volume.js';
import { openImageDisk } from '../src/urbackup/images/open-image-backup.js';
import { parseUrbackupVhd, urbackupVhdParentCandidates } from '../src/urbackup/images/urbackup-vhd.js';
import { IMAGE_VOLUME_OFFSET, type WrittenImage, seededRandom, writeUrbackupImage, writeUrbackupVhdxImage } from '../fixtures/urbackup-images.js';

const MIB = 1024 * 1024;
const CLIENT_BLOCK = 4096;
const opener: SourceOpener = (path) => open(path, 'r');

let dir: string;
const random = seededRandom(15);

/** A volume of `size` bytes; the blocks urBackup "transfers" (used) hold data, the rest zeros. */
function makeVolume(size: number, usedShare: number): { volume: Uint8Array; used: number[] } {
  const volume = new Uint8Array(size);
  const used: number[] = [];
  for (let block = 0; block < size / CLIENT_BLOCK; block++) {
    // Runs of used and unused blocks, as a file system allocates them.
    const run = Math.floor(block / 37);
    if (seededRandom(run)() >= usedShare) continue;
    used.push(block);
    const start = block * CLIENT_BLOCK;
    // Half compressible text, half noise: the codecs have work to do.
    for (let at = start; at < start + CLIENT_BLOCK; at += 4) {
      const value = block % 2 === 0 ? (at * 2654435761) >>> 0 : Math.floor(random() * 0xffffffff);
      volume[at] = value & 0xff;
      volume[at + 1] = (value >>> 8) & 0xff;
      volume[at + 2] = block % 3 === 0 ? 0x41 : (value >>> 16) & 0xff;
      volume[at + 3] = 0x20;
    }
  }
  // A used block that happens to be all zeros: written, bit set, zeros.
  used.push(size / CLIENT_BLOCK - 1);
  used.sort((a, b) => a - b);
  return { volume, used: [...new Set(used)] };
}

async function place(folder: string, name: string, image: WrittenImage | Uint8Array): Promise<string> {
  const path = join(dir, 'client', folder, name);
  await mkdir(join(dir, 'client', folder), { recursive: true });
  await writeFile(path, image instanceof Uint8Array ? image : image.bytes);
  return path;
}

/** The volume as synthvhd reads it from `path` (and its parents). */
async function readVolume(path: string): Promise<{ bytes: Uint8Array; ownRanges: readonly (readonly [number, number])[]; offset: number }> {
  const opened = await openImageDisk(path, opener);
  const reader = new ImageBytes(opener);
  try {
    const offset = volumeOffsetFromMbr(await reader.read(opened.disk, 0, 512), opened.disk.size);
    const volume = volumeLayout(opened.disk, offset);
    return { bytes: await reader.read(volume, 0, volume.size), ownRanges: opened.ownRanges, offset };
  } finally {
    await reader.close();
  }
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let index = 0; index < a.length; index++) if (a[index] !== b[index]) return index;
  return -1;
}

async function expectError(promise: Promise<unknown>, code: string, text: RegExp): Promise<void> {
  try {
    await promise;
  } catch (error) {
    expect(isSynthvhdError(error)).toBe(true);
    if (isSynthvhdError(error)) {
      expect(error.code).toBe(code);
      expect(error.message).toMatch(text);
    }
    return;
  }
  throw new Error('expected an error');
}

const SIZE = 20 * MIB;
const truth = makeVolume(SIZE, 0.55);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'synthvhd-urbimages-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('backup folders', () => {
  it('finds the image in any format and names its side files after the whole image name', () => {
    const names = new Set(['Image_C_260101-0100.vhdz', 'Image_C_260101-0100.vhdz.mbr', 'Image_C_260101-0100.vhdz.hash', 'Image_C_260101-0100.vhdz.sync']);
    expect(findImageBackupFiles('/r/c/f', 'Image_C_260101-0100', names)).toEqual({
      extension: 'vhdz',
      imagePath: '/r/c/f/Image_C_260101-0100.vhdz',
      mbrPath: '/r/c/f/Image_C_260101-0100.vhdz.mbr',
      hashPath: '/r/c/f/Image_C_260101-0100.vhdz.hash',
      syncPath: '/r/c/f/Image_C_260101-0100.vhdz.sync',
      complete: true,
    });
    expect(findImageBackupFiles('/r/c/f', 'Image_C_260101-0100', new Set(['Image_C_260101-0100.vhdxz']))?.complete).toBe(false);
    expect(findImageBackupFiles('/r/c/f', 'Image_C_260101-0100', new Set(['Image_C_260101-0100.raw.mbr']))).toBeUndefined();
    expect(isImageSideFile('Image_C_260101-0100.vhdxz.cbitmap')).toBe(true);
    expect(isImageSideFile('Image_C_260101-0100.vhdz')).toBe(false);
  });
});

describe('full images', () => {
  const variants = [
    { name: 'plain VHD', ext: 'vhd', compressed: undefined },
    { name: 'VHDZ zstd v1.1, shuffled records', ext: 'vhdz', compressed: { codec: 'zstd', version: '1.1', shuffle: true } },
    { name: 'VHDZ zlib v1.0', ext: 'vhdz', compressed: { codec: 'zlib', version: '1.0' } },
    { name: 'VHDZ zlib v1.1', ext: 'vhdz', compressed: { codec: 'zlib', version: '1.1' } },
  ] as const;
  for (const variant of variants) {
    it(`${variant.name}: the volume equals the truth`, async () => {
      const image = writeUrbackupImage(truth.volume, truth.used, variant.compressed === undefined ? { random } : { random, compressed: variant.compressed });
      const folder = `260101-0100_Image_C`;
      const path = await place(folder, `Image_C_260101-0100.${variant.ext}.${variant.name.length}`, image);
      const read = await readVolume(path);
      expect(read.offset).toBe(IMAGE_VOLUME_OFFSET);
      expect(firstDifference(read.bytes, truth.volume)).toBe(-1);
    });
  }

  it('a VHDZ holds stale duplicate records and garbage in sectors whose bitmap bit is clear', async () => {
    const image = writeUrbackupImage(truth.volume, truth.used, { random, compressed: { codec: 'zstd', shuffle: true } });
    const blocks = (image.records ?? []).map(([block]) => block);
    expect(new Set(blocks).size).toBeLessThan(blocks.length); // a block was written twice
    const path = await place('260101-0200_Image_C', 'Image_C_260101-0200.vhdz', image);
    // Read the VHD's raw data area (ignoring bitmaps) where the truth is zero: garbage is there.
    const file = await ImageFile.open(path, opener, 'test');
    try {
      const vhd = await parseUrbackupVhd((position, length) => file.read(position, length), file.size);
      let garbage = 0;
      for (let block = 1; block < vhd.bat.length; block++) {
        const entry = vhd.bat[block] ?? 0xffffffff;
        if (entry === 0xffffffff) continue;
        const data = await file.read(entry * 512 + vhd.bitmapSize, vhd.blockSize);
        const volumeStart = block * vhd.blockSize - IMAGE_VOLUME_OFFSET;
        for (let at = 0; at < data.length; at += CLIENT_BLOCK) {
          const truthBlock = truth.volume.subarray(volumeStart + at, volumeStart + at + CLIENT_BLOCK);
          if (truthBlock.every((byte) => byte === 0) && data.subarray(at, at + CLIENT_BLOCK).some((byte) => byte !== 0)) garbage++;
        }
      }
      expect(garbage).toBeGreaterThan(0);
    } finally {
      await file.close();
    }
    const read = await readVolume(path);
    expect(firstDifference(read.bytes, truth.volume)).toBe(-1);
  });

  it('a summary (ls, doctor) reads the start exactly and does not decode the rest', async () => {
    const image = writeUrbackupImage(truth.volume, truth.used, { random, compressed: { codec: 'zstd' } });
    const path = await place('260101-0500_Image_C', 'Image_C_260101-0500.vhdz', image);
    let opened = 0;
    const counting: SourceOpener = (file) => {
      opened++;
      return open(file, 'r');
    };
    const summary = await loadImageVolume(path, false, counting, { summary: true });
    expect(summary.summary).toBe(true);
    expect(summary.volumeLength).toBe(SIZE);
    expect(firstDifference(summary.bootSector, truth.volume.subarray(0, 4096))).toBe(-1);
    const reader = new ImageBytes(opener);
    try {
      const start = await reader.read(summary.volume, 0, 4 * MIB);
      expect(firstDifference(start, truth.volume.subarray(0, 4 * MIB))).toBe(-1);
    } finally {
      await reader.close();
    }
    expect(opened).toBeGreaterThan(0);
  });

  it('a .vhdz that is really a plain VHD (urbackupsrv decompress-file) is read by its magic', async () => {
    const image = writeUrbackupImage(truth.volume, truth.used, { random });
    const path = await place('260101-0300_Image_C', 'Image_C_260101-0300.vhdz', image);
    const read = await readVolume(path);
    expect(firstDifference(read.bytes, truth.volume)).toBe(-1);
  });

  it('qemu-img reads the plain VHD fixture as the same disk (an independent check of the writer)', async () => {
    const image = writeUrbackupImage(truth.volume, truth.used, { random });
    const path = await place('260101-0400_Image_C', 'Image_C_260101-0400.vhd', image);
    const out = join(dir, 'qemu.raw');
    // qemu sizes a VHD from CHS unless told to use Current Size.
    execFileSync('qemu-img', ['convert', '--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${path}`, '-O', 'raw', out]);
    const disk = new Uint8Array(await readFile(out));
    expect(disk.length).toBe(SIZE + IMAGE_VOLUME_OFFSET);
    expect(firstDifference(disk.subarray(IMAGE_VOLUME_OFFSET), truth.volume)).toBe(-1);
  });
});

describe('incremental chains', () => {
  it('a differencing VHDZ over a full VHDZ over … reads as the changed volume; own ranges are what the child wrote', async () => {
    const full = writeUrbackupImage(truth.volume, truth.used, { random, compressed: { codec: 'zstd', shuffle: true } });
    const fullPath = await place('260102-0100_Image_C', 'Image_C_260102-0100.vhdz', full);
    // Change a few 4 KiB blocks: some inside blocks the parent has, one in a gap, one at the end.
    const second = truth.volume.slice();
    const changed = [5, 6, 700, 1201, 2500, SIZE / CLIENT_BLOCK - 2];
    for (const block of changed) second.fill(0x5a + (block % 7), block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const incremental = writeUrbackupImage(second, changed, {
      random,
      compressed: { codec: 'zlib' },
      parent: { path: fullPath, uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize },
    });
    const childPath = await place('260103-0100_Image_C', 'Image_C_260103-0100.vhdz', incremental);
    const read = await readVolume(childPath);
    expect(firstDifference(read.bytes, second)).toBe(-1);
    // The child holds the MBR area (block 0) and the changed blocks: each changed block is inside one own range.
    for (const block of changed) {
      const at = IMAGE_VOLUME_OFFSET + block * CLIENT_BLOCK;
      expect(read.ownRanges.some(([start, length]) => start <= at && at + CLIENT_BLOCK <= start + length)).toBe(true);
    }
    expect(read.ownRanges.reduce((sum, [, length]) => sum + length, 0)).toBe(IMAGE_VOLUME_OFFSET + changed.length * CLIENT_BLOCK);

    // A third level, plain VHD over the VHDZ child (a partially present block over a chain).
    const third = second.slice();
    const changed3 = [7, 1202];
    for (const block of changed3) third.fill(0x11, block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const level3 = writeUrbackupImage(third, changed3, {
      random,
      parent: { path: childPath, uniqueId: incremental.uniqueId, timeStamp: incremental.timeStamp, size: incremental.diskSize },
    });
    const level3Path = await place('260104-0100_Image_C', 'Image_C_260104-0100.vhd', level3);
    const read3 = await readVolume(level3Path);
    expect(firstDifference(read3.bytes, third)).toBe(-1);

    // The backup-run diff from the chain's own BATs and bitmaps: every 512 KiB chunk whose bytes
    // differ from the full backup is flagged, and only chunks the two children wrote are.
    const loaded = await loadImageVolume(level3Path, false, opener);
    expect(loaded.volumeLength).toBe(SIZE);
    expect(firstDifference(loaded.bootSector, third.subarray(0, 4096))).toBe(-1);
    expect(loaded.chain.map((file) => file.path)).toEqual([level3Path, childPath, fullPath]);
    const ranges = changedSince(loaded, fullPath);
    expect(ranges).toBeDefined();
    const chunk = 512 * 1024;
    const flags = changedChunkFlags(ranges ?? [], SIZE, chunk);
    const written = new Set([...changed, ...changed3].map((block) => Math.floor((block * CLIENT_BLOCK) / chunk)));
    flags.forEach((flag, index) => {
      const differs = firstDifference(truth.volume.subarray(index * chunk, (index + 1) * chunk), third.subarray(index * chunk, (index + 1) * chunk)) !== -1;
      if (differs) expect(flag).toBe(true);
      expect(flag).toBe(written.has(index));
    });
    expect(changedSince(loaded, '/not/in/the/chain.vhdz')).toBeUndefined();
  });

  it('a missing parent and a wrong parent are refused with one clear message', async () => {
    const full = writeUrbackupImage(truth.volume, truth.used, { random });
    const fullPath = join(dir, 'client', '260105-0100_Image_C', 'Image_C_260105-0100.vhd');
    const child = writeUrbackupImage(truth.volume, [3], {
      random,
      parent: { path: fullPath, uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize },
    });
    const childPath = await place('260106-0100_Image_C', 'Image_C_260106-0100.vhd', child);
    await expectError(openImageDisk(childPath, opener), 'E_CONTAINER', /parent not found.*260105-0100_Image_C\/Image_C_260105-0100\.vhd/);
    // Another full backup under the parent's name: its Unique Id differs.
    await place('260105-0100_Image_C', 'Image_C_260105-0100.vhd', writeUrbackupImage(truth.volume, truth.used, { random }));
    await expectError(openImageDisk(childPath, opener), 'E_CONTAINER', /wrong parent: .*Unique Id/);
  });

  it('finds the parent where urBackup looks: parent_unicodename, then the fallbacks', () => {
    expect(urbackupVhdParentCandidates('/b/c/260103-0100_Image_C/x.vhdz', '../260102-0100_Image_C/p.vhdz')).toEqual([
      '/b/c/260102-0100_Image_C/p.vhdz',
      '/b/c/260103-0100_Image_C/p.vhdz',
    ]);
    expect(urbackupVhdParentCandidates('/b/c/other/x.vhd', 'p.vhd')).toEqual(['/b/c/other/p.vhd', '/b/c/p.vhd']);
  });
});

describe("urBackup's VHDX and VHDXZ", () => {
  it('full VHDX, full VHDXZ, and a VHDXZ child of a VHDX read as urBackup reads them', async () => {
    const plain = writeUrbackupVhdxImage(truth.volume, truth.used, { random });
    const plainPath = await place('260301-0100_Image_C', 'Image_C_260301-0100.vhdx', plain.bytes);
    const read = await readVolume(plainPath);
    expect(firstDifference(read.bytes, truth.volume)).toBe(-1);
    // qemu-img reads the fixture as the same disk: the writer makes valid VHDX.
    const out = join(dir, 'qemu-vhdx.raw');
    execFileSync('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', plainPath, out]);
    expect(firstDifference(new Uint8Array(await readFile(out)), plain.disk)).toBe(-1);

    const packed = writeUrbackupVhdxImage(truth.volume, truth.used, { random, compressed: { codec: 'zstd', shuffle: true } });
    const packedPath = await place('260301-0200_Image_C', 'Image_C_260301-0200.vhdxz', packed.bytes);
    const readPacked = await readVolume(packedPath);
    // Unwritten sectors of a FULLY_PRESENT block read as the file holds them, for urBackup too.
    expect(firstDifference(readPacked.bytes, packed.disk.subarray(IMAGE_VOLUME_OFFSET))).toBe(-1);

    const second = truth.volume.slice();
    const changed = [9, 10, 2000, SIZE / CLIENT_BLOCK - 3];
    for (const block of changed) second.fill(0x77, block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const child = writeUrbackupVhdxImage(second, changed, {
      random,
      compressed: { codec: 'zlib' },
      parent: { path: plainPath, dataWriteGuid: plain.dataWriteGuid },
      parentDisk: plain.disk,
    });
    const childPath = await place('260302-0100_Image_C', 'Image_C_260302-0100.vhdxz', child.bytes);
    const readChild = await readVolume(childPath);
    expect(firstDifference(readChild.bytes, second)).toBe(-1);
    expect(readChild.ownRanges.reduce((sum, [, length]) => sum + length, 0)).toBe(IMAGE_VOLUME_OFFSET + changed.length * CLIENT_BLOCK);
  });
});

describe('decoded blocks off the main thread', () => {
  it('a process whose only work left is a native decode waits for it, then exits', async () => {
    // The decode runs on the libuv pool, which holds the event loop while it works.
    const script = `
      import { deflateSync } from 'node:zlib';
      import { openSync, writeFileSync } from 'node:fs';
      import { decodeRecord } from ${JSON.stringify(join(REPO_ROOT, 'dist', 'src', 'native', 'native.js'))};
      const block = Buffer.alloc(2 * 1024 * 1024, 0x61);
      const payload = deflateSync(block);
      const head = Buffer.alloc(8);
      head.writeUInt32LE(payload.length, 0);
      head.writeUInt32LE(1, 4);
      const path = ${JSON.stringify(join(dir, 'exit-record.bin'))};
      writeFileSync(path, Buffer.concat([head, payload]));
      const into = Buffer.alloc(block.length);
      await decodeRecord(openSync(path, 'r'), 0, block.length, into);
      console.log('decoded', into.length, into.equals(block));
    `;
    const result = await run(process.execPath, ['--input-type=module', '-e', script], { timeoutMs: 20_000 });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(`decoded ${2 * 1024 * 1024} true`);
  });

  it('a served VHDZ volume read through the native codec and the bytes-bounded cache equals the truth; a corrupt record is E_IO', async () => {
    const image = writeUrbackupImage(truth.volume, truth.used, { random, compressed: { codec: 'zstd', shuffle: true } });
    const path = await place('260401-0100_Image_C', 'Image_C_260401-0100.vhdz', image);
    const opened = await openImageDisk(path, opener);
    const volume = volumeLayout(opened.disk, IMAGE_VOLUME_OFFSET);
    const handle = await open(path, 'r');
    let decodes = 0;
    const blocks = new DecodedBlocks(async (file, record, blockLength) => {
      decodes++;
      return readCompressedRecord(handle, file, record, blockLength);
    }, 6 * MIB);
    const corrupt = volume.extents.find((extent) => extent.kind === 'compressed');
    if (corrupt?.kind !== 'compressed') throw new Error('no compressed extent');
    // The same file with that record's payload damaged, as a disk error would.
    const damagedBytes = image.bytes.slice();
    damagedBytes.fill(0x33, corrupt.record + 8 + 4, corrupt.record + 8 + 64);
    const damagedPath = await place('260401-0100_Image_C', 'damaged.vhdz', damagedBytes);
    const damagedHandle = await open(damagedPath, 'r');
    try {
      const out = new Uint8Array(volume.size);
      // 128 KiB reads, as FUSE sends them, in order.
      for (const extent of volume.extents) {
        if (extent.kind === 'compressed') {
          for (let at = 0; at < extent.length; at += 128 * 1024) {
            const count = Math.min(128 * 1024, extent.length - at);
            await blocks.readInto(extent, at, out, extent.start + at, count);
          }
        } else if (extent.kind !== 'zero') {
          throw new Error(`unexpected ${extent.kind} extent in a VHDZ volume`);
        }
      }
      expect(firstDifference(out, truth.volume)).toBe(-1);
      // Each record was decoded once, not once per 128 KiB read.
      const records = new Set(volume.extents.flatMap((extent) => (extent.kind === 'compressed' ? [extent.record] : [])));
      expect(decodes).toBe(records.size);
      blocks.clear();
      const damaged = new DecodedBlocks((_, record, blockLength) => readCompressedRecord(damagedHandle, damagedPath, record, blockLength));
      await expectError(damaged.readInto(corrupt, 0, out, 0, 512), 'E_IO', new RegExp(`damaged\\.vhdz: block record at ${corrupt.record}: corrupt compressed block: zstd: `));
    } finally {
      await handle.close();
      await damagedHandle.close();
    }
  });
});

describe('the extent model serves compressed extents', () => {
  it('readAt and materialize (copy, with the reason) give the truth volume of a VHDZ', async () => {
    const image = writeUrbackupImage(truth.volume, truth.used, { random, compressed: { codec: 'zlib', shuffle: true } });
    const path = await place('260501-0100_Image_C', 'Image_C_260501-0100.vhdz', image);
    const opened = await openImageDisk(path, opener);
    const volume = volumeLayout(opened.disk, IMAGE_VOLUME_OFFSET);
    const sources = new SourceFiles(8);
    try {
      const out = new Uint8Array(volume.size);
      // Odd-sized reads across block boundaries.
      for (let at = 0; at < volume.size; at += 1_000_003) await readAt(volume, sources, at, out, Math.min(1_000_003, volume.size - at), at);
      expect(firstDifference(out, truth.volume)).toBe(-1);
    } finally {
      await sources.close();
    }
    const output = join(dir, 'volume.img');
    const report = await writeLayout(volume, output);
    expect(firstDifference(new Uint8Array(await readFile(output)), truth.volume)).toBe(-1);
    expect(report.clonedBytes).toBe(0);
    expect(report.copyReasons.join('\n')).toMatch(/urBackup-compressed: decoded and copied/);
    await expectError(writeLayout(volume, join(dir, 'always.img'), { reflink: 'always' }), 'E_REFLINK', /urBackup-compressed/);
  });
});

describe('bad input', () => {
  const good = writeUrbackupImage(makeVolume(4 * MIB, 0.5).volume, [1, 2, 3, 500], { random, compressed: { codec: 'zstd' } });

  it('an unfinished VHDZ (header still size 0) and an unfinished VHD (no trailing footer) are incomplete', async () => {
    const vhdz = writeUrbackupImage(truth.volume, truth.used.slice(0, 50), { random, compressed: { codec: 'zstd' }, unfinished: true });
    await expectError(openImageDisk(await place('260201-0100_Image_C', 'Image_C_260201-0100.vhdz', vhdz), opener), 'E_INCOMPLETE', /never finished/);
    const vhd = writeUrbackupImage(truth.volume, truth.used.slice(0, 50), { random, unfinished: true });
    await expectError(openImageDisk(await place('260201-0200_Image_C', 'Image_C_260201-0200.vhd', vhd), opener), 'E_INCOMPLETE', /never finished/);
  });

  it('a truncated container: the index lies past the end', async () => {
    const cut = good.bytes.subarray(0, good.bytes.length - 100);
    await expectError(openImageDisk(await place('260202-0100_Image_C', 'Image_C_260202-0100.vhdz', cut), opener), 'E_CONTAINER', /index at .* not inside/);
  });

  it('an index entry pointing inside the header', async () => {
    const bytes = good.bytes.slice();
    const view = new DataView(bytes.buffer);
    const indexOffset = Number(view.getBigInt64(29, true));
    view.setBigInt64(indexOffset, 20n, true);
    await expectError(openImageDisk(await place('260202-0200_Image_C', 'Image_C_260202-0200.vhdz', bytes), opener), 'E_CONTAINER', /block 0 record at 20 is inside the header/);
  });

  it('a corrupt block: opening fails if the layout needs it, reading fails with E_IO naming file and record', async () => {
    const path = await place('260202-0300_Image_C', 'Image_C_260202-0300.vhdz', good);
    const opened = await openImageDisk(path, opener);
    const extent = opened.disk.extents.find((candidate) => candidate.kind === 'compressed' && candidate.start >= IMAGE_VOLUME_OFFSET);
    expect(extent?.kind).toBe('compressed');
    if (extent?.kind !== 'compressed') return;
    // Damage the payload of that record after the layout was built (as a disk error would).
    const bytes = good.bytes.slice();
    bytes.fill(0xee, extent.record + 8 + 10, extent.record + 8 + 200);
    await writeFile(path, bytes);
    const reader = new ImageBytes(opener);
    try {
      await expectError(reader.read(opened.disk, extent.start, 4096), 'E_IO', new RegExp(`Image_C_260202-0300\\.vhdz: block record at ${extent.record}: corrupt compressed block`));
    } finally {
      await reader.close();
    }
    // Opened afresh, the damaged block holds bitmaps the layout needs: refused at open.
    await expectError(openImageDisk(path, opener), 'E_IO', /corrupt compressed block/);
  });

  it('an unknown version and an unknown mode are refused', async () => {
    const bytes = good.bytes.slice();
    bytes.set([0x39], 27); // "1.9"
    await expectError(openImageDisk(await place('260202-0400_Image_C', 'Image_C_260202-0400.vhdz', bytes), opener), 'E_CONTAINER', /unknown version "1.9"/);
  });
});
