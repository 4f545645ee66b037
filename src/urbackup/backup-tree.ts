// SPDX-License-Identifier: MIT
/**
 * Finds urBackup image backups under a backup root. docs/urbackup-formats.md §1.1: each volume backup is
 * `<root>/<client>/<YYMMDD-HHMM>_Image_<L>/Image_<L>_<YYMMDD-HHMM>.<ext>`, where `<L>` is a
 * drive letter, `SYSVOL` or `ESP`, and `<ext>` is `raw`, or one of urBackup's container formats
 * `vhd`, `vhdz`, `vhdx`, `vhdxz` (docs/urbackup-image-formats.md §1), served the same way.
 */
import { dirname, join } from 'node:path';
import { nodeBackupFs, type BackupFs } from './backup-fs.js';
import { type ImageExtension, findImageBackupFiles } from './images/image-backup-files.js';

export interface VolumeBackup {
  /**
   * The backup root the folder lives in (`<root>/<client>/<folder>`), resolved: no source of
   * this backup is used from outside it (src/extents/confined-open.ts).
   */
  readonly root: string;
  readonly client: string;
  /** Absolute path of the backup folder. */
  readonly folder: string;
  /** Drive letter (`C`), `SYSVOL` or `ESP`. */
  readonly letter: string;
  /** `YYMMDD-HHMM`, server local time (docs/urbackup-formats.md §1.1). */
  readonly timestamp: string;
  /** The image file: the `.raw`, or the `.vhd`/`.vhdz`/`.vhdx`/`.vhdxz` (see `format`). */
  readonly rawPath: string;
  /** `<image>.mbr`: side files take the whole image name (`Image_C_<ts>.vhdz.mbr`). */
  readonly mbrPath: string;
  /** `<image>.sync` exists: urBackup finished and fsynced the backup (docs/urbackup-formats.md §1.2). */
  readonly complete: boolean;
  /** The image's format; undefined means `raw`. */
  readonly format?: ImageExtension;
}

export interface SkippedBackup {
  readonly path: string;
  readonly reason: string;
}

/** A volume backup folder name (docs/urbackup-formats.md §1.1): groups 1 = `YYMMDD-HHMM`, 2 = the volume. */
export const BACKUP_FOLDER_PATTERN = /^(\d{6}-\d{4})_Image_([A-Za-z]|SYSVOL|ESP)$/;

/** A drive-letter volume (not SYSVOL or ESP): these get a virtual whole disk beside them. */
export function isDriveLetter(letter: string): boolean {
  return /^[A-Za-z]$/.test(letter);
}

async function listDirectory(fs: BackupFs, path: string): Promise<string[]> {
  try {
    return await fs.readdir(path);
  } catch {
    return [];
  }
}

/**
 * Reads one backup folder; undefined when it is not an image backup folder. `folder` is
 * `<root>/<client>/<folderName>` with `root` resolved (realpath): the root of a backup is
 * taken from it.
 */
export async function readBackupFolder(
  client: string,
  folder: string,
  folderName: string,
  fs: BackupFs = nodeBackupFs,
): Promise<VolumeBackup | SkippedBackup | undefined> {
  const match = BACKUP_FOLDER_PATTERN.exec(folderName);
  if (match === null) return undefined;
  const [, timestamp = '', letter = ''] = match;
  const names = new Set(await listDirectory(fs, folder));
  const base = `Image_${letter}_${timestamp}`;
  const image = findImageBackupFiles(folder, base, names);
  if (image === undefined) return { path: folder, reason: `no ${base}.raw in the folder (nor .vhd, .vhdz, .vhdx, .vhdxz)` };
  return {
    root: dirname(dirname(folder)),
    client,
    folder,
    letter,
    timestamp,
    rawPath: image.imagePath,
    mbrPath: image.mbrPath,
    complete: image.complete,
    ...(image.extension === 'raw' ? {} : { format: image.extension }),
  };
}

export function isVolumeBackup(entry: VolumeBackup | SkippedBackup): entry is VolumeBackup {
  return 'rawPath' in entry;
}

/** The image backups of one client folder, sorted by folder name. */
export async function scanClientFolder(client: string, clientPath: string, fs: BackupFs = nodeBackupFs): Promise<{ volumes: VolumeBackup[]; skipped: SkippedBackup[] }> {
  const volumes: VolumeBackup[] = [];
  const skipped: SkippedBackup[] = [];
  const names = (await listDirectory(fs, clientPath)).sort();
  // The folders are read at once (their listings are independent); the order stays the names'.
  const entries = await Promise.all(names.map((folderName) => readBackupFolder(client, join(clientPath, folderName), folderName, fs)));
  for (const entry of entries) {
    if (entry === undefined) continue;
    if (isVolumeBackup(entry)) volumes.push(entry);
    else skipped.push(entry);
  }
  return { volumes, skipped };
}

/** The client folders of a backup root (resolved), sorted. */
export async function listClients(root: string, fs: BackupFs = nodeBackupFs): Promise<string[]> {
  const names = (await listDirectory(fs, root)).sort();
  const isFolder = await Promise.all(names.map((name) => fs.isDirectory(join(root, name))));
  return names.filter((_, index) => isFolder[index] === true);
}

/** All image backups below `root`, sorted by client, then folder name. */
export async function scanBackupRoot(rootArgument: string, fs: BackupFs = nodeBackupFs): Promise<{ volumes: VolumeBackup[]; skipped: SkippedBackup[] }> {
  const root = await fs.realpath(rootArgument);
  const volumes: VolumeBackup[] = [];
  const skipped: SkippedBackup[] = [];
  for (const client of await listClients(root, fs)) {
    const found = await scanClientFolder(client, join(root, client), fs);
    volumes.push(...found.volumes);
    skipped.push(...found.skipped);
  }
  return { volumes, skipped };
}

/** `YYMMDD-HHMM` → minutes since 2000-01-01 (for "nearest backup" comparisons only). */
export function timestampMinutes(timestamp: string): number {
  const match = /^(\d\d)(\d\d)(\d\d)-(\d\d)(\d\d)$/.exec(timestamp);
  if (match === null) return Number.NaN;
  const [year, month, day, hour, minute] = match.slice(1).map(Number) as [number, number, number, number, number];
  return Date.UTC(2000 + year, month - 1, day, hour, minute) / 60_000;
}
