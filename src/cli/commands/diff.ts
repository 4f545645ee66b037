// SPDX-License-Identifier: MIT
/** `synthvhd diff OLDER NEWER -o OUT.vhdx`: what changed between two backups, as a differencing VHDX. */
import { basename, resolve } from 'node:path';
import { composeDiskFor, resolveSource } from '../../catalog/catalog.js';
import { absoluteWin32Path, parseWindowsFolder } from '../../container/windows-path.js';
import { checkParent, defaultParentPath, planDiff } from '../../diff/backup-diff.js';
import { fileError } from '../../errors/synthvhd-error.js';
import { refuseExisting, writeLayout } from '../../materialize/write-layout.js';
import { formatBytes } from '../../util/format-bytes.js';
import { parseReflinkMode } from './materialize.js';
import { progressBar } from '../progress.js';

export interface DiffOptions {
  readonly output: string;
  readonly parent?: string;
  /** The parent's folder as Windows reaches it: written as absolute_win32_path. */
  readonly windowsPath?: string;
  readonly reflink?: string;
  readonly force?: boolean;
  readonly json?: boolean;
}

export async function diffCommand(olderSource: string, newerSource: string, options: DiffOptions): Promise<void> {
  const output = resolve(options.output);
  if (!output.toLowerCase().endsWith('.vhdx')) throw fileError('E_USAGE', output, 'a differencing disk is a .vhdx: name the output *.vhdx');
  const reflink = parseReflinkMode(options.reflink);
  await refuseExisting(output, options.force ?? false);
  const olderSide = await resolveSource(olderSource);
  const newerSide = await resolveSource(newerSource);
  if (olderSide.anchor.client !== newerSide.anchor.client || olderSide.anchor.letter !== newerSide.anchor.letter) {
    throw fileError('E_USAGE', newerSide.anchor.folder, `is not a backup of the same volume as ${olderSide.anchor.folder}`);
  }
  const older = (await composeDiskFor(olderSide.anchor, olderSide.siblings)).disk;
  const newer = (await composeDiskFor(newerSide.anchor, newerSide.siblings)).disk;
  const parentPath = options.parent === undefined ? defaultParentPath(olderSide.anchor.folder, olderSide.anchor.letter, olderSide.anchor.timestamp) : resolve(options.parent);
  await checkParent(parentPath, older);
  const windowsFolder = options.windowsPath === undefined ? undefined : parseWindowsFolder(options.windowsPath);
  const plan = await planDiff(older, newer, parentPath, output, windowsFolder === undefined ? undefined : absoluteWin32Path(windowsFolder, basename(parentPath)));
  const progress = progressBar('diff');
  const report = await writeLayout(plan.layout, output, {
    force: options.force ?? false,
    reflink,
    confinement: { root: newerSide.anchor.root },
    onProgress: (done, total) => {
      progress.update(done, total);
    },
  });
  progress.finish();
  const volumes = plan.comparisons.map(({ letter, partition, comparison }) => ({
    letter,
    partition,
    chunks: comparison.chunkCount,
    changedChunks: comparison.changed.length,
    decidedBySharing: comparison.decidedBySharing,
    decidedByHashes: comparison.decidedByHashes,
    decidedByReading: comparison.decidedByReading,
    bytesRead: comparison.bytesRead,
  }));
  if (options.json === true) {
    process.stdout.write(`${JSON.stringify({ ...report, parent: parentPath, changedBytes: plan.changedBytes, ranges: plan.ranges.length, volumes, otherBytesRead: plan.otherBytesRead, notes: plan.notes }, null, 2)}\n`);
    return;
  }
  const lines = [
    `wrote ${output}: differencing VHDX over ${parentPath}`,
    `  ${formatBytes(plan.changedBytes)} changed in ${plan.ranges.length} range(s); cloned ${formatBytes(report.clonedBytes)}, copied ${formatBytes(report.copiedBytes)}, in ${report.seconds.toFixed(2)} s`,
    ...volumes.map((volume) => `  ${volume.letter}: ${volume.changedChunks} of ${volume.chunks} chunks of 512 KiB changed (decided by shared extents ${volume.decidedBySharing}, .raw.hash ${volume.decidedByHashes}, reading ${volume.decidedByReading}; ${formatBytes(volume.bytesRead)} read)`),
    ...plan.notes.map((note) => `  note: ${note}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
