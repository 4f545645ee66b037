// SPDX-License-Identifier: MIT
/**
 * The extents of a urBackup image backup stored as VHD/VHDX inside urBackup's compressed
 * container (.vhdz/.vhdxz): the three kinds of src/extents/extent.ts plus `compressed`, a range of
 * one decoded container block. Same invariant as extent.ts (sorted, contiguous, non-empty, cover
 * [0, size)); kept apart until the kind joins src/extents/extent.ts (issue #15, phase 2).
 * docs/urbackup-image-formats.md explains the formats.
 */
import { internalError } from '../../errors/synthvhd-error.js';
import type { Extent } from '../../extents/extent.js';

/** Bytes of one block of a urBackup compressed file (.vhdz/.vhdxz), decoded on demand. */
export interface CompressedExtent {
  readonly kind: 'compressed';
  readonly start: number; // in the virtual file, like every extent
  readonly length: number;
  readonly path: string; // the compressed container file
  readonly record: number; // file offset of the block record (uint32 stored size, uint32 mode, payload)
  readonly blockLength: number; // decoded length of that block
  readonly skip: number; // offset inside the decoded block where this extent's bytes begin
}

export type ImageExtent = Extent | CompressedExtent;

export interface ImageLayout {
  readonly size: number;
  readonly extents: readonly ImageExtent[];
}

/** Checks the extent invariant (as makeLayout does) and freezes the result. */
export function makeImageLayout(extents: readonly ImageExtent[], size: number): ImageLayout {
  let position = 0;
  for (const extent of extents) {
    if (extent.start !== position) throw internalError(`extent at ${extent.start} does not follow ${position}`);
    if (!(extent.length > 0) || !Number.isSafeInteger(extent.length)) throw internalError(`extent at ${extent.start} has bad length ${extent.length}`);
    if (extent.kind === 'bytes' && extent.data.length !== extent.length) throw internalError(`bytes extent at ${extent.start}: wrong data length`);
    if (extent.kind === 'compressed' && extent.skip + extent.length > extent.blockLength) {
      throw internalError(`compressed extent at ${extent.start} spans past its block`);
    }
    position += extent.length;
  }
  if (position !== size) throw internalError(`extents cover ${position} bytes, layout size is ${size}`);
  return Object.freeze({ size, extents: Object.freeze([...extents]) });
}

/** Index of the extent holding byte `position` (binary search; 0 <= position < size). */
export function findImageExtentIndex(layout: ImageLayout, position: number): number {
  const { extents } = layout;
  let low = 0;
  let high = extents.length - 1;
  while (low < high) {
    const middle = (low + high + 1) >>> 1;
    const extent = extents[middle];
    if (extent === undefined) throw internalError('extent index out of range');
    if (extent.start <= position) low = middle;
    else high = middle - 1;
  }
  return low;
}

/** The part [start, start + length) of `extent`, re-based to `newStart`. */
export function sliceImageExtent(extent: ImageExtent, start: number, length: number, newStart: number): ImageExtent {
  const skip = start - extent.start;
  if (skip < 0 || skip + length > extent.length || length <= 0) {
    throw internalError(`slice [${start}, +${length}) outside extent [${extent.start}, +${extent.length})`);
  }
  switch (extent.kind) {
    case 'bytes':
      return { kind: 'bytes', start: newStart, length, data: extent.data.subarray(skip, skip + length), what: extent.what };
    case 'file':
      return { kind: 'file', start: newStart, length, path: extent.path, offset: extent.offset + skip, what: extent.what };
    case 'zero':
      return { kind: 'zero', start: newStart, length, what: extent.what };
    case 'compressed':
      return { ...extent, start: newStart, length, skip: extent.skip + skip };
  }
}

/** The extents covering [start, start + length) of `layout`, cut and re-based to `newStart`. */
export function sliceImageLayout(layout: ImageLayout, start: number, length: number, newStart: number): ImageExtent[] {
  const result: ImageExtent[] = [];
  if (length <= 0) return result;
  const end = start + length;
  for (let index = findImageExtentIndex(layout, start); index < layout.extents.length; index++) {
    const extent = layout.extents[index];
    if (extent === undefined || extent.start >= end) break;
    const pieceStart = Math.max(start, extent.start);
    const pieceEnd = Math.min(end, extent.start + extent.length);
    result.push(sliceImageExtent(extent, pieceStart, pieceEnd - pieceStart, newStart + (pieceStart - start)));
  }
  return result;
}

/**
 * Append-only construction (src/extents/layout-builder.ts's rules): adjacent zeros merge, file
 * ranges that continue merge, and compressed ranges that continue inside one block merge.
 */
export class ImageLayoutBuilder {
  private readonly extents: ImageExtent[] = [];
  private position = 0;

  get size(): number {
    return this.position;
  }

  zero(length: number, what: string): this {
    if (length === 0) return this;
    const last = this.extents.at(-1);
    if (last?.kind === 'zero' && last.what === what) this.extents[this.extents.length - 1] = { ...last, length: last.length + length };
    else this.extents.push({ kind: 'zero', start: this.position, length, what });
    this.position += length;
    return this;
  }

  file(path: string, offset: number, length: number, what: string): this {
    if (length === 0) return this;
    const last = this.extents.at(-1);
    if (last?.kind === 'file' && last.path === path && last.offset + last.length === offset && last.what === what) {
      this.extents[this.extents.length - 1] = { ...last, length: last.length + length };
    } else {
      this.extents.push({ kind: 'file', start: this.position, length, path, offset, what });
    }
    this.position += length;
    return this;
  }

  compressed(path: string, record: number, blockLength: number, skip: number, length: number): this {
    if (length === 0) return this;
    const last = this.extents.at(-1);
    if (last?.kind === 'compressed' && last.path === path && last.record === record && last.skip + last.length === skip) {
      this.extents[this.extents.length - 1] = { ...last, length: last.length + length };
    } else {
      this.extents.push({ kind: 'compressed', start: this.position, length, path, record, blockLength, skip });
    }
    this.position += length;
    return this;
  }

  append(extent: ImageExtent): this {
    switch (extent.kind) {
      case 'bytes':
        if (extent.length > 0) {
          this.extents.push({ ...extent, start: this.position });
          this.position += extent.length;
        }
        return this;
      case 'file':
        return this.file(extent.path, extent.offset, extent.length, extent.what);
      case 'zero':
        return this.zero(extent.length, extent.what);
      case 'compressed':
        return this.compressed(extent.path, extent.record, extent.blockLength, extent.skip, extent.length);
    }
  }

  build(size = this.position, what?: string): ImageLayout {
    if (size < this.position) throw internalError(`cannot build ${size} bytes from ${this.position}`);
    if (size > this.position) {
      if (what === undefined) throw internalError(`layout ends at ${this.position}, not ${size}, and the padding has no description`);
      this.zero(size - this.position, what);
    }
    return makeImageLayout(this.extents, size);
  }
}
