// SPDX-License-Identifier: MIT
/**
 * A urBackup VHD chain (an image and its parents, child first) read the way urBackup's own
 * reader reads it: a sector comes from the first file of the chain whose block is allocated AND
 * whose sector-bitmap bit is set, else zeros (docs/urbackup-image-formats.md §3, §9). The disk of
 * such a chain is composed from the files' headers and BATs alone (`vhdChainDiskLayout`): blocks
 * no file allocates are `zero` extents, the rest one `chain` extent per run; sector bitmaps are
 * looked up when bytes are read (`resolveChainRange`), by every reader through this one function
 * (the FUSE session has the same rule in native/src/chain_read.cc, and tests hold the two to the
 * same bytes).
 *
 * Pure: bitmaps are read through the caller's `BitmapReader`; a level's bytes are extents of its
 * file (`levelExtents`: a plain file's range, or ranges of decoded blocks of a compressed one).
 */
import { internalError } from '../errors/synthvhd-error.js';
import type { ChainExtent, Layout } from './extent.js';
import { LayoutBuilder } from './layout-builder.js';
import { type CompressedIndex, mapCompressedRange } from './compressed-index.js';
import { bitRuns } from '../util/bit-runs.js';

/** "Virtual Hard Disk Image Format Specification", BAT: an unused entry. */
export const CHAIN_BAT_UNUSED = 0xffffffff;
const SECTOR = 512;

/** One VHD of a chain: what reading it needs, and nothing of its data. */
export interface VhdChainLevel {
  readonly path: string;
  /** The disk size this file stores (footer Current Size): its sectors past it read as zeros. */
  readonly size: number;
  /** BAT: the sector number of each block's bitmap, or CHAIN_BAT_UNUSED. */
  readonly bat: Uint32Array;
  /** Bytes of each block's sector bitmap (the block's data follows it). */
  readonly bitmapSize: number;
  /** The container, when the file is urBackup-compressed (.vhdz). */
  readonly compressed: CompressedIndex | undefined;
}

/** A chain: the image first, then its parents. Every level has the same block size. */
export interface VhdChain {
  readonly levels: readonly VhdChainLevel[];
  /** The disk size (the image's own). */
  readonly size: number;
  readonly blockSize: number;
}

/** The bitmap of block `block` of `chain.levels[level]` (allocated there): at least bitmapSize bytes. */
export type BitmapReader = (level: number, block: number) => Promise<Uint8Array>;

/** The files a chain reads. */
export function chainPaths(chain: VhdChain): string[] {
  return chain.levels.map((level) => level.path);
}

function fileName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/**
 * Appends the extents holding bytes [offset, offset + length) of level `level`'s VHD to `to`: a
 * range of the plain file, or one piece per container block of a compressed one (zeros for a
 * block never written).
 */
export function levelExtents(level: VhdChainLevel, offset: number, length: number, to: LayoutBuilder, what: string): void {
  if (level.compressed === undefined) to.file(level.path, offset, length, what);
  else mapCompressedRange(level.path, level.compressed, offset, length, to, what);
}

/** Where block `block`'s bitmap lies in level `level`'s VHD bytes. */
export function bitmapOffsetOf(level: VhdChainLevel, block: number): number {
  return (level.bat[block] ?? 0) * SECTOR;
}

/** True when some file of the chain stores block `block` (below the disk sizes above it). */
function blockAllocated(chain: VhdChain, block: number): boolean {
  let limit = chain.size;
  const start = block * chain.blockSize;
  for (const level of chain.levels) {
    limit = Math.min(limit, level.size);
    if (start >= limit) return false;
    const entry = level.bat[block];
    if (entry !== undefined && entry !== CHAIN_BAT_UNUSED) return true;
  }
  return false;
}

/**
 * The chain's disk from its BATs alone: zeros where no file allocates a block, one `chain`
 * extent per run of blocks some file allocates. Nothing of any file's data is read.
 */
export function vhdChainDiskLayout(chain: VhdChain, what: string): Layout {
  const builder = new LayoutBuilder();
  const blocks = Math.ceil(chain.size / chain.blockSize);
  let runStart = -1;
  const flush = (end: number): void => {
    if (runStart < 0) return;
    const start = runStart * chain.blockSize;
    builder.chain(chain, start, Math.min(chain.size, end * chain.blockSize) - start, what);
    runStart = -1;
  };
  for (let block = 0; block < blocks; block++) {
    if (blockAllocated(chain, block)) {
      if (runStart < 0) runStart = block;
      continue;
    }
    flush(block);
    const start = block * chain.blockSize;
    builder.zero(Math.min(chain.blockSize, chain.size - start), 'zeros: no file of the chain stores this block');
  }
  flush(blocks);
  return builder.build(chain.size);
}

/**
 * The bytes [diskOffset, diskOffset + length) of the chain's disk as concrete extents (file,
 * compressed, zero) starting at 0, each saying which file and block holds it. Reads the sector
 * bitmaps of the blocks touched through `bitmapOf`, child first, and goes down a level only for
 * the sectors still unresolved (urBackup's VHDFile::Read).
 */
export async function resolveChainRange(chain: VhdChain, diskOffset: number, length: number, bitmapOf: BitmapReader): Promise<Layout> {
  if (diskOffset < 0 || length < 0 || diskOffset + length > chain.size) throw internalError(`chain range ${diskOffset} (+${length}) past ${chain.size}`);
  // Pieces are resolved per block, possibly out of order (a level's sectors before a lower
  // level's): collected, sorted, then appended.
  const pieces: { at: number; add: (to: LayoutBuilder) => void }[] = [];
  const { blockSize } = chain;
  for (let at = diskOffset; at < diskOffset + length; ) {
    const block = Math.floor(at / blockSize);
    const blockStart = block * blockSize;
    const end = Math.min(diskOffset + length, blockStart + blockSize);
    let pending: [number, number][] = [[at, end]];
    for (let index = 0; index < chain.levels.length && pending.length > 0; index++) {
      const level = chain.levels[index];
      if (level === undefined) break;
      // Past this file's disk: zeros from here down (a parent smaller than its child).
      const next: [number, number][] = [];
      for (const [from, to] of pending) {
        if (to <= level.size) next.push([from, to]);
        else {
          if (from < level.size) next.push([from, level.size]);
          const zeroFrom = Math.max(from, level.size);
          pieces.push({ at: zeroFrom, add: (builder) => builder.zero(to - zeroFrom, 'zeros: past the end of the parent image') });
        }
      }
      pending = next;
      const entry = level.bat[block];
      if (entry === undefined || entry === CHAIN_BAT_UNUSED || pending.length === 0) continue;
      const bitmap = await bitmapOf(index, block);
      const dataAt = entry * SECTOR + level.bitmapSize;
      const what = `${fileName(level.path)} VHD block ${block}`;
      const still: [number, number][] = [];
      const runs = bitRuns(bitmap, blockSize / SECTOR, 'msb');
      for (const [from, to] of pending) {
        for (const run of runs) {
          const runFrom = Math.max(from, blockStart + run.start * SECTOR);
          const runTo = Math.min(to, blockStart + (run.start + run.count) * SECTOR);
          if (runFrom >= runTo) continue;
          if (!run.present) {
            still.push([runFrom, runTo]);
            continue;
          }
          const offset = dataAt + (runFrom - blockStart);
          pieces.push({
            at: runFrom,
            add: (builder) => {
              levelExtents(level, offset, runTo - runFrom, builder, what);
            },
          });
        }
      }
      pending = still;
    }
    for (const [from, to] of pending) pieces.push({ at: from, add: (builder) => builder.zero(to - from, 'zeros: no file of the chain holds these sectors') });
    at = end;
  }
  pieces.sort((a, b) => a.at - b.at);
  const builder = new LayoutBuilder();
  for (const piece of pieces) piece.add(builder);
  return builder.build(length);
}

/** The part of a chain extent covering [start, start + length) of the file it is in, resolved. */
export function resolveChainExtent(extent: ChainExtent, skip: number, length: number, bitmapOf: BitmapReader): Promise<Layout> {
  return resolveChainRange(extent.chain, extent.diskOffset + skip, length, bitmapOf);
}

/** Reads a level's bitmap with `readExtents` (the host's reader of concrete extents). */
export function bitmapReaderOf(chain: VhdChain, readExtents: (layout: Layout) => Promise<Uint8Array>): BitmapReader {
  return (levelIndex, block) => {
    const level = chain.levels[levelIndex];
    if (level === undefined) throw internalError(`chain level ${levelIndex}`);
    const builder = new LayoutBuilder();
    levelExtents(level, bitmapOffsetOf(level, block), level.bitmapSize, builder, `${fileName(level.path)} VHD block ${block} sector bitmap`);
    return readExtents(builder.build(level.bitmapSize));
  };
}

/**
 * `layout` with every chain extent resolved into the concrete extents that hold its bytes (the
 * sector bitmaps of every block it covers are read with `readExtents`): what `inspect --map`
 * prints for the exact origin of a range.
 */
export async function resolveLayoutChains(layout: Layout, readExtents: (layout: Layout) => Promise<Uint8Array>): Promise<Layout> {
  if (!layout.extents.some((extent) => extent.kind === 'chain')) return layout;
  const builder = new LayoutBuilder();
  for (const extent of layout.extents) {
    if (extent.kind !== 'chain') {
      builder.append(extent);
      continue;
    }
    const resolved = await resolveChainExtent(extent, 0, extent.length, bitmapReaderOf(extent.chain, readExtents));
    for (const piece of resolved.extents) builder.append(piece);
  }
  return builder.build(layout.size);
}
