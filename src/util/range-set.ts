// SPDX-License-Identifier: MIT
/**
 * A union of half-open ranges [start, start + length), built by adding ranges in any order and
 * read once as sorted, disjoint, non-touching ranges. Linear when ranges arrive in order (a
 * chain's BAT walk does), O(n log n) otherwise: the ranges are collected and sorted once at the
 * end, never re-sorted per insert. A million 512 KiB blocks of a 500 GB VHD is a million ranges.
 *
 * Starts and ends are kept in two Float64Arrays: the union of intervals depends only on the
 * multiset of starts and the multiset of ends, so out-of-order input sorts each array on its own
 * (a native numeric sort) and one sweep counting open ranges gives the union.
 */
import { SynthvhdError } from '../errors/synthvhd-error.js';

export type Range = readonly [start: number, length: number];

const INITIAL_CAPACITY = 64;

export class RangeSet {
  private starts = new Float64Array(INITIAL_CAPACITY);
  private ends = new Float64Array(INITIAL_CAPACITY);
  private count = 0;
  /** Every start so far is >= the one before it (the linear path). */
  private inOrder = true;
  private built: Range[] | undefined;

  /** Adds [start, start + length); an empty or negative length adds nothing. */
  add(start: number, length: number): this {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || !Number.isSafeInteger(start + length)) {
      throw new SynthvhdError('E_INTERNAL', `internal error (please report): range ${start} (+${length})`);
    }
    if (length <= 0) return this;
    if (this.count === this.starts.length) this.grow();
    if (this.count > 0 && start < (this.starts[this.count - 1] ?? 0)) this.inOrder = false;
    this.starts[this.count] = start;
    this.ends[this.count] = start + length;
    this.count++;
    this.built = undefined;
    return this;
  }

  /** The union as sorted, disjoint ranges; touching ranges are joined. */
  ranges(): Range[] {
    this.built ??= this.inOrder ? this.mergeInOrder() : this.sweep();
    return this.built;
  }

  private grow(): void {
    const starts = new Float64Array(this.starts.length * 2);
    const ends = new Float64Array(this.ends.length * 2);
    starts.set(this.starts);
    ends.set(this.ends);
    this.starts = starts;
    this.ends = ends;
  }

  private mergeInOrder(): Range[] {
    const out: Range[] = [];
    let from = -1;
    let to = -1;
    for (let index = 0; index < this.count; index++) {
      const start = this.starts[index] ?? 0;
      const end = this.ends[index] ?? 0;
      if (from >= 0 && start <= to) {
        if (end > to) to = end;
        continue;
      }
      if (from >= 0) out.push([from, to - from]);
      from = start;
      to = end;
    }
    if (from >= 0) out.push([from, to - from]);
    return out;
  }

  /** Sorted starts and sorted ends; at equal positions a start comes first, so touching ranges join. */
  private sweep(): Range[] {
    const starts = this.starts.subarray(0, this.count).sort();
    const ends = this.ends.subarray(0, this.count).sort();
    const out: Range[] = [];
    let open = 0;
    let from = 0;
    let next = 0;
    for (let closed = 0; closed < this.count; ) {
      const start = starts[next];
      const end = ends[closed] ?? 0;
      if (start !== undefined && next < this.count && start <= end) {
        if (open === 0) from = start;
        open++;
        next++;
      } else {
        open--;
        closed++;
        if (open === 0) out.push([from, end - from]);
      }
    }
    // Keep the union itself: sorted and disjoint, so later adds in order stay on the linear path.
    out.forEach(([start, length], index) => {
      this.starts[index] = start;
      this.ends[index] = start + length;
    });
    this.count = out.length;
    this.inOrder = true;
    return out;
  }
}

/** The union of `ranges` (any order) as sorted, disjoint, non-touching ranges. */
export function unionOfRanges(ranges: Iterable<Range>): Range[] {
  const set = new RangeSet();
  for (const [start, length] of ranges) set.add(start, length);
  return set.ranges();
}
