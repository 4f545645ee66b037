// SPDX-License-Identifier: MIT
/**
 * The index of a urBackup compressed container (docs/urbackup-image-formats.md §2) and where a
 * range of the wrapped file's bytes lies in it: one piece per container block, zeros for a block
 * never written. The one mapping for opening images (src/urbackup/images/compressed-file.ts) and
 * for reading VHD chains (./vhd-chain.ts).
 */
import { SynthvhdError } from '../errors/synthvhd-error.js';

/** A block never written: it reads as zeros (CompressedFile::fillCache). */
export const ZERO_BLOCK = -1;

export interface CompressedIndex {
  /** Decoded bytes per container block (2 MiB as urBackup writes). */
  readonly blockSize: number;
  /** Bytes of the wrapped VHD/VHDX. */
  readonly logicalSize: number;
  /** What the last container block decodes to. */
  readonly lastBlockLength: number;
  /** The record offset of each container block; ZERO_BLOCK for a block never written. */
  readonly offsets: readonly number[];
}

/** Receives the pieces of a logical range: a range of one decoded block, or zeros. */
export interface CompressedSink {
  compressed(path: string, record: number, blockLength: number, skip: number, length: number, what: string): unknown;
  zero(length: number, what: string): unknown;
}

/** The decoded length of container block `block`: blockSize, except the last one. */
export function indexBlockLength(index: CompressedIndex, block: number): number {
  return block === index.offsets.length - 1 ? index.lastBlockLength : index.blockSize;
}

/**
 * Appends logical bytes [offset, offset + length) of the file `path` wraps to `to`: one piece per
 * container block touched (a piece never spans two blocks), zeros for ZERO_BLOCK entries.
 */
export function mapCompressedRange(path: string, index: CompressedIndex, offset: number, length: number, to: CompressedSink, what: string): void {
  if (offset < 0 || offset + length > index.logicalSize) {
    throw new SynthvhdError('E_CONTAINER', `${path}: range ${offset} (+${length}) is past the end of the wrapped file (${index.logicalSize} bytes)`);
  }
  for (let at = offset; at < offset + length; ) {
    const block = Math.floor(at / index.blockSize);
    const skip = at - block * index.blockSize;
    const count = Math.min(offset + length - at, index.blockSize - skip);
    const record = index.offsets[block] ?? ZERO_BLOCK;
    if (record === ZERO_BLOCK) to.zero(count, `zeros: ${what} (an all-zero block of the compressed file)`);
    else to.compressed(path, record, indexBlockLength(index, block), skip, count, what);
    at += count;
  }
}
