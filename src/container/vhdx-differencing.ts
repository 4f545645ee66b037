// SPDX-License-Identifier: MIT
/**
 * A differencing VHDX as a Layout: the child that holds given ranges of a new disk's content on
 * top of an unchanged parent VHDX (what `blocklist copy` writes, the Linux side of
 * VhdBlockBackup's `--copy`). Pure: the content is a Layout (usually `file` extents into the
 * source image's data, so nothing is copied until the layout is written).
 *
 * Spec: [MS-VHDX] v20180912 (docs/containers.md §4):
 * - File Parameters HasParent = 1 and a Parent Locator item (2.6.2.1, 2.6.2.6): LocatorType
 *   B04AEFB7-D19E-4A81-B789-25B8E9445913, `parent_linkage` = the parent's DataWriteGuid as a
 *   lowercase braced string, `relative_path`, `absolute_win32_path` (2.6.2.6.3).
 * - The BAT has SectorBitmapBlockCount * (ChunkRatio + 1) entries (2.5).
 * - A payload block the ranges cover entirely is PAYLOAD_BLOCK_FULLY_PRESENT; one they cover in
 *   part is PAYLOAD_BLOCK_PARTIALLY_PRESENT and the sector bitmap of its chunk says which sectors
 *   are in this file (bit = 1) and which come from the parent (0), LSB-first (2.4, 2.5.1.1).
 *   Blocks not touched stay PAYLOAD_BLOCK_NOT_PRESENT: "the parent ... SHOULD be inspected".
 * - Block size and logical sector size are the parent's (2.6.2.4: they MUST be the same; DiscUtils
 *   does the same for the block size: docs/containers.md §4.1).
 * - The Virtual Disk ID (Page 83 Data, 2.6.2.3) is the parent's: the child is the same virtual
 *   disk in a newer state, as in Hyper-V checkpoint chains [Inferred; not testable here].
 *
 * libvhdi (20210425, the reader our tests use) finds a differencing block's sector bitmap from the
 * chunk's sector bitmap BAT entry for every block it reads, present or not, and does not check
 * that entry's state (libvhdi_block_allocation_table.c, read_element_data): a chunk without a
 * sector bitmap block would make it read the file's first bytes as a bitmap. Measured: without
 * them vhdimount served wrong bytes from the second 4 GiB chunk of a 10 GiB diff (the case
 * test/blocklist-readers.test.ts keeps). So every chunk that holds any part of the disk gets a
 * sector bitmap block here (1 MiB per 2^23 sectors = 4 GiB of
 * a 512-byte-sector disk: 0.02 % of the disk size, and a hole when written). Windows does not need
 * them; they are valid per MS-VHDX (SB_BLOCK_PRESENT, all bits of untouched blocks zero).
 */
import { internalError } from '../errors/synthvhd-error.js';
import { type Extent, type Layout, sliceLayout } from '../extents/extent.js';
import { guidToBracedLowercase } from './guid.js';
import { payloadBatIndex, sectorBitmapBatIndex, vhdxBatGeometry, writeVhdxBatEntry } from './vhdx/bat.js';
import {
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  SB_BLOCK_PRESENT,
  VHDX_BAT_ENTRY_SIZE,
  VHDX_SECTOR_BITMAP_BLOCK_SIZE,
} from './vhdx/constants.js';
import { encodeVhdxParentLocator } from './vhdx/parent-locator.js';
import { type VhdxFileBlock, assembleVhdxLayout, vhdxPayloadStart } from './vhdx.js';

/** A byte range of the virtual disk. */
export interface DiskRange {
  readonly start: number;
  readonly length: number;
}

export interface DifferencingVhdxSpec {
  /** The parent's VirtualDiskSize, BlockSize, LogicalSectorSize, Page 83 Data and DataWriteGuid. */
  readonly virtualDiskSize: number;
  readonly blockSize: number;
  readonly logicalSectorSize: number;
  readonly page83: Uint8Array;
  readonly parentDataWriteGuid: Uint8Array;
  /**
   * MS-VHDX 2.6.2.6.3 `relative_path` (separator `\`) and, when Windows' path of the parent is
   * known, `absolute_win32_path` (`\\?\C:\…` or `\\?\UNC\…`, ./windows-path.ts); a Linux path
   * is never written there.
   */
  readonly relativePath: string;
  readonly absoluteWin32Path: string | undefined;
  /** This file's FileWriteGuid and DataWriteGuid ('ms' byte order). */
  readonly fileWriteGuid: Uint8Array;
  readonly dataWriteGuid: Uint8Array;
  /** The disk ranges this file holds: sorted, non-overlapping, sector-aligned, inside the disk. */
  readonly ranges: readonly DiskRange[];
  /** The new disk: the child's data in `ranges` is read from here. */
  readonly content: Layout;
}

export interface DifferencingVhdxLayout {
  readonly layout: Layout;
  readonly fullyPresentBlocks: number;
  readonly partiallyPresentBlocks: number;
  readonly sectorBitmapBlocks: number;
}

/** The parent locator item: parent_linkage first (the one required key), then the paths. */
export function differencingParentLocator(parentDataWriteGuid: Uint8Array, relativePath: string, absoluteWin32Path: string | undefined): Uint8Array {
  return encodeVhdxParentLocator([
    ['parent_linkage', guidToBracedLowercase(parentDataWriteGuid, 'ms')],
    ['relative_path', relativePath],
    ...(absoluteWin32Path === undefined ? [] : [['absolute_win32_path', absoluteWin32Path] as const]),
  ]);
}

export interface DifferencingVhdxOptions {
  /** A sector bitmap block for every chunk, not only for chunks with partial blocks (default true: libvhdi needs it; see the file comment). */
  readonly everyChunkBitmap?: boolean;
}

export function buildDifferencingVhdxLayout(spec: DifferencingVhdxSpec, options: DifferencingVhdxOptions = {}): DifferencingVhdxLayout {
  const everyChunkBitmap = options.everyChunkBitmap ?? true;
  const { blockSize, logicalSectorSize, virtualDiskSize: diskSize } = spec;
  if (spec.content.size !== diskSize) throw internalError(`content is ${spec.content.size} bytes, the disk ${diskSize}`);
  const geometry = vhdxBatGeometry(diskSize, blockSize, logicalSectorSize, true);
  const { chunkRatio } = geometry;
  const sectorsPerBlock = blockSize / logicalSectorSize;
  const bitmapBytesPerBlock = sectorsPerBlock / 8;

  // The ranges each touched payload block holds, clipped to the block.
  const perBlock = new Map<number, DiskRange[]>();
  let previousEnd = 0;
  for (const range of spec.ranges) {
    const end = range.start + range.length;
    if (range.start < previousEnd || range.length <= 0 || end > diskSize || range.start % logicalSectorSize !== 0 || (end % logicalSectorSize !== 0 && end !== diskSize)) {
      throw internalError(`differencing range [${range.start}, +${range.length}) is not sorted, sector-aligned and inside the disk`);
    }
    previousEnd = end;
    for (let block = Math.floor(range.start / blockSize); block * blockSize < end; block++) {
      const from = Math.max(range.start, block * blockSize);
      const to = Math.min(end, (block + 1) * blockSize);
      const list = perBlock.get(block) ?? [];
      list.push({ start: from, length: to - from });
      perBlock.set(block, list);
    }
  }

  const bat = new Uint8Array(geometry.entryCount * VHDX_BAT_ENTRY_SIZE);
  const batView = new DataView(bat.buffer);
  const blocks: VhdxFileBlock[] = [];
  let nextOffset = vhdxPayloadStart(geometry);
  let fullyPresentBlocks = 0;
  let partiallyPresentBlocks = 0;
  let sectorBitmapBlocks = 0;
  for (let chunk = 0; chunk < geometry.sectorBitmapBlockCount; chunk++) {
    const bitmapExtents: Extent[] = [];
    const payloads: { block: number; state: number; extents: Extent[] }[] = [];
    const firstBlock = chunk * chunkRatio;
    const lastBlock = Math.min(geometry.dataBlockCount, firstBlock + chunkRatio);
    for (let block = firstBlock; block < lastBlock; block++) {
      const ranges = perBlock.get(block);
      if (ranges === undefined) continue; // PAYLOAD_BLOCK_NOT_PRESENT (0): from the parent
      const blockStart = block * blockSize;
      const blockLength = Math.min(blockSize, diskSize - blockStart);
      if (ranges.reduce((sum, range) => sum + range.length, 0) === blockLength) {
        payloads.push({ block, state: PAYLOAD_BLOCK_FULLY_PRESENT, extents: sliceLayout(spec.content, blockStart, blockLength, 0) });
        fullyPresentBlocks++;
        continue;
      }
      // Present sectors carry the new data; the others are never read (their bit is 0): zeros.
      const fromParent = 'zeros: sectors the parent holds (bitmap bit 0)';
      const extents: Extent[] = [];
      const bits = new Uint8Array(bitmapBytesPerBlock);
      let position = 0;
      for (const range of ranges) {
        const offset = range.start - blockStart;
        if (offset > position) extents.push({ kind: 'zero', start: position, length: offset - position, what: fromParent });
        extents.push(...sliceLayout(spec.content, range.start, range.length, offset));
        position = offset + range.length;
        setBits(bits, offset / logicalSectorSize, Math.ceil(range.length / logicalSectorSize));
      }
      if (position < blockLength) extents.push({ kind: 'zero', start: position, length: blockLength - position, what: fromParent });
      bitmapExtents.push({ kind: 'bytes', start: (block - firstBlock) * bitmapBytesPerBlock, length: bits.length, data: bits, what: `VHDX sector bitmap of payload block ${block}` });
      payloads.push({ block, state: PAYLOAD_BLOCK_PARTIALLY_PRESENT, extents });
      partiallyPresentBlocks++;
    }
    // The chunk's sector bitmap block first (MS-VHDX 2.5.1.1: it MUST be allocated when a block
    // of the chunk is PARTIALLY_PRESENT; see the file comment for why every chunk gets one).
    if (everyChunkBitmap || bitmapExtents.length > 0) {
      writeVhdxBatEntry(batView, sectorBitmapBatIndex(chunk, chunkRatio), SB_BLOCK_PRESENT, nextOffset);
      blocks.push({ fileOffset: nextOffset, length: VHDX_SECTOR_BITMAP_BLOCK_SIZE, extents: withGaps(bitmapExtents) });
      nextOffset += VHDX_SECTOR_BITMAP_BLOCK_SIZE;
      sectorBitmapBlocks++;
    }
    // Then its payload blocks, in disk order, 1 MiB-aligned (BlockSize is a multiple of 1 MiB).
    for (const payload of payloads) {
      writeVhdxBatEntry(batView, payloadBatIndex(payload.block, chunkRatio), payload.state, nextOffset);
      blocks.push({ fileOffset: nextOffset, length: blockSize, extents: payload.extents });
      nextOffset += blockSize;
    }
  }
  const layout = assembleVhdxLayout({
    geometry,
    virtualDiskSize: diskSize,
    fileWriteGuid: spec.fileWriteGuid,
    dataWriteGuid: spec.dataWriteGuid,
    page83: spec.page83,
    parentLocator: differencingParentLocator(spec.parentDataWriteGuid, spec.relativePath, spec.absoluteWin32Path),
    bat,
    blocks,
  });
  return { layout, fullyPresentBlocks, partiallyPresentBlocks, sectorBitmapBlocks };
}

/** Sets `count` bits from bit `first`, LSB-first (MS-VHDX 2.4). */
function setBits(bits: Uint8Array, first: number, count: number): void {
  let bit = first;
  const end = first + count;
  while (bit < end && (bit & 7) !== 0) {
    bits[bit >>> 3] = (bits[bit >>> 3] ?? 0) | (1 << (bit & 7));
    bit++;
  }
  while (bit + 8 <= end) {
    bits[bit >>> 3] = 0xff;
    bit += 8;
  }
  while (bit < end) {
    bits[bit >>> 3] = (bits[bit >>> 3] ?? 0) | (1 << (bit & 7));
    bit++;
  }
}

/** Sorted `bytes` extents with zero extents between them, starting at 0. */
function withGaps(extents: readonly Extent[]): Extent[] {
  const out: Extent[] = [];
  let position = 0;
  for (const extent of extents) {
    if (extent.start > position) out.push({ kind: 'zero', start: position, length: extent.start - position, what: 'zeros: sector bitmap of blocks not in this file' });
    out.push(extent);
    position = extent.start + extent.length;
  }
  return out;
}
