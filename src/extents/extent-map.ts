// SPDX-License-Identifier: MIT
/**
 * A Layout as a map for people (docs/architecture.md §10): one row per extent with its range,
 * kind and description, and for a `file` extent the source file and the offset in it; or the
 * one row holding a given offset. `synthvhd inspect --map` prints these rows.
 */
import { chainPaths } from './vhd-chain.js';
import { type Extent, type Layout, extentEnd, findExtentIndex } from './extent.js';

export interface MapRow {
  /** Half-open range [start, end) of the virtual file. */
  readonly start: number;
  readonly end: number;
  readonly kind: Extent['kind'];
  readonly what: string;
  /** `file` extents: the source and the offset in it where this range starts. */
  readonly source?: { readonly path: string; readonly offset: number };
  /** `compressed` extents: the container file, its block record, and where in the decoded block this range starts. */
  readonly block?: { readonly path: string; readonly record: number; readonly skip: number };
  /** `chain` extents: the chain's files (image first) and where in its disk this range starts. */
  readonly chain?: { readonly paths: readonly string[]; readonly diskOffset: number };
}

export function mapRow(extent: Extent): MapRow {
  const row = { start: extent.start, end: extentEnd(extent), kind: extent.kind, what: extent.what };
  if (extent.kind === 'file') return { ...row, source: { path: extent.path, offset: extent.offset } };
  if (extent.kind === 'compressed') return { ...row, block: { path: extent.path, record: extent.record, skip: extent.skip } };
  if (extent.kind === 'chain') return { ...row, chain: { paths: chainPaths(extent.chain), diskOffset: extent.diskOffset } };
  return row;
}

export function mapRows(layout: Layout): MapRow[] {
  return layout.extents.map(mapRow);
}

/** The row holding byte `offset`, or undefined when the layout does not reach it. */
export function mapRowAt(layout: Layout, offset: number): MapRow | undefined {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset >= layout.size) return undefined;
  const extent = layout.extents[findExtentIndex(layout, offset)];
  return extent === undefined ? undefined : mapRow(extent);
}

/**
 * `what`, and where the range starts in its source: `C: .raw @ 524288  (path)` for a `file`
 * range, the block record and offset in the decoded block for a `compressed` one. A range of
 * `self` (the file a structure map describes) at its own offset is just `what`.
 */
export function describeRow(row: MapRow, self?: string): string {
  const { source, block, chain } = row;
  if (block !== undefined) return `${row.what} @ block record ${block.record} + ${block.skip}  (${block.path})`;
  if (chain !== undefined) return `${row.what} @ disk ${chain.diskOffset}, sector bitmaps of ${chain.paths.length} file(s) say which  (${chain.paths[0] ?? ''})`;
  if (source === undefined || (source.path === self && source.offset === row.start)) return row.what;
  return `${row.what} @ ${source.offset}  (${source.path})`;
}

/** Aligned text lines: start, end, kind and description (see describeRow for `self`). */
export function formatMapRows(rows: readonly MapRow[], self?: string): string[] {
  const width = Math.max(5, ...rows.map((row) => String(row.end).length));
  const header = `${'start'.padStart(width)}  ${'end'.padStart(width)}  kind   what`;
  return [
    header,
    ...rows.map((row) => `${String(row.start).padStart(width)}  ${String(row.end).padStart(width)}  ${row.kind.padEnd(5)}  ${describeRow(row, self)}`),
  ];
}
