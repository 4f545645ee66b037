// SPDX-License-Identifier: MIT
/**
 * A Layout as a map for people (docs/architecture.md §10): one row per extent with its range,
 * kind and description, and for a `file` extent the source file and the offset in it; or the
 * one row holding a given offset. `synthvhd inspect --map` prints these rows.
 */
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
}

export function mapRow(extent: Extent): MapRow {
  const row = { start: extent.start, end: extentEnd(extent), kind: extent.kind, what: extent.what };
  if (extent.kind === 'file') return { ...row, source: { path: extent.path, offset: extent.offset } };
  if (extent.kind === 'compressed') return { ...row, block: { path: extent.path, record: extent.record, skip: extent.skip } };
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

/** `what`, and for a `file` range where it starts in its source: `C: .raw @ 524288`. */
export function describeRow(row: MapRow): string {
  if (row.block !== undefined) return `${row.what} @ block record ${row.block.record} + ${row.block.skip}`;
  return row.source === undefined ? row.what : `${row.what} @ ${row.source.offset}`;
}

/** Aligned text lines: start, end, kind, description, and the source path of `file` rows. */
export function formatMapRows(rows: readonly MapRow[]): string[] {
  const width = Math.max(5, ...rows.map((row) => String(row.end).length));
  const header = `${'start'.padStart(width)}  ${'end'.padStart(width)}  kind   what`;
  return [
    header,
    ...rows.map((row) => {
      const line = `${String(row.start).padStart(width)}  ${String(row.end).padStart(width)}  ${row.kind.padEnd(5)}  ${describeRow(row)}`;
      const path = row.source?.path ?? row.block?.path;
      return path === undefined ? line : `${line}  (${path})`;
    }),
  ];
}
