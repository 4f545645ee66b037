// SPDX-License-Identifier: MIT
/**
 * Append-only construction of a Layout (nbdkit's regions pattern): extents can only be added
 * at the current end, gaps are filled with zero extents, adjacent zero extents and adjacent
 * file extents continuing the same source range are merged when they have the same
 * description. So a layout cannot be built out of order, and `build()` only has to check the
 * size. Every method takes the description (`what`, src/extents/extent.ts) of what it adds.
 */
import type { VhdChain } from './vhd-chain.js';
import { internalError } from '../errors/synthvhd-error.js';
import { type Extent, type Layout, makeLayout } from './extent.js';

export class LayoutBuilder {
  private readonly extents: Extent[] = [];
  private position = 0;

  get size(): number {
    return this.position;
  }

  /** Zeros up to `position` (no-op when already there). */
  zeroTo(position: number, what: string): this {
    if (position < this.position) throw internalError(`cannot move back from ${this.position} to ${position}`);
    return position === this.position ? this : this.zero(position - this.position, what);
  }

  zero(length: number, what: string): this {
    if (length === 0) return this;
    const last = this.extents.at(-1);
    if (last?.kind === 'zero' && last.what === what) {
      this.extents[this.extents.length - 1] = { ...last, length: last.length + length };
    } else {
      this.extents.push({ kind: 'zero', start: this.position, length, what });
    }
    this.position += length;
    return this;
  }

  bytes(data: Uint8Array, what: string): this {
    if (data.length === 0) return this;
    this.extents.push({ kind: 'bytes', start: this.position, length: data.length, data, what });
    this.position += data.length;
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

  /** Bytes [skip, skip + length) of a decoded compressed block (src/extents/extent.ts). */
  compressed(path: string, record: number, blockLength: number, skip: number, length: number, what: string): this {
    if (length === 0) return this;
    const last = this.extents.at(-1);
    if (last?.kind === 'compressed' && last.path === path && last.record === record && last.skip + last.length === skip && last.what === what) {
      this.extents[this.extents.length - 1] = { ...last, length: last.length + length };
    } else {
      this.extents.push({ kind: 'compressed', start: this.position, length, path, record, blockLength, skip, what });
    }
    this.position += length;
    return this;
  }

  /** Bytes [diskOffset, diskOffset + length) of a VHD chain's disk (./vhd-chain.ts). */
  chain(chain: VhdChain, diskOffset: number, length: number, what: string): this {
    if (length === 0) return this;
    const last = this.extents.at(-1);
    if (last?.kind === 'chain' && last.chain === chain && last.diskOffset + last.length === diskOffset && last.what === what) {
      this.extents[this.extents.length - 1] = { ...last, length: last.length + length };
    } else {
      this.extents.push({ kind: 'chain', start: this.position, length, chain, diskOffset, what });
    }
    this.position += length;
    return this;
  }

  /** Appends an extent of any kind, re-based to the current end, with its description. */
  append(extent: Extent): this {
    switch (extent.kind) {
      case 'bytes':
        return this.bytes(extent.data, extent.what);
      case 'file':
        return this.file(extent.path, extent.offset, extent.length, extent.what);
      case 'zero':
        return this.zero(extent.length, extent.what);
      case 'compressed':
        return this.compressed(extent.path, extent.record, extent.blockLength, extent.skip, extent.length, extent.what);
      case 'chain':
        return this.chain(extent.chain, extent.diskOffset, extent.length, extent.what);
    }
  }

  /** The layout; a `size` beyond the current end is padded with zeros described by `what`. */
  build(size = this.position, what?: string): Layout {
    if (size > this.position) {
      if (what === undefined) throw internalError(`layout ends at ${this.position}, not ${size}, and the padding has no description`);
      this.zeroTo(size, what);
    }
    return makeLayout(this.extents, size);
  }
}
