// SPDX-License-Identifier: MIT
/**
 * The range set (src/util/range-set.ts) against independent oracles: a bitmap over a small
 * universe for random input, arithmetic for a million ranges; and backup-run diffs
 * (changedSince) over a chain whose files hold hundreds of thousands of disjoint ranges, which
 * the per-insert re-sort it replaced could not finish (issue 19, finding 2).
 */
import { describe, expect, it } from 'vitest';
import { type Range, RangeSet } from '../src/util/range-set.js';
import { changedSince } from '../src/urbackup/images/load-image-volume.js';
import type { ChainLevel } from '../src/urbackup/images/open-image-backup.js';
import { seededRandom } from '../fixtures/urbackup-images.js';

/** Sorted, disjoint, not touching, each non-empty. */
function expectCanonical(ranges: readonly Range[]): void {
  for (let index = 0; index < ranges.length; index++) {
    const [start, length] = ranges[index] ?? [0, 0];
    expect(length).toBeGreaterThan(0);
    const previous = ranges[index - 1];
    if (previous !== undefined) expect(start).toBeGreaterThan(previous[0] + previous[1]);
  }
}

/** Fisher-Yates with a seeded generator. */
function shuffled(items: Uint32Array, random: () => number): Uint32Array {
  const out = items.slice();
  for (let index = out.length - 1; index > 0; index--) {
    const other = Math.floor(random() * (index + 1));
    const swap = out[index] ?? 0;
    out[index] = out[other] ?? 0;
    out[other] = swap;
  }
  return out;
}

describe('RangeSet', () => {
  it('random ranges over a small universe: the union is exactly the bits a bitmap sets', () => {
    const random = seededRandom(19);
    const universe = 2000;
    for (let round = 0; round < 200; round++) {
      const bits = new Uint8Array(universe);
      const set = new RangeSet();
      const count = 1 + Math.floor(random() * 60);
      for (let index = 0; index < count; index++) {
        const start = Math.floor(random() * universe);
        const length = Math.floor(random() * Math.min(80, universe - start + 1));
        bits.fill(1, start, start + length);
        set.add(start, length);
        // Read part-way sometimes: adding after reading keeps the union right.
        if (random() < 0.1) set.ranges();
      }
      const ranges = set.ranges();
      expectCanonical(ranges);
      const fromRanges = new Uint8Array(universe);
      for (const [start, length] of ranges) fromRanges.fill(1, start, start + length);
      expect(Buffer.from(fromRanges).equals(Buffer.from(bits))).toBe(true);
    }
  });

  it('a million ranges, in order and shuffled: disjoint ones stay a million, touching ones become one', () => {
    const count = 1_000_000;
    const block = 512 * 1024;
    const random = seededRandom(7);
    const inOrder = Uint32Array.from({ length: count }, (_, index) => index);
    const order = shuffled(inOrder, random);
    for (const indices of [inOrder, order]) {
      // Every other 512 KiB block: a million separate ranges.
      const disjoint = new RangeSet();
      for (const index of indices) disjoint.add(2 * index * block, block);
      const ranges = disjoint.ranges();
      expect(ranges.length).toBe(count);
      let wrong = 0;
      ranges.forEach(([start, length], index) => {
        if (start !== 2 * index * block || length !== block) wrong++;
      });
      expect(wrong).toBe(0);
      // Consecutive blocks (a 500 GB disk wholly written): one range.
      const touching = new RangeSet();
      for (const index of indices) touching.add(index * block, block);
      expect(touching.ranges()).toEqual([[0, count * block]]);
      // Overlapping: [i·B, 2B) for every even i.
      const overlapping = new RangeSet();
      for (const index of indices) if (index % 2 === 0) overlapping.add(index * block, 2 * block);
      expect(overlapping.ranges()).toEqual([[0, count * block]]);
    }
  });

  it('refuses a range that is not a safe non-negative integer range', () => {
    expect(() => new RangeSet().add(-1, 5)).toThrow(/internal error/);
    expect(() => new RangeSet().add(0.5, 5)).toThrow(/internal error/);
    expect(() => new RangeSet().add(Number.MAX_SAFE_INTEGER, 5)).toThrow(/internal error/);
  });
});

describe('backup-run diffs over a chain with many own ranges', () => {
  it('changedSince over 300 000 disjoint ranges in three files gives every range (the old per-insert re-sort threw RangeError)', async () => {
    const sector = 4096;
    const perFile = 100_000;
    const level = (path: string, parent: ChainLevel | undefined, phase: number): ChainLevel => ({
      path,
      format: 'vhd',
      compressed: false,
      type: parent === undefined ? 'dynamic' : 'differencing',
      size: 4 * perFile * 2 * sector,
      // File `phase` wrote sector 4k+phase... of every 4 (sectors 2k apart, so none touch).
      ownRanges: () => Promise.resolve(Array.from({ length: perFile }, (_, index): Range => [(8 * index + 2 * phase) * sector, sector])),
      identity: new Uint8Array(16),
      timeStamp: 0,
      parent,
    });
    const base = level('/b/full.vhd', undefined, 3);
    const chain = level('/b/c.vhd', level('/b/b.vhd', level('/b/a.vhd', base, 0), 1), 2);
    const volumeLength = 4 * perFile * 2 * sector;
    const ranges = await changedSince({ disk: chain, volumeOffset: 0, volumeLength }, '/b/full.vhd');
    expect(ranges).toBeDefined();
    expect(ranges?.length).toBe(3 * perFile);
    let wrong = 0;
    (ranges ?? []).forEach(([start, length], index) => {
      const expected = (8 * Math.floor(index / 3) + 2 * (index % 3)) * sector;
      if (start !== expected || length !== sector) wrong++;
    });
    expect(wrong).toBe(0);
  });
});
