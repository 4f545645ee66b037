// SPDX-License-Identifier: MIT
/**
 * urBackup's VHD/VHDZ image backups (issue #15), read back against the truth: files written the
 * way urBackup writes them (fixtures/urbackup-images.ts), opened with their chains
 * (src/urbackup/images/), and every byte of the volume compared with the volume that was
 * backed up. The writer shares no code with src/; independent tools judge what it writes
 * (describe "independent witnesses"): the zstd CLI and node:zlib decode every record, a small
 * unwrapper in test/helpers/image-unwrap.ts turns a .vhdz/.vhdxz back into the .vhd/.vhdx it
 * wraps, and qemu-img, libvhdi (vhdiinfo, vhdimount), 7-Zip and sfdisk read those files; every
 * expected disk is built from the truth volume.
 */
import { resolveLayoutChains } from '../src/extents/vhd-chain.js';
import { mkdtemp, mkdir, open, readFile, readdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSynthvhdError } from '../src/errors/synthvhd-error.js';
import { readAt } from '../src/extents/read-at.js';
import { SourceFiles } from '../src/extents/source-files.js';
import { writeLayout } from '../src/materialize/write-layout.js';
import { findImageBackupFiles, isImageSideFile } from '../src/urbackup/images/image-backup-files.js';
import { readCompressedRecord } from '../src/extents/compressed-record.js';
import { withVhdiMount } from './helpers/blocklist.js';
import { containerHeader, containerIndex, containerRecords, decodeRecord, unwrapContainer, vhdDisk, vhdFields, vhdxDataWriteGuid, vhdxGuidText } from './helpers/image-unwrap.js';
import { REPO_ROOT, run, runOk } from './helpers/run.js';
import { DecodedBlocks } from '../src/extents/decoded-blocks.js';
import { ImageBytes } from '../src/urbackup/images/image-bytes.js';
import { type SourceOpener } from '../src/urbackup/images/image-file.js';
import { volumeLayout, volumeOffsetFromMbr } from '../src/urbackup/images/image-volume.js';
import { changedChunkFlags, changedSince, loadImageVolume } from '../src/urbackup/images/load-image-volume.js';
import { openImageDisk } from '../src/urbackup/images/open-image-backup.js';
import { urbackupVhdParentCandidates } from '../src/urbackup/images/urbackup-vhd.js';
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
    return { bytes: await reader.read(volume, 0, volume.size), ownRanges: await opened.ownRanges(), offset };
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
    // The records in the file (read by hand, not from the writer): some block has two.
    const header = containerHeader(image.bytes);
    const index = containerIndex(image.bytes, header);
    const records = containerRecords(image.bytes, header);
    expect(records.length).toBeGreaterThan(index.filter((offset) => offset !== -1).length);
    const path = await place('260101-0200_Image_C', 'Image_C_260101-0200.vhdz', image);
    // The VHD's raw data area (ignoring bitmaps) where the truth is zero: garbage is there.
    const plain = unwrapContainer(image.bytes);
    const fields = vhdFields(plain);
    const bitmapSize = 512;
    let garbage = 0;
    let allocated = 0;
    for (let block = 1; block < fields.bat.length; block++) {
      const entry = fields.bat[block] ?? 0xffffffff;
      if (entry === 0xffffffff) continue;
      allocated++;
      const data = plain.subarray(entry * 512 + bitmapSize, entry * 512 + bitmapSize + fields.header.blockSize);
      const volumeStart = block * fields.header.blockSize - IMAGE_VOLUME_OFFSET;
      for (let at = 0; at < data.length; at += CLIENT_BLOCK) {
        const truthBlock = truth.volume.subarray(volumeStart + at, volumeStart + at + CLIENT_BLOCK);
        if (truthBlock.every((byte) => byte === 0) && data.subarray(at, at + CLIENT_BLOCK).some((byte) => byte !== 0)) garbage++;
      }
    }
    expect(allocated).toBeGreaterThan(0);
    expect(garbage).toBeGreaterThan(0);
    const read = await readVolume(path);
    expect(firstDifference(read.bytes, truth.volume)).toBe(-1);
  });

  it('ls and doctor load an image as the mount does: the boot sector and the whole volume are right', async () => {
    const image = writeUrbackupImage(truth.volume, truth.used, { random, compressed: { codec: 'zstd' } });
    const path = await place('260101-0500_Image_C', 'Image_C_260101-0500.vhdz', image);
    let opened = 0;
    const counting: SourceOpener = (file) => {
      opened++;
      return open(file, 'r');
    };
    const summary = await loadImageVolume(path, false, counting);
    expect(summary.volumeLength).toBe(SIZE);
    expect(firstDifference(summary.bootSector, truth.volume.subarray(0, 4096))).toBe(-1);
    const reader = new ImageBytes(opener);
    try {
      // Not only its start: composing reads headers and BATs, so there is no summary layout any more.
      const whole = await reader.read(summary.volume, 0, SIZE);
      expect(firstDifference(whole, truth.volume)).toBe(-1);
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
    const ranges = await changedSince(loaded, fullPath);
    expect(ranges).toBeDefined();
    const chunk = 512 * 1024;
    const flags = changedChunkFlags(ranges ?? [], SIZE, chunk);
    const written = new Set([...changed, ...changed3].map((block) => Math.floor((block * CLIENT_BLOCK) / chunk)));
    // One flag per chunk of the volume, so the comparisons below cover every chunk.
    expect(flags.length).toBe(SIZE / chunk);
    const expectedFlags = flags.map((_, index) => written.has(index));
    expect(expectedFlags.filter(Boolean).length).toBe(written.size);
    expect(flags).toEqual(expectedFlags);
    // Every chunk whose bytes differ from the full backup (from the truth volumes) is flagged.
    const differs = flags.map((_, index) => firstDifference(truth.volume.subarray(index * chunk, (index + 1) * chunk), third.subarray(index * chunk, (index + 1) * chunk)) !== -1);
    expect(differs.filter(Boolean).length).toBeGreaterThan(0);
    expect(differs.filter((differ, index) => differ && !flags[index])).toEqual([]);
    expect(await changedSince(loaded, '/not/in/the/chain.vhdz')).toBeUndefined();
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
    // urBackup leaves a plain VHDX 100 MiB longer than its last block (allocate_size_add_size, a
    // hole of zeros): the same file so extended reads the same.
    const preallocated = await place('260301-0110_Image_C', 'Image_C_260301-0110.vhdx', plain.bytes);
    await truncate(preallocated, plain.bytes.length + 100 * MIB);
    expect(firstDifference((await readVolume(preallocated)).bytes, truth.volume)).toBe(-1);

    const packed = writeUrbackupVhdxImage(truth.volume, truth.used, { random, compressed: { codec: 'zstd', shuffle: true } });
    const packedPath = await place('260301-0200_Image_C', 'Image_C_260301-0200.vhdxz', packed.bytes);
    const readPacked = await readVolume(packedPath);
    // What was written is the truth; sectors of a FULLY_PRESENT block never written read as the
    // file holds them (recycled-buffer bytes, urBackup's reader returns them too), as qemu-img
    // reads them from the unwrapped file.
    const written = writtenMask(truth.used);
    expect(differencesWhere(readPacked.bytes, truth.volume, written)).toBe(0);
    const unwrappedPath = join(dir, 'unwrapped', 'Image_C_260301-0200.vhdx');
    await mkdir(dirname(unwrappedPath), { recursive: true });
    await writeFile(unwrappedPath, unwrapContainer(packed.bytes));
    const qemu = await qemuRaw(unwrappedPath, 'vhdx');
    expect(firstDifference(readPacked.bytes, qemu.subarray(IMAGE_VOLUME_OFFSET))).toBe(-1);
    // …and those sectors do hold something else than the truth's zeros: the check above is not
    // only a comparison of zeros.
    expect(firstDifference(readPacked.bytes, truth.volume)).not.toBe(-1);

    const second = truth.volume.slice();
    const changed = [9, 10, 2000, SIZE / CLIENT_BLOCK - 3];
    for (const block of changed) second.fill(0x77, block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const child = writeUrbackupVhdxImage(second, changed, {
      random,
      compressed: { codec: 'zlib' },
      parent: { path: plainPath, dataWriteGuid: plain.dataWriteGuid },
    });
    const childPath = await place('260302-0100_Image_C', 'Image_C_260302-0100.vhdxz', child.bytes);
    const readChild = await readVolume(childPath);
    expect(firstDifference(readChild.bytes, second)).toBe(-1);
    expect(readChild.ownRanges.reduce((sum, [, length]) => sum + length, 0)).toBe(IMAGE_VOLUME_OFFSET + changed.length * CLIENT_BLOCK);
  });
});

describe("urBackup's VHDXZ as CompressedFile and syncInt leave it", () => {
  // urBackup's CompressedFile ends the file at the last byte written (CompressedFile::Write:
  // `filesize` = the furthest position), and in a VHDXZ child that is the last changed client
  // block, inside the last payload block VHDXFile::allocateBatBlockFull handed out. urBackup's
  // VHDXFile::Read takes only the sectors whose bitmap bit is set from the file (all of them
  // written, so inside it) and the rest from the parent. synthvhd refused such a child at open
  // ("VHDX BAT payload entry 20: block at 7340032 ends beyond the file (7856128 bytes)") until
  // parse-vhdx.ts learnt `endsAtLastWrite`.
  it('a VHDXZ child that ends inside its last payload block reads as the changed volume', async () => {
    const plain = writeUrbackupVhdxImage(truth.volume, truth.used, { random });
    const plainPath = await place('260901-0100_Image_C', 'Image_C_260901-0100.vhdx', plain.bytes);
    const second = truth.volume.slice();
    const changed = [9, SIZE / CLIENT_BLOCK - 3];
    for (const block of changed) second.fill(0x66, block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const child = writeUrbackupVhdxImage(second, changed, { random, compressed: { codec: 'zstd' }, parent: { path: plainPath, dataWriteGuid: plain.dataWriteGuid }, endAtLastWrite: true });
    // The case under test: the container ends inside a 1 MiB payload block.
    expect(containerHeader(child.bytes).size % MIB).not.toBe(0);
    const childPath = await place('260902-0100_Image_C', 'Image_C_260902-0100.vhdxz', child.bytes);
    const read = await readVolume(childPath);
    expect(firstDifference(read.bytes, second)).toBe(-1);
  });
});

describe("urBackup's VHDXZ child with only its changed BAT pages written", () => {
  // VHDXFile::syncInt writes only the 4 KiB BAT pages that hold a changed entry. A child's BAT has
  // ChunkRatio + 1 = 4097 entries per 4 GiB chunk, most of them for blocks past a small disk's
  // end; in a .vhdxz their pages keep whatever the 2 MiB CompressedFile buffer held (`new char[]`
  // or a recycled buffer, LRUMemCache::createInt). urBackup's VHDXFile::Read looks only at the
  // entries of blocks inside the disk (getBatEntry) and at the chunk's bitmap entry; synthvhd
  // refused the file ("VHDX BAT payload entry 512: state 5 is not valid in a differencing VHDX")
  // until checkVhdxBat skipped the entries of blocks past the disk's end.
  it('a VHDXZ child whose unwritten BAT pages hold old buffer bytes reads as the changed volume', async () => {
    const plain = writeUrbackupVhdxImage(truth.volume, truth.used, { random });
    const plainPath = await place('261001-0100_Image_C', 'Image_C_261001-0100.vhdx', plain.bytes);
    const second = truth.volume.slice();
    const changed = [9, 10];
    for (const block of changed) second.fill(0x55, block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const child = writeUrbackupVhdxImage(second, changed, { random, compressed: { codec: 'zstd' }, parent: { path: plainPath, dataWriteGuid: plain.dataWriteGuid }, changedBatPagesOnly: true });
    // The case under test: page 1 of the BAT (entries 512–1023, all past the disk's 21 blocks)
    // holds old bytes.
    const unwrapped = unwrapContainer(child.bytes);
    expect(unwrapped.subarray(3 * MIB + 4096, 3 * MIB + 8192).every((byte) => byte === 0)).toBe(false);
    const childPath = await place('261002-0100_Image_C', 'Image_C_261002-0100.vhdxz', child.bytes);
    const read = await readVolume(childPath);
    expect(firstDifference(read.bytes, second)).toBe(-1);
  });
});

/** The disk urBackup's image of `volume` is: its synthetic MBR (`sector0`), 1023 zero sectors, the volume. */
function truthDisk(volume: Uint8Array, sector0: Uint8Array): Uint8Array {
  const disk = new Uint8Array(IMAGE_VOLUME_OFFSET + volume.length);
  disk.set(sector0.subarray(0, 512), 0);
  disk.set(volume, IMAGE_VOLUME_OFFSET);
  return disk;
}

/**
 * ImageBackup::writeMBR's sector, checked field by field (docs/urbackup-image-formats.md §4) and
 * by sfdisk: one partition of type 0x07 at LBA 1024 covering the volume, boot signature 55 AA.
 */
async function expectSyntheticMbr(sector0: Uint8Array, volumeLength: number): Promise<void> {
  const view = Buffer.from(sector0);
  expect(view[450]).toBe(0x07);
  expect(view.readUInt32LE(454)).toBe(1024);
  expect(view.readUInt32LE(458)).toBe(volumeLength / 512);
  expect([view[510], view[511]]).toEqual([0x55, 0xaa]);
  const path = join(dir, `mbr-${process.hrtime.bigint()}.img`);
  const image = new Uint8Array(IMAGE_VOLUME_OFFSET + volumeLength);
  image.set(sector0.subarray(0, 512));
  await writeFile(path, image);
  const table = JSON.parse((await runOk('sfdisk', ['-J', path])).stdout) as { partitiontable: { label: string; partitions: { start: number; size: number; type: string }[] } };
  expect(table.partitiontable.label).toBe('dos');
  expect(table.partitiontable.partitions.map(({ start, size, type }) => ({ start, size, type }))).toEqual([{ start: 1024, size: volumeLength / 512, type: '7' }]);
}

/** Per byte of the volume: was it written (one of the client blocks in `used`)? */
function writtenMask(used: readonly number[], length = SIZE): Uint8Array {
  const mask = new Uint8Array(length);
  for (const block of used) mask.fill(1, block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
  return mask;
}

/** Bytes where `a` and `b` differ among those `mask` marks. */
function differencesWhere(a: Uint8Array, b: Uint8Array, mask: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let count = 0;
  for (let index = 0; index < a.length; index++) if (mask[index] === 1 && a[index] !== b[index]) count++;
  return count;
}

/** qemu-img's raw conversion of `path`. */
async function qemuRaw(path: string, format: 'vpc' | 'vhdx'): Promise<Uint8Array> {
  const out = join(dir, `qemu-${process.hrtime.bigint()}.raw`);
  // qemu sizes a VHD from CHS unless told to use Current Size.
  const source = format === 'vpc' ? ['--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${path}`] : ['-f', 'vhdx', path];
  await runOk('qemu-img', ['convert', ...source, '-O', 'raw', out]);
  const bytes = new Uint8Array(await readFile(out));
  await rm(out);
  return bytes;
}

/** 7-Zip's extraction of the disk inside a .vhd/.vhdx (`-t` so it stops at the disk, not the partition). */
async function sevenZip(path: string, type: 'vhd' | 'vhdx'): Promise<{ code: number; output: string; disk?: Uint8Array }> {
  const out = await mkdtemp(join(dir, '7z-'));
  try {
    const result = await run('7zz', ['x', `-t${type}`, `-o${out}`, path]);
    const names = await readdir(out);
    const disk = result.code === 0 && names.length === 1 ? new Uint8Array(await readFile(join(out, names[0] ?? ''))) : undefined;
    return { code: result.code, output: result.stdout + result.stderr, ...(disk === undefined ? {} : { disk }) };
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/** Writes `bytes` as `folder/name` under the `unwrapped` tree (the .vhdz's name, the plain file inside). */
async function placeUnwrapped(folder: string, name: string, bytes: Uint8Array): Promise<string> {
  const path = join(dir, 'unwrapped', folder, name);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
  return path;
}

describe('independent witnesses of the written files', () => {
  it('a plain VHD: qemu-img, 7-Zip and libvhdi read the truth disk; the footer and header fields are as urBackup writes them', async () => {
    const image = writeUrbackupImage(truth.volume, truth.used, { random });
    const path = await place('260101-0400_Image_C', 'Image_C_260101-0400.vhd', image);
    const fields = vhdFields(image.bytes);
    expect(fields.footer).toMatchObject({ cookie: 'conectix', dataOffset: 512n, creatorApplication: 'vpc ', currentSize: SIZE + IMAGE_VOLUME_OFFSET, diskType: 3, checksumOk: true });
    expect(fields.header).toMatchObject({ cookie: 'cxsparse', tableOffset: 1536, blockSize: 512 * 1024, maxTableEntries: (SIZE + IMAGE_VOLUME_OFFSET) / (512 * 1024), checksumOk: true });
    const qemu = await qemuRaw(path, 'vpc');
    await expectSyntheticMbr(qemu.subarray(0, 512), SIZE);
    const expected = truthDisk(truth.volume, qemu);
    expect(firstDifference(qemu, expected)).toBe(-1);
    const expectedPath = join(dir, 'truth-disk-0400.raw');
    await writeFile(expectedPath, expected);
    const compare = await run('qemu-img', ['compare', '--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${path}`, `driver=raw,file.filename=${expectedPath}`]);
    expect(compare.stdout + compare.stderr).toContain('Images are identical');
    const seven = await sevenZip(path, 'vhd');
    expect(seven.code, seven.output).toBe(0);
    expect(firstDifference(seven.disk ?? new Uint8Array(0), expected)).toBe(-1);
    const info = await runOk('vhdiinfo', [path]);
    expect(info.stdout).toMatch(/Disk type\s*:\s*Dynamic/);
    expect(info.stdout).toMatch(new RegExp(`Media size\\s*:.*\\(${SIZE + IMAGE_VOLUME_OFFSET} bytes\\)`));
    await withVhdiMount(path, async (rawDisk) => {
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', rawDisk, expectedPath]);
      expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
    });
  });

  const containers = [
    { name: 'zstd v1.1, shuffled records', options: { codec: 'zstd', version: '1.1', shuffle: true }, mode: 2, headerSize: 50 },
    { name: 'zlib v1.0', options: { codec: 'zlib', version: '1.0' }, mode: 1, headerSize: 49 },
    { name: 'zlib v1.1, shuffled records', options: { codec: 'zlib', version: '1.1', shuffle: true }, mode: 1, headerSize: 50 },
  ] as const;
  for (const container of containers) {
    it(`a VHDZ (${container.name}): every record decodes outside synthvhd, and the VHD inside reads as the truth`, async () => {
      const image = writeUrbackupImage(truth.volume, truth.used, { random, compressed: container.options });
      const header = containerHeader(image.bytes);
      expect(header).toMatchObject({ version: container.options.version, headerSize: container.headerSize, blockSize: 2 * MIB });
      const records = containerRecords(image.bytes, header);
      const index = containerIndex(image.bytes, header);
      // Records are back to back from the header to the index, each with this codec's mode,
      // and each decodes (zstd CLI or node:zlib) to one whole 2 MiB block.
      expect(records.length).toBeGreaterThan(0);
      expect(records.map((record) => record.mode).filter((mode) => mode !== container.mode)).toEqual([]);
      const decoded = new Map(records.map((record) => [record.at, decodeRecord(record)]));
      expect([...decoded.values()].filter((block) => block.length !== 2 * MIB).length).toBe(0);
      // The index names one record per block of the file: records not named are stale copies.
      expect(index.length).toBe(Math.ceil(header.size / header.blockSize));
      expect(index.filter((offset) => offset !== -1 && !decoded.has(offset))).toEqual([]);
      const stale = records.filter((record) => !index.includes(record.at));
      expect(stale.length).toBeGreaterThan(0); // blocks 0 and the BAT's are evicted and re-read while the image is written

      const plain = unwrapContainer(image.bytes);
      expect(plain.length).toBe(header.size);
      const unwrappedPath = await placeUnwrapped('260101-0600_Image_C', `Image_C_260101-0600.${container.name.length}.vhd`, plain);
      // qemu-img (bitmaps ignored, as it does for dynamic disks) has the truth wherever urBackup wrote.
      const qemu = await qemuRaw(unwrappedPath, 'vpc');
      await expectSyntheticMbr(qemu.subarray(0, 512), SIZE);
      expect(differencesWhere(qemu.subarray(IMAGE_VOLUME_OFFSET), truth.volume, writtenMask(truth.used))).toBe(0);
      // Bitmaps honoured (VHDFile::Read, read by hand): the whole truth disk.
      expect(firstDifference(vhdDisk(plain), truthDisk(truth.volume, qemu))).toBe(-1);
      // The sectors whose bitmap bit is clear hold recycled buffer bytes, not zeros: 7-Zip,
      // which checks that such sectors of a dynamic disk are zero, calls it a data error; and
      // synthvhd still reads the truth.
      expect(firstDifference(qemu.subarray(IMAGE_VOLUME_OFFSET), truth.volume)).not.toBe(-1);
      const seven = await sevenZip(unwrappedPath, 'vhd');
      expect(seven.output).toMatch(/Data Error/);
      const read = await readVolume(await place('260101-0600_Image_C', `Image_C_260101-0600.${container.name.length}.vhdz`, image));
      expect(firstDifference(read.bytes, truth.volume)).toBe(-1);
    });
  }

  it('a differencing VHD chain: parent fields read by hand match the parent footer; libvhdi and 7-Zip read the truth through the chain', async () => {
    // A plain full VHD (no recycled-buffer bytes, so tools that ignore a dynamic disk's bitmaps
    // see the truth too), a VHDZ child and a plain VHD grandchild.
    const full = writeUrbackupImage(truth.volume, truth.used, { random });
    const fullPath = await place('260701-0100_Image_C', 'Image_C_260701-0100.vhd', full);
    const second = truth.volume.slice();
    const changed = [5, 6, 700, 1201, SIZE / CLIENT_BLOCK - 2];
    for (const block of changed) second.fill(0x5a + (block % 7), block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const child = writeUrbackupImage(second, changed, {
      random,
      compressed: { codec: 'zstd', shuffle: true },
      parent: { path: fullPath, uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize },
    });
    const childPath = await place('260702-0100_Image_C', 'Image_C_260702-0100.vhdz', child);
    const third = second.slice();
    const changed3 = [7, 1202];
    for (const block of changed3) third.fill(0x11, block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const level3 = writeUrbackupImage(third, changed3, {
      random,
      parent: { path: childPath, uniqueId: child.uniqueId, timeStamp: child.timeStamp, size: child.diskSize },
    });
    const level3Path = await place('260703-0100_Image_C', 'Image_C_260703-0100.vhd', level3);

    // The parent fields (VHD spec "Dynamic Disk Header Format"), read by hand, against the
    // parent's own footer read by hand.
    const parentFooter = vhdFields(full.bytes).footer;
    const childPlain = unwrapContainer(child.bytes);
    const childFields = vhdFields(childPlain);
    expect(childFields.footer.diskType).toBe(4);
    expect(childFields.footer.checksumOk).toBe(true);
    expect(childFields.header.checksumOk).toBe(true);
    expect(childFields.header.tableOffset).toBe(2048);
    expect(Buffer.from(childFields.header.parentUniqueId).equals(Buffer.from(parentFooter.uniqueId))).toBe(true);
    expect(childFields.header.parentTimeStamp).toBe(parentFooter.timeStamp);
    expect(childFields.header.parentUnicodeName).toBe('../260701-0100_Image_C/Image_C_260701-0100.vhd');
    expect(childFields.header.locators.map(({ code }) => code)).toEqual(['W2ku', 'W2ru']);
    const locatorText = (locator: { offset: number; length: number } | undefined): string =>
      locator === undefined ? '' : Buffer.from(childPlain.subarray(locator.offset, locator.offset + locator.length)).toString('utf16le');
    const [absolute, relative] = childFields.header.locators;
    expect(locatorText(absolute)).toBe(fullPath);
    expect(absolute?.offset).toBe(1536);
    expect(locatorText(relative)).toBe('..\\260701-0100_Image_C\\Image_C_260701-0100.vhd');
    expect(relative?.space).toBe(128 * 512);
    const level3Fields = vhdFields(level3.bytes);
    expect(Buffer.from(level3Fields.header.parentUniqueId).equals(Buffer.from(childFields.footer.uniqueId))).toBe(true);
    expect(level3Fields.header.parentTimeStamp).toBe(childFields.footer.timeStamp);
    expect(level3Fields.header.parentUnicodeName).toBe('../260702-0100_Image_C/Image_C_260702-0100.vhdz');

    // The chain unwrapped under the same names (libvhdi follows the Parent Unicode Name).
    await placeUnwrapped('260701-0100_Image_C', 'Image_C_260701-0100.vhd', full.bytes);
    await placeUnwrapped('260702-0100_Image_C', 'Image_C_260702-0100.vhdz', childPlain);
    const unwrapped3 = await placeUnwrapped('260703-0100_Image_C', 'Image_C_260703-0100.vhd', level3.bytes);
    const info = await runOk('vhdiinfo', [unwrapped3]);
    expect(info.stdout).toMatch(/Disk type\s*:\s*Differential/);
    expect(info.stdout).toMatch(/Parent filename\s*:\s*\.\.\/260702-0100_Image_C\/Image_C_260702-0100\.vhdz/);
    const sector0 = vhdDisk(level3.bytes).subarray(0, 512);
    await expectSyntheticMbr(sector0, SIZE);
    const expected = truthDisk(third, sector0);
    const expectedPath = join(dir, 'truth-disk-0703.raw');
    await writeFile(expectedPath, expected);
    await withVhdiMount(unwrapped3, async (rawDisk) => {
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', rawDisk, expectedPath]);
      expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
    });
    // 7-Zip opens each W2ru as a file name (backslashes kept on Linux) in the folder of the file
    // it was asked to open: both names, as the locators spell them, lead to the parents there.
    for (const [name, target] of [
      ['..\\260701-0100_Image_C\\Image_C_260701-0100.vhd', '../260701-0100_Image_C/Image_C_260701-0100.vhd'],
      ['..\\260702-0100_Image_C\\Image_C_260702-0100.vhdz', '../260702-0100_Image_C/Image_C_260702-0100.vhdz'],
    ] as const) {
      await symlink(target, join(dir, 'unwrapped', '260703-0100_Image_C', name));
    }
    const seven = await sevenZip(unwrapped3, 'vhd');
    expect(seven.code, seven.output).toBe(0);
    expect(firstDifference(seven.disk ?? new Uint8Array(0), expected)).toBe(-1);
    // Bitmaps honoured by hand through the chain, and synthvhd, give the same truth.
    expect(firstDifference(vhdDisk(level3.bytes, vhdDisk(childPlain, vhdDisk(full.bytes))), expected)).toBe(-1);
    expect(firstDifference((await readVolume(level3Path)).bytes, third)).toBe(-1);
  });

  it("VHDX: qemu-img and 7-Zip read the full file as the truth disk; libvhdi reads the VHDXZ child through its locator, whose linkage is the parent's DataWriteGuid", async () => {
    const full = writeUrbackupVhdxImage(truth.volume, truth.used, { random });
    const fullPath = await place('260801-0100_Image_C', 'Image_C_260801-0100.vhdx', full.bytes);
    const check = await run('qemu-img', ['check', '-f', 'vhdx', fullPath]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toContain('No errors were found');
    const qemu = await qemuRaw(fullPath, 'vhdx');
    await expectSyntheticMbr(qemu.subarray(0, 512), SIZE);
    const expectedFull = truthDisk(truth.volume, qemu);
    expect(firstDifference(qemu, expectedFull)).toBe(-1);
    const seven = await sevenZip(fullPath, 'vhdx');
    expect(seven.code, seven.output).toBe(0);
    expect(firstDifference(seven.disk ?? new Uint8Array(0), expectedFull)).toBe(-1);

    const second = truth.volume.slice();
    const changed = [9, 10, 2000, SIZE / CLIENT_BLOCK - 3];
    for (const block of changed) second.fill(0x77, block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const child = writeUrbackupVhdxImage(second, changed, { random, compressed: { codec: 'zstd', shuffle: true }, parent: { path: fullPath, dataWriteGuid: full.dataWriteGuid } });
    const header = containerHeader(child.bytes);
    const records = containerRecords(child.bytes, header);
    expect(records.length).toBeGreaterThan(0);
    expect(records.map((record) => record.mode).filter((mode) => mode !== 2)).toEqual([]);
    // libvhdi joins the child's folder and `absolute_win32_path` (a Linux path, as urBackup writes
    // it): the unwrapped child sits in a folder where that join leads to the parent.
    const folder = await mkdtemp(join(dir, 'vhdx-child-'));
    const [, top] = fullPath.split('/');
    await symlink(`/${top ?? ''}`, join(folder, top ?? ''));
    const unwrapped = join(folder, 'Image_C_260802-0100.vhdx');
    await writeFile(unwrapped, unwrapContainer(child.bytes));
    const info = await runOk('vhdiinfo', [unwrapped]);
    expect(info.stdout).toMatch(/Disk type\s*:\s*Differential/);
    const parentGuid = vhdxGuidText(vhdxDataWriteGuid(full.bytes)).slice(1, -1);
    expect(info.stdout).toMatch(new RegExp(`Parent identifier\\s*:\\s*${parentGuid}\\b`));
    expect(info.stdout).toMatch(new RegExp(`Parent filename\\s*:\\s*${fullPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s`));
    const expectedChild = truthDisk(second, qemu);
    const expectedPath = join(dir, 'truth-disk-0802.raw');
    await writeFile(expectedPath, expectedChild);
    await withVhdiMount(unwrapped, async (rawDisk) => {
      const sector0 = new Uint8Array(512);
      const handle = await open(rawDisk, 'r');
      try {
        await handle.read(sector0, 0, 512, 0);
      } finally {
        await handle.close();
      }
      await expectSyntheticMbr(sector0, SIZE);
      expectedChild.set(sector0, 0); // the child wrote its own MBR (a new random signature)
      await writeFile(expectedPath, expectedChild);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', rawDisk, expectedPath]);
      expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
    });
    const childPath = await place('260802-0100_Image_C', 'Image_C_260802-0100.vhdxz', child.bytes);
    expect(firstDifference((await readVolume(childPath)).bytes, second)).toBe(-1);
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
    // The sector bitmaps resolved up front, so that every extent below is a decoded block's range.
    const bitmapReader = new ImageBytes(opener);
    const volume = await resolveLayoutChains(volumeLayout(opened.disk, IMAGE_VOLUME_OFFSET), (layout) => bitmapReader.read(layout, 0, layout.size)).finally(() => bitmapReader.close());
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

  it('a corrupt block: composing reads no data, so it opens; reading it fails with E_IO naming file and record', async () => {
    // Three container blocks' worth of VHD, so that one other than the last (the footer's) can be damaged.
    const big = makeVolume(8 * MIB, 0.9);
    const good = writeUrbackupImage(big.volume, big.used, { random, compressed: { codec: 'zstd' } });
    const path = await place('260202-0300_Image_C', 'Image_C_260202-0300.vhdz', good);
    const opened = await openImageDisk(path, opener);
    const bitmapReader = new ImageBytes(opener);
    const resolved = await resolveLayoutChains(opened.disk, (layout) => bitmapReader.read(layout, 0, layout.size)).finally(() => bitmapReader.close());
    // Neither the container's first block (the VHD's headers and BAT) nor its last (the footer): opening reads those.
    const header = new DataView(good.bytes.buffer, good.bytes.byteOffset);
    const indexAt = Number(header.getBigInt64(29, true));
    const blocks = Math.ceil(Number(header.getBigInt64(37, true)) / header.getUint32(45, true));
    const headerRecords = [0, blocks - 1].map((block) => Number(header.getBigInt64(indexAt + 8 * block, true)));
    const extent = resolved.extents.find((candidate) => candidate.kind === 'compressed' && !headerRecords.includes(candidate.record));
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
    // Opened afresh: composing reads headers and BATs only, so the disk opens, and the damaged
    // block (which holds sector bitmaps too) fails the reads that need it, naming file and record.
    const again = await openImageDisk(path, opener);
    const fresh = new ImageBytes(opener);
    try {
      await expectError(fresh.read(again.disk, extent.start, 4096), 'E_IO', new RegExp(`Image_C_260202-0300\\.vhdz: block record at ${extent.record}: corrupt compressed block`));
    } finally {
      await fresh.close();
    }
  });

  it('an unknown version and an unknown mode are refused', async () => {
    const bytes = good.bytes.slice();
    bytes.set([0x39], 27); // "1.9"
    await expectError(openImageDisk(await place('260202-0400_Image_C', 'Image_C_260202-0400.vhdz', bytes), opener), 'E_CONTAINER', /unknown version "1.9"/);
  });
});
