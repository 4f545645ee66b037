// SPDX-License-Identifier: MIT
/**
 * `synthvhd diff OLDER NEWER`: the newer backup of a disk as a differencing VHDX whose parent is
 * the older backup's whole-disk .vhdx (served by the mount or materialized), holding only the
 * changed ranges. Volumes are compared chunk by chunk without reading what urBackup already
 * knows (compareVolumes); the rest of the disk (tables, gaps, the NTFS backup boot sector) is
 * small and compared by reading both disk layouts. The payload stays `file` extents of the
 * newer `.raw`, so writing the diff clones instead of copying where the file system can.
 */
import { open } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileError, internalError } from '../errors/synthvhd-error.js';
import type { ComposedDisk } from '../disk/compose-disk.js';
import { type Layout, findExtentIndex } from '../extents/extent.js';
import { readAt } from '../extents/read-at.js';
import { SourceFiles } from '../extents/source-files.js';
import { guidToString, deriveGuid } from '../container/guid.js';
import { inspectContainer } from '../container/inspect.js';
import { VHDX_DEFAULT_BLOCK_SIZE, vhdxDataWriteGuid, vhdxPage83 } from '../container/vhdx.js';
import { buildDifferencingVhdxLayout, type DiskRange } from '../container/vhdx-differencing.js';
import { RAW_HASH_CHUNK } from '../urbackup/raw-hash.js';
import { compareVolumes, type ChunkComparison } from './changed-chunks.js';
import { relativeParentPath } from '../blocklist/copy.js';
import { RangeSet } from '../util/range-set.js';

export interface DiffPlan {
  readonly layout: Layout;
  readonly ranges: readonly DiskRange[];
  readonly changedBytes: number;
  readonly comparisons: readonly { readonly letter: string; readonly partition: number; readonly comparison: ChunkComparison }[];
  readonly otherBytesRead: number;
  readonly notes: readonly string[];
}

/** True when every extent of `layout` over [start, start + length) is `zero`. */
function allZero(layout: Layout, start: number, length: number): boolean {
  const end = start + length;
  for (let index = findExtentIndex(layout, start); index < layout.extents.length; index++) {
    const extent = layout.extents[index];
    if (extent === undefined || extent.start >= end) break;
    if (extent.kind !== 'zero') return false;
  }
  return true;
}

function mergeRanges(ranges: readonly DiskRange[]): DiskRange[] {
  const set = new RangeSet();
  for (const { start, length } of ranges) set.add(start, length);
  return set.ranges().map(([start, length]) => ({ start, length }));
}

/** Compares [start, end) of both disks by reading, in 512 KiB windows, skipping windows zero in both. */
async function compareByReading(older: Layout, newer: Layout, start: number, end: number, sources: SourceFiles, out: DiskRange[]): Promise<number> {
  const a = new Uint8Array(RAW_HASH_CHUNK);
  const b = new Uint8Array(RAW_HASH_CHUNK);
  let bytesRead = 0;
  for (let position = start; position < end; position += RAW_HASH_CHUNK) {
    const length = Math.min(RAW_HASH_CHUNK, end - position);
    if (allZero(older, position, length) && allZero(newer, position, length)) continue;
    await readAt(older, sources, position, a, length);
    await readAt(newer, sources, position, b, length);
    bytesRead += 2 * length;
    if (!Buffer.from(a.buffer, 0, length).equals(b.subarray(0, length))) out.push({ start: position, length });
  }
  return bytesRead;
}

/**
 * Plans the differencing VHDX at `outputPath` whose parent is OLDER's whole-disk VHDX at
 * `parentPath`. `parentWin32Path`: MS-VHDX `absolute_win32_path` of the parent when Windows' path
 * of it is known (src/container/windows-path.ts), else the entry is left out.
 */
export async function planDiff(older: ComposedDisk, newer: ComposedDisk, parentPath: string, outputPath: string, parentWin32Path?: string): Promise<DiffPlan> {
  const diskSize = newer.image.layout.size;
  if (older.image.layout.size !== diskSize) {
    throw fileError('E_USAGE', newer.placed[0]?.volume.backup.folder ?? outputPath, `disk size changed (${older.image.layout.size} → ${diskSize} bytes): a differencing disk needs the parent's size`);
  }
  if (older.image.sectorSize !== newer.image.sectorSize) throw fileError('E_USAGE', outputPath, 'sector size changed between the backups');
  const ranges: DiskRange[] = [];
  const comparisons: DiffPlan['comparisons'][number][] = [];
  const covered: [number, number][] = [];
  for (const { volume, partition } of newer.placed) {
    const counterpart = older.placed.find((entry) => entry.partition.number === partition.number && entry.partition.offset === partition.offset);
    if (counterpart === undefined) continue;
    const comparison = await compareVolumes(counterpart.volume, volume);
    comparisons.push({ letter: volume.backup.letter, partition: partition.number, comparison });
    for (const index of comparison.changed) {
      const start = index * RAW_HASH_CHUNK;
      ranges.push({ start: partition.offset + start, length: Math.min(RAW_HASH_CHUNK, volume.volumeLength - start) });
    }
    covered.push([partition.offset, partition.offset + Math.min(volume.volumeLength, counterpart.volume.volumeLength)]);
  }
  covered.sort((x, y) => x[0] - y[0]);
  // The anchor is always the first placed volume (src/disk/compose-disk.ts).
  const root = newer.placed[0]?.volume.backup.root;
  if (root === undefined) throw internalError('a composed disk without placed volumes');
  const sources = new SourceFiles(8, { root });
  let otherBytesRead = 0;
  try {
    let position = 0;
    for (const [start, end] of [...covered, [diskSize, diskSize] as [number, number]]) {
      if (start > position) otherBytesRead += await compareByReading(older.image.layout, newer.image.layout, position, start, sources, ranges);
      position = Math.max(position, end);
    }
  } finally {
    await sources.close();
  }
  const merged = mergeRanges(ranges);
  const olderIdentity = older.image.identity;
  const newerIdentity = newer.image.identity;
  const identity = Buffer.concat([Buffer.from('synthvhd diff v1\0'), olderIdentity, newerIdentity]);
  const { layout } = buildDifferencingVhdxLayout({
    virtualDiskSize: diskSize,
    blockSize: VHDX_DEFAULT_BLOCK_SIZE,
    logicalSectorSize: newer.image.sectorSize,
    page83: vhdxPage83(older.image),
    parentDataWriteGuid: vhdxDataWriteGuid(older.image),
    relativePath: relativeParentPath(outputPath, parentPath),
    absoluteWin32Path: parentWin32Path,
    fileWriteGuid: deriveGuid(identity, 'diff-file-write-guid', 'ms'),
    dataWriteGuid: deriveGuid(identity, 'diff-data-write-guid', 'ms'),
    ranges: merged,
    content: newer.image.layout,
  });
  const notes = comparisons.flatMap(({ letter, comparison }) => comparison.notes.map((note) => `${letter}: ${note}`));
  return { layout, ranges: merged, changedBytes: merged.reduce((sum, range) => sum + range.length, 0), comparisons, otherBytesRead, notes };
}

/** Checks that an existing parent file is the older disk's .vhdx (its DataWriteGuid). */
export async function checkParent(parentPath: string, older: ComposedDisk): Promise<void> {
  let handle;
  try {
    handle = await open(parentPath, 'r');
  } catch {
    return; // A served name in the mounted tree need not exist here; the GUID ties them together.
  }
  try {
    const { size } = await handle.stat();
    const info = await inspectContainer(async (position, length) => {
      const buffer = new Uint8Array(length);
      const { bytesRead } = await handle.read(buffer, 0, length, position);
      return buffer.subarray(0, bytesRead);
    }, size);
    const expected = guidToString(vhdxDataWriteGuid(older.image), 'ms');
    if (info.dataWriteGuid?.toLowerCase() !== expected) {
      throw fileError('E_USAGE', parentPath, `is not the older backup's disk: its DataWriteGuid is ${info.dataWriteGuid ?? 'none (not a VHDX)'}, the older backup's .vhdx has ${expected}`);
    }
  } finally {
    await handle.close();
  }
}

/** The parent's default path: the older backup's served .vhdx beside its volume backup. */
export function defaultParentPath(olderFolder: string, letter: string, timestamp: string): string {
  return resolve(join(olderFolder, `Image_${letter}_${timestamp}.disk.vhdx`));
}
