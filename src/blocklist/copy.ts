// SPDX-License-Identifier: MIT
/**
 * `blocklist copy`: VhdBlockBackup's `--copy [--createmeta] [--diffdir=DIR]` (Program.cs
 * `CopyDiff`, `CopyDiffWithCreateMeta`). The changed 2 MiB blocks of SOURCE go into a new
 * differencing VHDX `<target name>_diff.vhdx` (in DIR if given, else beside TARGET) whose parent
 * is TARGET; TARGET is only read. The diff's list is the source's list (after a merge it is the
 * merged image's list). As in VhdBlockBackup, an existing diff of that name is replaced (here
 * atomically: the old one stays until the new one is complete), and no diff is made when nothing
 * changed.
 *
 * The diff's payload is a Layout of the source disk's own extents (src/container/vhdx-
 * differencing.ts), written by writeLayout: nothing is buffered, and on a reflink file system the
 * changed blocks can even be shared with the source instead of copied.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { basename, dirname, extname, join, relative, resolve, sep } from 'node:path';
import { deriveGuid } from '../container/guid.js';
import { chainPaths } from '../container/open-image.js';
import { buildDifferencingVhdxLayout } from '../container/vhdx-differencing.js';
import { absoluteWin32Path } from '../container/windows-path.js';
import { fileError } from '../errors/synthvhd-error.js';
import { type WriteReport, writeLayout } from '../materialize/write-layout.js';
import { blocklistPathOf } from './blocklist.js';
import { type CheckReport, checkSameSize, compareLists, readFreshList } from './check.js';
import { type CreateReport, createListFor } from './create.js';
import type { HashOptions } from './hash.js';
import { writeListFile } from './list-file.js';
import { type ImageSubject, openSubject } from './subject.js';

export interface CopyOptions extends HashOptions {
  /** Hash the source now (and write its list) instead of reading its list. */
  readonly createmeta?: boolean;
  /** Folder for the diff (default: the target's folder). */
  readonly diffdir?: string;
  readonly cacheDir?: string;
  /** Progress of writing the diff. */
  readonly onWriteProgress?: (done: number, total: number) => void;
  /**
   * TARGET's folder as Windows reaches it (`\\nas\backups\vms`, `D:\VMs`, from
   * parseWindowsFolder): the diff's `absolute_win32_path` then names TARGET there; without it the
   * entry is left out (MS-VHDX 2.6.2.6.3 allows no Linux path in it).
   */
  readonly windowsPath?: string;
}

export interface CopyReport extends CheckReport {
  /** The source list made by --createmeta, if any. */
  readonly sourceListCreated: CreateReport | undefined;
  /** The differencing VHDX written, or undefined when nothing changed. */
  readonly diff: string | undefined;
  readonly diffList: string | undefined;
  readonly parentLocator: { readonly relativePath: string; readonly absoluteWin32Path: string | undefined } | undefined;
  readonly fullyPresentBlocks: number;
  readonly partiallyPresentBlocks: number;
  readonly write: WriteReport | undefined;
}

/** Program.cs: `$"{GetFileNameWithoutExtension(target)}_diff{GetExtension(target)}"` in diffdir or the target's folder. */
export function diffPathFor(target: string, diffdir: string | undefined): string {
  const extension = extname(target);
  return join(diffdir === undefined ? dirname(target) : resolve(diffdir), `${basename(target, extension)}_diff${extension}`);
}

/** MS-VHDX 2.6.2.6.3 `relative_path`: from the child's folder, `\` separators, `.\` for a sibling. */
export function relativeParentPath(diffPath: string, parentPath: string): string {
  const path = relative(dirname(diffPath), parentPath).split(sep).join('\\');
  return path.startsWith('..') ? path : `.\\${path}`;
}


export async function copyChangedBlocks(sourceArgument: string, targetArgument: string, options: CopyOptions = {}): Promise<CopyReport> {
  // Everything that can be refused is checked before anything is written.
  const targetSubject = await openSubject(targetArgument, options.cacheDir);
  const parsed = targetSubject.kind === 'image' ? targetSubject.image.parsed : undefined;
  if (targetSubject.kind !== 'image' || parsed?.format !== 'vhdx') {
    throw fileError('E_USAGE', targetSubject.label, 'the target must be a .vhdx: the diff is a differencing VHDX whose parent is the target');
  }
  const target: ImageSubject = targetSubject;
  const source = await openSubject(sourceArgument, options.cacheDir);
  checkSameSize(source, target);
  const targetList = await readFreshList(target);
  const diffPath = diffPathFor(target.label, options.diffdir);
  const diffFolder = dirname(diffPath);
  if (!(await stat(diffFolder).then((info) => info.isDirectory(), () => false))) {
    throw fileError('E_USAGE', diffFolder, 'does not exist or is not a folder (--diffdir)');
  }
  const protectedPaths = [...chainPaths(target.image), source.label, ...(source.kind === 'image' ? chainPaths(source.image) : [])];
  if (protectedPaths.includes(diffPath)) throw fileError('E_USAGE', diffPath, 'the diff would replace one of the images it is made from');

  let sourceListCreated: CreateReport | undefined;
  let sourceList: { path: string; bytes: Uint8Array };
  if (options.createmeta === true) {
    const created = await createListFor(source, options);
    sourceListCreated = created.report;
    sourceList = { path: created.report.list, bytes: created.list };
  } else {
    sourceList = await readFreshList(source);
  }
  const { report, changed } = compareLists(source, target, sourceList, targetList);
  const none = { sourceListCreated, diff: undefined, diffList: undefined, parentLocator: undefined, fullyPresentBlocks: 0, partiallyPresentBlocks: 0, write: undefined };
  if (changed.length === 0) return { ...report, ...none };

  // The diff's identity is its content: the parent it applies to, its geometry and the new disk's
  // list. The same copy made twice gives the same bytes (docs/containers.md §5).
  const { header, metadata, geometry } = parsed;
  const identity = new Uint8Array(
    createHash('sha256')
      .update('synthvhd differencing v1\u0000')
      .update(header.dataWriteGuid)
      .update(`${geometry.blockSize}\u0000${metadata.logicalSectorSize}\u0000${metadata.virtualDiskSize}\u0000`)
      .update(sourceList.bytes)
      .digest(),
  );
  const parentLocator = {
    relativePath: relativeParentPath(diffPath, target.label),
    absoluteWin32Path: options.windowsPath === undefined ? undefined : absoluteWin32Path(options.windowsPath, basename(target.label)),
  };
  const diff = buildDifferencingVhdxLayout({
    virtualDiskSize: metadata.virtualDiskSize,
    blockSize: geometry.blockSize,
    logicalSectorSize: metadata.logicalSectorSize,
    page83: metadata.page83,
    parentDataWriteGuid: header.dataWriteGuid,
    ...parentLocator,
    fileWriteGuid: deriveGuid(identity, 'vhdx-diff-file-write-guid', 'ms'),
    dataWriteGuid: deriveGuid(identity, 'vhdx-diff-data-write-guid', 'ms'),
    ranges: report.changedRanges,
    content: source.layout,
  });
  const write = await writeLayout(diff.layout, diffPath, {
    force: true,
    ...(options.onWriteProgress === undefined ? {} : { onProgress: options.onWriteProgress }),
    ...(source.kind === 'backup' ? { confinement: { root: source.anchor.root } } : {}),
  });
  // Program.cs: `File.WriteAllBytes(diffMetafile, sourceMetafile)`, after the diff: never older than it.
  const diffList = blocklistPathOf(diffPath);
  await writeListFile(diffList, sourceList.bytes, (await stat(diffPath)).mtimeMs);
  return {
    ...report,
    sourceListCreated,
    diff: diffPath,
    diffList,
    parentLocator,
    fullyPresentBlocks: diff.fullyPresentBlocks,
    partiallyPresentBlocks: diff.partiallyPresentBlocks,
    write,
  };
}
