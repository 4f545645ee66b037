// SPDX-License-Identifier: MIT
/** `synthvhd verify BACKUP`: re-hash a volume backup and compare it with its `.raw.hash`. */
import { basename } from 'node:path';
import { resolveVolumeBackup } from '../../catalog/catalog.js';
import { fileError } from '../../errors/synthvhd-error.js';
import { verifyVolume } from '../../diff/verify-backup.js';
import { loadVolume } from '../../urbackup/load-volume.js';
import { progressBar } from '../progress.js';

export interface VerifyOptions {
  readonly json?: boolean;
}

export async function verifyCommand(source: string, options: VerifyOptions): Promise<void> {
  const { backup } = await resolveVolumeBackup(source);
  const volume = await loadVolume(backup);
  const progress = progressBar(`verify ${basename(backup.rawPath)}`);
  const report = await verifyVolume(volume, (done, total) => {
    progress.update(done, total);
  });
  progress.finish();
  if (options.json === true) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    const verdict = report.mismatches.length === 0 ? 'OK' : `${report.mismatches.length} mismatching: ${report.mismatches.slice(0, 20).join(', ')}${report.mismatches.length > 20 ? ', …' : ''}`;
    process.stdout.write(`${report.raw}: ${report.chunkCount} chunks of 512 KiB, ${report.chunksRead} read, ${report.seconds.toFixed(2)} s: ${verdict}\n`);
  }
  if (report.mismatches.length > 0) {
    throw fileError('E_RAW_IMAGE', `${backup.rawPath}.hash`, `${report.mismatches.length} chunk(s) of 512 KiB do not match the data (first: chunk ${report.mismatches[0] ?? 0}, volume byte ${(report.mismatches[0] ?? 0) * 524288})`);
  }
}
