// SPDX-License-Identifier: MIT
/**
 * `blocklist check`: VhdBlockBackup's `--check` (Program.cs `CopyDiff` with dryRun), stricter where
 * the Windows tool only prints a warning and exits 0:
 * - the two disks must have the same size, exactly (VhdBlockBackup compares only block counts);
 * - each list must have exactly the length its disk needs (a wrong list is refused, not compared);
 * - a list older than its image is refused (VhdBlockBackup: "File '...' is older than '...'").
 */
import { fileError } from '../errors/synthvhd-error.js';
import { blockCountOf, blockRanges, changedBlocks, checkBlocklistLength } from './blocklist.js';
import { type ListFile, readListFile } from './list-file.js';
import { type ListSubject, openSubject } from './subject.js';

export interface CheckReport {
  readonly source: string;
  readonly target: string;
  readonly sourceList: string;
  readonly targetList: string;
  readonly diskSize: number;
  readonly blocks: number;
  readonly changedBlocks: number;
  /** Bytes of the disk in changed blocks (the last block may be short). */
  readonly changedBytes: number;
  /** changedBytes / diskSize * 100. */
  readonly changedPercent: number;
  /** The changed byte ranges of the disk, adjacent blocks merged. */
  readonly changedRanges: readonly { start: number; length: number }[];
}

/** Fails unless both disks have the same size. */
export function checkSameSize(source: ListSubject, target: ListSubject): void {
  if (source.layout.size !== target.layout.size) {
    throw fileError(
      'E_BLOCKLIST',
      source.label,
      `disk is ${source.layout.size} bytes but ${target.label} is ${target.layout.size} bytes: the disks differ in size (resize the target to the same size and make its list again)`,
    );
  }
}

/** Reads the list of `subject` and checks its length and age. */
export async function readFreshList(subject: ListSubject): Promise<ListFile> {
  const list = await readListFile(subject.listPath, subject.label);
  checkBlocklistLength(list.bytes, subject.layout.size, list.path, subject.label);
  if (list.mtimeMs < subject.imageMtimeMs) {
    throw fileError(
      'E_BLOCKLIST',
      list.path,
      `is older than ${subject.label} (list ${new Date(list.mtimeMs).toISOString()}, image ${new Date(subject.imageMtimeMs).toISOString()}): run \`synthvhd blocklist create\` on it again`,
    );
  }
  return list;
}

export function compareLists(source: ListSubject, target: ListSubject, sourceList: ListFile | { path: string; bytes: Uint8Array }, targetList: ListFile): { report: CheckReport; changed: number[] } {
  const diskSize = source.layout.size;
  const changed = changedBlocks(sourceList.bytes, targetList.bytes);
  const changedRanges = blockRanges(changed, diskSize);
  const changedBytes = changedRanges.reduce((sum, range) => sum + range.length, 0);
  return {
    changed,
    report: {
      source: source.label,
      target: target.label,
      sourceList: sourceList.path,
      targetList: targetList.path,
      diskSize,
      blocks: blockCountOf(diskSize),
      changedBlocks: changed.length,
      changedBytes,
      changedPercent: diskSize === 0 ? 0 : (changedBytes / diskSize) * 100,
      changedRanges,
    },
  };
}

export async function checkBlocklists(sourceArgument: string, targetArgument: string, options: { cacheDir?: string } = {}): Promise<CheckReport> {
  const source = await openSubject(sourceArgument, options.cacheDir);
  const target = await openSubject(targetArgument, options.cacheDir);
  checkSameSize(source, target);
  const [sourceList, targetList] = [await readFreshList(source), await readFreshList(target)];
  return compareLists(source, target, sourceList, targetList).report;
}
