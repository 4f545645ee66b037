// SPDX-License-Identifier: MIT
/**
 * Append-only construction of a Layout (nbdkit's regions pattern): extents can only be added
 * at the current end, gaps are filled with zero extents, adjacent zero extents and adjacent
 * file extents continuing the same source range are merged. So a layout cannot be built out of
 * order, and `build()` only has to check the size.
 */
import { internalError } from '../errors/synthvhd-error.js';
import { type Extent, type Layout, makeLayout } from './extent.js';

export class LayoutBuilder {
  private readonly extents: Extent[] = [];
  private position = 0;

  get size(): number {
    return this.position;
  }

  /** Zeros up to `position` (no-op when already there). */
  zeroTo(position: number): this {
    if (position < this.position) throw internalError(`cannot move back from ${this.position} to ${position}`);
    return position === this.position ? this : this.zero(position - this.position);
  }

  zero(length: number): this {
    if (length === 0) return this;
    const last = this.extents.at(-1);
    if (last?.kind === 'zero') {
      this.extents[this.extents.length - 1] = { kind: 'zero', start: last.start, length: last.length + length };
    } else {
      this.extents.push({ kind: 'zero', start: this.position, length });
    }
    this.position += length;
    return this;
  }

  bytes(data: Uint8Array): this {
    if (data.length === 0) return this;
    this.extents.push({ kind: 'bytes', start: this.position, length: data.length, data });
    this.position += data.length;
    return this;
  }

  file(path: string, offset: number, length: number): this {
    if (length === 0) return this;
    const last = this.extents.at(-1);
    if (last?.kind === 'file' && last.path === path && last.offset + last.length === offset) {
      this.extents[this.extents.length - 1] = { ...last, length: last.length + length };
    } else {
      this.extents.push({ kind: 'file', start: this.position, length, path, offset });
    }
    this.position += length;
    return this;
  }

  /** Appends an extent of any kind, re-based to the current end. */
  append(extent: Extent): this {
    switch (extent.kind) {
      case 'bytes':
        return this.bytes(extent.data);
      case 'file':
        return this.file(extent.path, extent.offset, extent.length);
      case 'zero':
        return this.zero(extent.length);
    }
  }

  build(size = this.position): Layout {
    this.zeroTo(size);
    return makeLayout(this.extents, size);
  }
}
