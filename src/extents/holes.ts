// SPDX-License-Identifier: MIT
/**
 * Splits `file` extents over the holes of their source file into `zero` extents (docs/architecture.md
 * §6: a file extent whose source range is a hole may be split into zero extents when the
 * consumer benefits). Blocklist hashing benefits most: a zero extent is never read. Pure: the
 * caller finds the data ranges (SEEK_DATA/SEEK_HOLE, src/native/native.ts `dataRanges`).
 */
import type { Layout } from './extent.js';
import { LayoutBuilder } from './layout-builder.js';

/** [offset, length] runs of a file that hold data, sorted and non-overlapping; the rest are holes. */
export type FileDataRanges = readonly (readonly [offset: number, length: number])[];

/**
 * `layout` with every `file` extent of `path` cut to the parts that lie in `ranges`; the parts in
 * holes become `zero` extents (`zeros: hole in <what>`). Extents of other files are kept as they are.
 */
export function punchHoles(layout: Layout, path: string, ranges: FileDataRanges): Layout {
  if (!layout.extents.some((extent) => extent.kind === 'file' && extent.path === path)) return layout;
  const builder = new LayoutBuilder();
  for (const extent of layout.extents) {
    if (extent.kind !== 'file' || extent.path !== path) {
      builder.append(extent);
      continue;
    }
    const end = extent.offset + extent.length;
    const hole = `zeros: hole in ${extent.what}`;
    let position = extent.offset;
    for (let index = firstRangeEndingAfter(ranges, position); index < ranges.length && position < end; index++) {
      const range = ranges[index];
      if (range === undefined) break;
      const [offset, length] = range;
      if (offset >= end) break;
      const from = Math.max(position, offset);
      const to = Math.min(end, offset + length);
      if (to <= from) continue;
      builder.zero(from - position, hole).file(path, from, to - from, extent.what);
      position = to;
    }
    builder.zero(end - position, hole);
  }
  return builder.build(layout.size);
}

/** Index of the first range whose end is after `position` (binary search). */
function firstRangeEndingAfter(ranges: FileDataRanges, position: number): number {
  let low = 0;
  let high = ranges.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    const range = ranges[middle];
    if (range !== undefined && range[0] + range[1] <= position) low = middle + 1;
    else high = middle;
  }
  return low;
}
