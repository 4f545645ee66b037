// SPDX-License-Identifier: MIT
/**
 * Reads a .vhd or .vhdx back into disk extents: the same Layout model the writers produce, over
 * the virtual DISK. Present data becomes `file` extents pointing into the container file, absent
 * or zero blocks become `zero` extents, and for a differencing disk the sectors its bitmaps do not
 * claim come from the parent's Layout (sliced, so a chain of any depth flattens into extents over
 * the real files at the bottom). Pure: the caller passes a read callback (sector bitmaps are read
 * through it) and the parent's Layout; ./open-image.ts does the I/O and walks the chain.
 *
 * Specs: "Virtual Hard Disk Image Format Specification" v1.0 (Microsoft, 2006) for VHD;
 * [MS-VHDX] v20180912 for VHDX. Section names are cited where each rule is applied. Block order
 * in the file does not matter: the BAT is a map (MS-VHDX 2.5), and so is the VHD BAT.
 */
import { bitRuns } from '../util/bit-runs.js';
import { basename } from 'node:path';
import { SynthvhdError, internalError } from '../errors/synthvhd-error.js';
import { type Layout, sliceLayout } from '../extents/extent.js';
import { LayoutBuilder } from '../extents/layout-builder.js';
import { viewOf } from './binary.js';
import type { ParsedContainer, ParsedVhd, ParsedVhdx, ReadFunction } from './inspect.js';
import { VHD_BAT_UNUSED, VHD_SECTOR_SIZE, vhdBitmapSize } from './vhd.js';
import { payloadBatIndex, readVhdxBatEntry, sectorBitmapBatIndex } from './vhdx/bat.js';
import {
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_ZERO,
  SB_BLOCK_PRESENT,
  VHDX_SECTORS_PER_BITMAP_BLOCK,
} from './vhdx/constants.js';

/** The virtual disk's size in bytes (VHD Current Size, VHDX VirtualDiskSize). */
export function containerDiskSize(parsed: ParsedContainer): number {
  return parsed.format === 'vhd' ? parsed.footer.currentSize : parsed.metadata.virtualDiskSize;
}

/** The disk's logical sector size: always 512 for VHD; MS-VHDX 2.6.2.4 for VHDX. */
export function containerSectorSize(parsed: ParsedContainer): number {
  return parsed.format === 'vhd' ? VHD_SECTOR_SIZE : parsed.metadata.logicalSectorSize;
}

/**
 * The disk of `parsed` (a container read from `path`) as extents. `parent` is the parent disk's
 * Layout for a differencing container (required then, ignored otherwise); a parent shorter than
 * the child reads as zeros past its end.
 */
export async function containerDiskLayout(
  parsed: ParsedContainer,
  path: string,
  read: ReadFunction,
  parent: Layout | undefined,
): Promise<Layout> {
  if (parsed.type === 'differencing' && parent === undefined) throw internalError('differencing container without a parent layout');
  const from = new DiskBuilder(basename(path), path, parsed.fileSize, parsed.type === 'differencing' ? parent : undefined);
  if (parsed.format === 'vhd') await readVhd(parsed, read, from);
  else await readVhdx(parsed, read, from);
  return from.builder.build(containerDiskSize(parsed));
}

/**
 * Appends disk ranges from this file, from the parent, or as zeros. This file's ranges are
 * described by the file's name and the block (`disk.vhdx: VHDX payload block 3`); the parent's
 * keep their own descriptions.
 */
class DiskBuilder {
  readonly builder = new LayoutBuilder();

  constructor(
    private readonly name: string,
    private readonly path: string,
    private readonly fileSize: number,
    private readonly parent: Layout | undefined,
  ) {}

  /**
   * [offset, offset + length) of the file. Only a file parsed with `endsAtLastWrite`
   * (src/container/parse-vhdx.ts) has a block that runs past its end: those bytes read as zeros.
   */
  file(offset: number, length: number, what: string): void {
    const inside = Math.max(0, Math.min(length, this.fileSize - offset));
    if (inside > 0) this.builder.file(this.path, offset, inside, `${this.name}: ${what}`);
    if (inside < length) this.builder.zero(length - inside, `zeros: ${what} past the end of ${this.name}, which ends at its last write`);
  }

  zero(length: number, what: string): void {
    this.builder.zero(length, `zeros: ${what} of ${this.name}`);
  }

  /** [start, start + length) of the disk from the parent (zeros past its end, or without one). */
  fromParent(start: number, length: number): void {
    const parent = this.parent;
    if (parent === undefined) {
      this.builder.zero(length, `zeros: no parent for ${this.name}`);
      return;
    }
    const inside = Math.max(0, Math.min(length, parent.size - start));
    for (const extent of sliceLayout(parent, start, inside, 0)) this.builder.append(extent);
    this.builder.zero(length - inside, `zeros: past the end of the parent of ${this.name}`);
  }
}


/** Reads up to `concurrency` bitmaps at once: a differencing disk can have many allocated blocks. */
async function readAll<T>(items: readonly T[], read: (item: T) => Promise<Uint8Array>, concurrency = 64): Promise<Uint8Array[]> {
  const out: Uint8Array[] = new Array<Uint8Array>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      const item = items[index];
      if (item !== undefined) out[index] = await read(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, lane));
  return out;
}

async function readExactly(read: ReadFunction, position: number, length: number, what: string): Promise<Uint8Array> {
  const bytes = await read(position, length);
  if (bytes.length < length) {
    throw new SynthvhdError('E_CONTAINER', `${what}: short read at ${position} (${bytes.length} of ${length} bytes; truncated?)`);
  }
  return bytes;
}

// ---- VHD ----

async function readVhd(parsed: ParsedVhd, read: ReadFunction, to: DiskBuilder): Promise<void> {
  const size = parsed.footer.currentSize;
  if (parsed.type === 'fixed' || parsed.dynamicHeader === undefined) {
    // "Hard Disk Footer Format": a fixed disk is the raw disk followed by the footer.
    to.file(0, size, 'fixed VHD data');
    return;
  }
  const { blockSize } = parsed.dynamicHeader;
  const bitmapSize = vhdBitmapSize(blockSize);
  const sectorsPerBlock = blockSize / VHD_SECTOR_SIZE;
  const bat = viewOf(parsed.bat);
  const blockCount = Math.ceil(size / blockSize);
  const differencing = parsed.type === 'differencing';
  const allocated: number[] = [];
  for (let block = 0; block < blockCount; block++) if (bat.getUint32(block * 4, false) !== VHD_BAT_UNUSED) allocated.push(block);
  // Dynamic disks: the data is read whatever the bitmap says (qemu vpc.c does the same; writers set
  // it all ones). Differencing disks: bit set = sector in this file, clear = in the parent.
  const bitmaps = differencing
    ? await readAll(allocated, (block) => readExactly(read, bat.getUint32(block * 4, false) * VHD_SECTOR_SIZE, bitmapSize, `VHD sector bitmap of block ${block}`))
    : [];
  let nextAllocated = 0;
  for (let block = 0; block < blockCount; block++) {
    const start = block * blockSize;
    const length = Math.min(blockSize, size - start);
    const entry = bat.getUint32(block * 4, false);
    if (entry === VHD_BAT_UNUSED) {
      // "Block Allocation Table": unused blocks read as zeros, or from the parent of a differencing disk.
      if (differencing) to.fromParent(start, length);
      else to.zero(length, `VHD block ${block} (not allocated)`);
      continue;
    }
    const dataOffset = entry * VHD_SECTOR_SIZE + bitmapSize;
    const bitmap = differencing ? bitmaps[nextAllocated++] : undefined;
    if (bitmap === undefined) {
      to.file(dataOffset, length, `VHD block ${block}`);
      continue;
    }
    for (const run of bitRuns(bitmap, Math.min(sectorsPerBlock, Math.ceil(length / VHD_SECTOR_SIZE)), 'msb')) {
      const runStart = run.start * VHD_SECTOR_SIZE;
      const runLength = Math.min(run.count * VHD_SECTOR_SIZE, length - runStart);
      if (run.present) to.file(dataOffset + runStart, runLength, `VHD block ${block}`);
      else to.fromParent(start + runStart, runLength);
    }
  }
}

// ---- VHDX ----

async function readVhdx(parsed: ParsedVhdx, read: ReadFunction, to: DiskBuilder): Promise<void> {
  const { geometry, bat } = parsed;
  const { blockSize, chunkRatio, logicalSectorSize } = geometry;
  const size = parsed.metadata.virtualDiskSize;
  const differencing = parsed.type === 'differencing';
  const sectorsPerBlock = blockSize / logicalSectorSize;
  const bitmapBytesPerBlock = sectorsPerBlock / 8;

  // MS-VHDX 2.5.1.1 PARTIALLY_PRESENT: "the associated sector bitmap block MUST be already
  // allocated and valid". Read the part of it that covers each such block.
  const partial: number[] = [];
  for (let block = 0; block < geometry.dataBlockCount; block++) {
    if (readVhdxBatEntry(bat, payloadBatIndex(block, chunkRatio)).state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) partial.push(block);
  }
  const bitmaps = await readAll(partial, (block) => {
    const chunk = Math.floor(block / chunkRatio);
    const sectorBitmap = readVhdxBatEntry(bat, sectorBitmapBatIndex(chunk, chunkRatio));
    if (sectorBitmap.state !== SB_BLOCK_PRESENT) {
      throw new SynthvhdError('E_CONTAINER', `VHDX BAT: payload block ${block} is PARTIALLY_PRESENT but the sector bitmap of chunk ${chunk} is not present`);
    }
    // MS-VHDX 2.4: one bit per logical sector of the chunk, VHDX_SECTORS_PER_BITMAP_BLOCK bits in all.
    const at = sectorBitmap.fileOffset + (block % chunkRatio) * bitmapBytesPerBlock;
    if (((block % chunkRatio) + 1) * sectorsPerBlock > VHDX_SECTORS_PER_BITMAP_BLOCK) throw internalError('sector bitmap index');
    return readExactly(read, at, bitmapBytesPerBlock, `VHDX sector bitmap of block ${block}`);
  });

  let nextPartial = 0;
  for (let block = 0; block < geometry.dataBlockCount; block++) {
    const start = block * blockSize;
    const length = Math.min(blockSize, size - start);
    const entry = readVhdxBatEntry(bat, payloadBatIndex(block, chunkRatio));
    switch (entry.state) {
      case PAYLOAD_BLOCK_FULLY_PRESENT:
        // MS-VHDX 2.5.1.1: the block is at FileOffsetMB; the sector bitmap is not inspected.
        to.file(entry.fileOffset, length, `VHDX payload block ${block}`);
        break;
      case PAYLOAD_BLOCK_PARTIALLY_PRESENT: {
        const bitmap = bitmaps[nextPartial++];
        if (bitmap === undefined) throw internalError(`no sector bitmap read for block ${block}`);
        for (const run of bitRuns(bitmap, Math.ceil(length / logicalSectorSize), 'lsb')) {
          const runStart = run.start * logicalSectorSize;
          const runLength = Math.min(run.count * logicalSectorSize, length - runStart);
          if (run.present) to.file(entry.fileOffset + runStart, runLength, `VHDX payload block ${block}`);
          else to.fromParent(start + runStart, runLength);
        }
        break;
      }
      case PAYLOAD_BLOCK_NOT_PRESENT:
        // MS-VHDX 2.5.1.1: zeros (a reader may return zeros) in fixed/dynamic; the parent's data in differencing.
        if (differencing) to.fromParent(start, length);
        else to.zero(length, `VHDX payload block ${block} (not present)`);
        break;
      default:
        // ZERO reads as zeros; UNDEFINED and UNMAPPED "return zero data" is one of the allowed
        // behaviours (MS-VHDX 2.5.1.1), and the one that leaks nothing.
        to.zero(length, `VHDX payload block ${block} (${entry.state === PAYLOAD_BLOCK_ZERO ? 'zero' : 'unmapped or undefined'})`);
    }
  }
}
