// SPDX-License-Identifier: MIT
/**
 * Which parts of two files are the same physical blocks (FIEMAP). urBackup makes each RAW
 * incremental as a reflink copy or a btrfs/ZFS snapshot of the previous `.raw` and then writes
 * the changed blocks (docs/urbackup-formats.md §1.3), so on btrfs/XFS the unchanged ranges of two backups of
 * one volume still share their extents: equal by definition, no need to read them.
 */
import { openSourceFile, type Confinement } from '../extents/confined-open.js';
import { FIEMAP_EXTENT_NOT_COMPARABLE, fiemap, type PhysicalExtent } from '../native/native.js';
import { isNativeError } from '../native/native-error.js';

/** [start, end) ranges (file offsets) where both files map to the same physical bytes. */
export type SharedRanges = readonly (readonly [start: number, end: number])[];

async function mapOf(path: string, start: number, end: number, confinement: Confinement): Promise<PhysicalExtent[] | undefined> {
  const handle = await openSourceFile(path, confinement);
  try {
    return await fiemap(handle.fd, start, end);
  } catch (error) {
    // ext4 answers FIEMAP too, but tmpfs and others do not: then nothing is known to be shared.
    if (isNativeError(error, 'EOPNOTSUPP', 'ENOTTY', 'EINVAL')) return undefined;
    throw error;
  } finally {
    await handle.close();
  }
}

/** Pure: intersect two extent maps, keeping the ranges where physical(a, x) === physical(b, x). */
export function sharedRangesOf(a: readonly PhysicalExtent[], b: readonly PhysicalExtent[], start: number, end: number): [number, number][] {
  const shared: [number, number][] = [];
  let j = 0;
  for (const [logicalA, physicalA, lengthA, flagsA] of a) {
    if ((flagsA & FIEMAP_EXTENT_NOT_COMPARABLE) !== 0) continue;
    const endA = logicalA + lengthA;
    while (j < b.length && (b[j]?.[0] ?? 0) + (b[j]?.[2] ?? 0) <= logicalA) j++;
    for (let k = j; k < b.length; k++) {
      const [logicalB, physicalB, lengthB, flagsB] = b[k] as PhysicalExtent;
      if (logicalB >= endA) break;
      if ((flagsB & FIEMAP_EXTENT_NOT_COMPARABLE) !== 0) continue;
      // Same byte at the same logical offset only if both extents have the same physical-logical delta.
      if (physicalA - logicalA !== physicalB - logicalB) continue;
      const from = Math.max(logicalA, logicalB, start);
      const to = Math.min(endA, logicalB + lengthB, end);
      if (from < to) {
        const last = shared.at(-1);
        if (last !== undefined && last[1] === from) last[1] = to;
        else shared.push([from, to]);
      }
    }
  }
  return shared;
}

/** Ranges of [start, end) where files `a` and `b` share physical extents; empty when unknown. */
export async function sharedRanges(
  a: { readonly path: string; readonly confinement: Confinement },
  b: { readonly path: string; readonly confinement: Confinement },
  start: number,
  end: number,
): Promise<SharedRanges> {
  const [mapA, mapB] = await Promise.all([mapOf(a.path, start, end, a.confinement), mapOf(b.path, start, end, b.confinement)]);
  if (mapA === undefined || mapB === undefined) return [];
  return sharedRangesOf(mapA, mapB, start, end);
}
