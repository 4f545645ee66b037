// SPDX-License-Identifier: MIT
/**
 * `synthvhd inspect --map FILE|BACKUP [--offset N] [--json]`: where every byte comes from
 * (docs/architecture.md §10).
 *
 * - A .vhd/.vhdx file: what its own structures say (src/container/structure-map.ts), by file
 *   offset. When the file is a whole disk served by a live synthvhd mount, also the layout the
 *   mount composes for it and the disk inside, with the source of every range.
 * - A backup folder (or its `.raw`): the composed disk and both containers it is served as.
 *
 * With `--offset N`, only the range holding byte N of each map.
 */
import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { composeDiskFor, resolveSource } from '../../catalog/catalog.js';
import { containerLayout, offeredFiles } from '../../catalog/virtual-files.js';
import { containerStructureMap } from '../../container/structure-map.js';
import { parseContainerFile } from '../../container/read-container-file.js';
import type { ComposedDisk } from '../../disk/compose-disk.js';
import { fileError } from '../../errors/synthvhd-error.js';
import { type Layout, extentEnd, findExtentIndex, sliceExtent } from '../../extents/extent.js';
import { type MapRow, describeRow, formatMapRows, mapRow, mapRowAt, mapRows } from '../../extents/extent-map.js';
import { chainBitmaps } from '../../extents/read-at.js';
import { SourceFiles } from '../../extents/source-files.js';
import { resolveChainExtent } from '../../extents/vhd-chain.js';
import { resolveServedPath } from '../../fuse/served-path.js';

export interface InspectMapOptions {
  readonly json?: boolean;
  readonly offset?: string;
}

interface NamedMap {
  /** `file`, `disk`, `vhdx`, `vhd`. */
  readonly name: string;
  readonly title: string;
  readonly layout: Layout;
  /** The file a structure map describes (its rows are ranges of it at their own offsets). */
  readonly self?: string;
}

/** A byte offset: decimal or 0x-hexadecimal, a safe non-negative integer. */
export function parseOffset(text: string): number {
  const value = /^0x[0-9a-f]+$/i.test(text) ? Number.parseInt(text.slice(2), 16) : /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < 0) throw fileError('E_USAGE', '--offset', `${text} is not a byte offset (decimal or 0x hex)`);
  return value;
}

export async function inspectMapCommand(target: string, options: InspectMapOptions): Promise<void> {
  const path = resolve(target);
  const offset = options.offset === undefined ? undefined : parseOffset(options.offset);
  let isBackup: boolean;
  try {
    isBackup = (await stat(path)).isDirectory() || path.endsWith('.raw');
  } catch (error) {
    throw fileError('E_USAGE', path, `cannot open: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, error);
  }
  const maps = isBackup ? await backupMaps(path) : await fileMaps(path);
  const sources = new SourceFiles(16);
  try {
    const rows = offset === undefined ? undefined : await Promise.all(maps.map(({ layout }) => exactRowAt(layout, offset, sources)));
    process.stdout.write(options.json === true ? `${JSON.stringify(jsonReport(path, maps, offset, rows), null, 2)}\n` : textReport(maps, offset, rows));
  } finally {
    await sources.close();
  }
}

/**
 * The row holding byte `offset`; inside a VHD chain's range, the sector's own origin (which file
 * and block holds it, read off the chain's sector bitmaps: src/extents/vhd-chain.ts).
 */
async function exactRowAt(layout: Layout, offset: number, sources: SourceFiles): Promise<MapRow | undefined> {
  const row = mapRowAt(layout, offset);
  if (row?.kind !== 'chain') return row;
  const extent = layout.extents[findExtentIndex(layout, offset)];
  if (extent?.kind !== 'chain') return row;
  const sectorStart = Math.max(extent.start, offset - (offset % 512));
  const length = Math.min(extentEnd(extent), sectorStart + 512) - sectorStart;
  const resolved = await resolveChainExtent(extent, sectorStart - extent.start, length, chainBitmaps(extent.chain, sources));
  const piece = resolved.extents[findExtentIndex(resolved, offset - sectorStart)];
  if (piece === undefined) return row;
  const exact = mapRow(sliceExtent(piece, piece.start, piece.length, sectorStart + piece.start));
  return { ...exact, what: `${exact.what} (in ${row.what})` };
}

async function backupMaps(path: string): Promise<NamedMap[]> {
  const { anchor, siblings } = await resolveSource(path);
  const { disk } = await composeDiskFor(anchor, siblings);
  return composedMaps(disk, `${anchor.letter}: backup ${basename(anchor.folder)}`);
}

/** The disk, then each container it is offered as. */
function composedMaps(disk: ComposedDisk, source: string, only?: 'vhdx' | 'vhd'): NamedMap[] {
  const maps: NamedMap[] = [{ name: 'disk', title: `the whole disk composed from the ${source}`, layout: disk.image.layout }];
  for (const offered of offeredFiles(disk.image)) {
    if (only !== undefined && offered.format !== only) continue;
    if (offered.unavailable !== undefined) continue;
    maps.push({ name: offered.format, title: `the .${offered.format} served for the ${source}`, layout: containerLayout(disk.image, offered.format) });
  }
  return maps;
}

async function fileMaps(path: string): Promise<NamedMap[]> {
  const structure = containerStructureMap((await parseContainerFile(path)).parsed, path);
  const maps: NamedMap[] = [{ name: 'file', title: `what ${basename(path)} says about its own bytes`, layout: structure, self: path }];
  const served = await resolveServedPath(path);
  if (served !== undefined) {
    const { anchor, siblings } = await resolveSource(served.folder);
    const { disk } = await composeDiskFor(anchor, siblings);
    maps.push(...composedMaps(disk, `${anchor.letter}: backup ${served.folder} (served by the mount at ${served.mountPoint})`, served.format));
  }
  return maps;
}

function jsonReport(path: string, maps: readonly NamedMap[], offset: number | undefined, rows: readonly (MapRow | undefined)[] | undefined): unknown {
  if (offset === undefined || rows === undefined) {
    return { path, maps: maps.map(({ name, title, layout }) => ({ name, title, size: layout.size, extents: mapRows(layout) })) };
  }
  return { path, offset, maps: maps.map(({ name, title, layout }, index) => ({ name, title, size: layout.size, extent: rows[index] ?? null })) };
}

function textReport(maps: readonly NamedMap[], offset: number | undefined, rows: readonly (MapRow | undefined)[] | undefined): string {
  const lines: string[] = [];
  for (const [index, { name, title, layout, self }] of maps.entries()) {
    if (offset === undefined || rows === undefined) {
      lines.push(`${name}: ${title} (${layout.size} bytes, ${layout.extents.length} extents)`, ...formatMapRows(mapRows(layout), self), '');
      continue;
    }
    const row: MapRow | undefined = rows[index];
    lines.push(row === undefined
      ? `${name}: byte ${offset} is beyond the end (${layout.size} bytes)`
      : `${name}: byte ${offset} is in [${row.start}, ${row.end}) ${row.kind}: ${describeRow(row, self)}`);
  }
  return `${lines.join('\n')}\n`;
}
