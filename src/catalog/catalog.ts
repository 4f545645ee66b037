// SPDX-License-Identifier: MIT
/**
 * The backup root seen as whole disks: scan (urbackup/), load, group, compose (disk/), and the
 * names of the virtual files each disk is served as. `ls`, `materialize` and the FUSE mount all
 * go through here, so they agree on what exists.
 */
import { basename, dirname, join, resolve } from 'node:path';
import { realpath, stat } from 'node:fs/promises';
import { fileError, SynthvhdError } from '../errors/synthvhd-error.js';
import { composeDisk, type ComposedDisk } from '../disk/compose-disk.js';
import {
  isDriveLetter,
  isVolumeBackup,
  readBackupFolder,
  scanBackupRoot,
  scanClientFolder,
  timestampMinutes,
  type SkippedBackup,
  type VolumeBackup,
} from '../urbackup/backup-tree.js';
import { findCompanions, isAnchor, RUN_WINDOW_MINUTES } from '../urbackup/group-disks.js';
import { loadVolume, type LoadedVolume } from '../urbackup/load-volume.js';

export type ContainerFormat = 'vhdx' | 'vhd';

export interface CatalogDisk {
  readonly client: string;
  readonly anchor: VolumeBackup;
  readonly disk: ComposedDisk;
}

export interface Problem {
  readonly path: string;
  readonly reason: string;
  readonly code: string;
}

export interface Catalog {
  readonly root: string;
  readonly disks: readonly CatalogDisk[];
  /** Backups that exist but are not served (other formats, incomplete, unplaceable). */
  readonly problems: readonly Problem[];
}

/** docs/architecture.md §8: `Image_<L>_<ts>.disk.vhdx` / `.disk.vhd` beside the volume backup. */
export function virtualFileName(anchor: VolumeBackup, format: ContainerFormat): string {
  return `Image_${anchor.letter}_${anchor.timestamp}.disk.${format}`;
}

function problemOf(error: unknown, path: string): Problem {
  if (error instanceof SynthvhdError) return { path: error.path ?? path, reason: error.message, code: error.code };
  throw error;
}


/** Loads `candidates` that could be companions of an anchor taken at `timestamp`. */
async function loadNearby(candidates: readonly VolumeBackup[], anchor: VolumeBackup, problems: Problem[] | undefined): Promise<LoadedVolume[]> {
  const minutes = timestampMinutes(anchor.timestamp);
  const loaded: LoadedVolume[] = [];
  for (const candidate of candidates) {
    if (candidate === anchor || candidate.client !== anchor.client || !candidate.complete) continue;
    if (Math.abs(timestampMinutes(candidate.timestamp) - minutes) > RUN_WINDOW_MINUTES) continue;
    try {
      loaded.push(await loadVolume(candidate));
    } catch (error) {
      problems?.push(problemOf(error, candidate.rawPath));
    }
  }
  return loaded;
}

/** Composes the disk a drive-letter backup lived on, with its companions among `siblings`. */
export async function composeDiskFor(anchor: VolumeBackup, siblings: readonly VolumeBackup[]): Promise<{ disk: ComposedDisk; loaded: LoadedVolume }> {
  if (!anchor.complete) {
    throw fileError('E_INCOMPLETE', anchor.folder, `incomplete backup: no ${basename(anchor.rawPath)}.sync (urBackup has not finished it)`);
  }
  const loaded = await loadVolume(anchor);
  const nearby = await loadNearby(siblings, anchor, undefined);
  const disk = composeDisk({ client: anchor.client, anchor: loaded, companions: findCompanions(loaded, nearby) });
  return { disk, loaded };
}

/** Everything under a backup root. */
export async function buildCatalog(root: string): Promise<Catalog> {
  try {
    if (!(await stat(root)).isDirectory()) throw fileError('E_USAGE', root, 'is not a folder');
  } catch (error) {
    if (error instanceof SynthvhdError) throw error;
    throw fileError('E_USAGE', root, 'does not exist', error);
  }
  const { volumes, skipped } = await scanBackupRoot(root);
  const problems: Problem[] = skipped.map((entry: SkippedBackup) => ({ path: entry.path, reason: `${entry.path}: ${entry.reason}`, code: 'E_UNSUPPORTED' }));
  const loaded = new Map<VolumeBackup, LoadedVolume>();
  for (const volume of volumes) {
    if (!volume.complete) {
      problems.push({ path: volume.folder, reason: `${volume.folder}: incomplete backup: no ${basename(volume.rawPath)}.sync (urBackup has not finished it)`, code: 'E_INCOMPLETE' });
      continue;
    }
    try {
      loaded.set(volume, await loadVolume(volume));
    } catch (error) {
      problems.push(problemOf(error, volume.rawPath));
    }
  }
  const all = [...loaded.values()];
  const disks: CatalogDisk[] = [];
  const placedPaths = new Set<string>();
  for (const volume of all) {
    if (!isAnchor(volume)) continue;
    try {
      const disk = composeDisk({ client: volume.backup.client, anchor: volume, companions: findCompanions(volume, all) });
      disks.push({ client: volume.backup.client, anchor: volume.backup, disk });
      for (const placed of disk.placed) placedPaths.add(placed.volume.backup.rawPath);
      for (const unplaced of disk.unplaced) problems.push({ path: unplaced.path, reason: unplaced.reason, code: 'E_PLACEMENT' });
    } catch (error) {
      problems.push(problemOf(error, volume.backup.rawPath));
    }
  }
  // SYSVOL/ESP backups that no drive-letter disk took are reported, never silently dropped.
  for (const volume of all) {
    if (!isDriveLetter(volume.backup.letter) && !placedPaths.has(volume.backup.rawPath)) {
      problems.push({ path: volume.backup.folder, reason: `${volume.backup.folder}: no drive-letter backup of the same disk within 24 hours to attach it to`, code: 'E_PLACEMENT' });
    }
  }
  return { root, disks, problems };
}

/**
 * Resolves a volume backup given on the command line (its folder or its `.raw`, any volume:
 * drive letter, SYSVOL or ESP) to its record and the sibling backups of the same client.
 */
export async function resolveVolumeBackup(source: string): Promise<{ backup: VolumeBackup; siblings: VolumeBackup[] }> {
  const absolute = resolve(source);
  let folder: string;
  try {
    const given = (await stat(absolute)).isDirectory() ? absolute : dirname(absolute);
    // The backup root is two levels up, resolved; the client and backup folders are taken by
    // name below it, so a folder that is a symlink out of the root is not followed out of it
    // (its sources are refused as outside the root, as `ls` refuses them).
    const root = await realpath(dirname(dirname(given)));
    folder = join(root, basename(dirname(given)), basename(given));
  } catch (error) {
    throw fileError('E_USAGE', absolute, 'does not exist', error);
  }
  const clientDir = dirname(folder);
  const entry = await readBackupFolder(basename(clientDir), folder, basename(folder));
  if (entry === undefined) {
    throw fileError('E_USAGE', absolute, 'is not a urBackup image backup folder (<YYMMDD-HHMM>_Image_<L>) or its .raw');
  }
  if (!isVolumeBackup(entry)) throw fileError('E_RAW_IMAGE', entry.path, entry.reason);
  const { volumes: siblings } = await scanClientFolder(entry.client, clientDir);
  return { backup: siblings.find((volume) => volume.rawPath === entry.rawPath) ?? entry, siblings };
}

/**
 * Resolves a SOURCE given on the command line (a drive-letter volume backup folder or its
 * `.raw`) to the anchor of its disk and the sibling backups of the same client.
 */
export async function resolveSource(source: string): Promise<{ anchor: VolumeBackup; siblings: VolumeBackup[] }> {
  const { backup, siblings } = await resolveVolumeBackup(source);
  if (!isDriveLetter(backup.letter)) {
    throw fileError('E_USAGE', resolve(source), `is a ${backup.letter} backup: choose the drive-letter backup (C, D, …) of the same run; its disk includes this volume`);
  }
  return { anchor: backup, siblings };
}
