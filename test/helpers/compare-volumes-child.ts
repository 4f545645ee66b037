// SPDX-License-Identifier: MIT
/**
 * `node dist/test/helpers/compare-volumes-child.js OLDER NEWER`: compareVolumes on two backup
 * folders in a process of its own, so that the kernel can count what it reads (io-witness.ts).
 * Prints the result as JSON.
 */
import { basename, dirname } from 'node:path';
import { compareVolumes } from '../../src/diff/changed-chunks.js';
import { isVolumeBackup, readBackupFolder, type VolumeBackup } from '../../src/urbackup/backup-tree.js';
import { loadVolume } from '../../src/urbackup/load-volume.js';

async function backupOf(folder: string): Promise<VolumeBackup> {
  const entry = await readBackupFolder(basename(dirname(folder)), folder, basename(folder));
  if (entry === undefined || !isVolumeBackup(entry)) throw new Error(`${folder} is not a backup`);
  return entry;
}

const [older = '', newer = ''] = process.argv.slice(2);
const result = await compareVolumes(await loadVolume(await backupOf(older)), await loadVolume(await backupOf(newer)));
process.stdout.write(JSON.stringify(result));
