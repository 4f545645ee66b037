// SPDX-License-Identifier: MIT
/**
 * What a blocklist command argument names: an image file (`.vhd`, `.vhdx`, raw), whose list is
 * `<image>.blocklist.bin` beside it, or a urBackup volume backup folder (or its `.raw`), whose
 * whole disk's list lives in the cache directory (./cache.ts).
 */
import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { composeDiskFor, resolveSource } from '../catalog/catalog.js';
import { type OpenedImage, openDiskImage } from '../container/open-image.js';
import type { DiskImage } from '../disk/disk-image.js';
import { fileError } from '../errors/synthvhd-error.js';
import type { Layout } from '../extents/extent.js';
import type { VolumeBackup } from '../urbackup/backup-tree.js';
import { blocklistPathOf } from './blocklist.js';
import { blocklistCachePath, checkCacheDir } from './cache.js';

interface SubjectBase {
  /** The argument as the user should see it in messages (absolute path). */
  readonly label: string;
  readonly listPath: string;
  /** A list older than this is stale (VhdBlockBackup compares with the image file's mtime). */
  readonly imageMtimeMs: number;
  readonly layout: Layout;
  readonly sectorSize: number;
}

export interface ImageSubject extends SubjectBase {
  readonly kind: 'image';
  readonly image: OpenedImage;
}

export interface BackupSubject extends SubjectBase {
  readonly kind: 'backup';
  readonly anchor: VolumeBackup;
  readonly disk: DiskImage;
  readonly cacheDir: string;
}

export type ListSubject = ImageSubject | BackupSubject;

/** docs/urbackup-formats.md §1.1: `Image_<L>_<YYMMDD-HHMM>.raw`. */
const RAW_NAME = /^Image_([A-Za-z]|SYSVOL|ESP)_\d{6}-\d{4}\.raw$/;

async function isBackupArgument(path: string): Promise<boolean> {
  try {
    const info = await stat(path);
    if (info.isDirectory()) return true;
    if (!RAW_NAME.test(basename(path))) return false;
    return (await stat(`${path}.mbr`)).isFile();
  } catch {
    return false;
  }
}

/** Resolves `argument`; a backup needs `cacheDir` (lists are never written into the backup tree). */
export async function openSubject(argument: string, cacheDir: string | undefined): Promise<ListSubject> {
  const path = resolve(argument);
  if (await isBackupArgument(path)) {
    const { anchor, siblings } = await resolveSource(path);
    if (cacheDir === undefined) {
      throw fileError('E_USAGE', path, 'is a urBackup backup: its blocklist goes into a cache directory, never into the backup tree: give --cache-dir DIR');
    }
    const dir = await checkCacheDir(cacheDir, anchor.root);
    const { disk } = await composeDiskFor(anchor, siblings);
    return {
      kind: 'backup',
      label: anchor.folder,
      listPath: blocklistCachePath(dir, anchor, disk.image),
      imageMtimeMs: disk.image.mtimeMs,
      layout: disk.image.layout,
      sectorSize: disk.image.sectorSize,
      anchor,
      disk: disk.image,
      cacheDir: dir,
    };
  }
  const image = await openDiskImage(path);
  return {
    kind: 'image',
    label: image.path,
    listPath: blocklistPathOf(image.path),
    imageMtimeMs: image.mtimeMs,
    layout: image.layout,
    sectorSize: image.sectorSize,
    image,
  };
}
