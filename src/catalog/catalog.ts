// SPDX-License-Identifier: MIT
/**
 * The backup root seen as whole disks: scan (urbackup/), load, group, compose (disk/), and the
 * names of the virtual files each disk is served as. `ls`, `materialize` and the FUSE mount all
 * go through here, so they agree on what exists.
 */
import { basename, dirname, join, resolve } from 'node:path';
import { realpath, stat } from 'node:fs/promises';
import { fileError, SynthvhdError } from '../errors/synthvhd-error.js';
import { lineNaming } from '../errors/naming.js';
import { composeDisk, type ComposedDisk } from '../disk/compose-disk.js';
import {
  isDriveLetter,
  isVolumeBackup,
  listClients,
  readBackupFolder,
  scanClientFolder,
  timestampMinutes,
  type SkippedBackup,
  type VolumeBackup,
} from '../urbackup/backup-tree.js';
import { nodeBackupFs, type BackupFs } from '../urbackup/backup-fs.js';
import { companionNotes, diskIdentityKey, findCompanions, isAnchor, RUN_WINDOW_MINUTES } from '../urbackup/group-disks.js';
import { loadVolume, type LoadedVolume } from '../urbackup/load-volume.js';
import { createLimiter, type Limiter } from '../util/limit.js';

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

/**
 * The problem of the backup at `path` that `error` kept from being served. It belongs to that
 * backup even when the error names another file (a parent in its chain, or the file reached
 * through `..` or a hard link): `doctor` files it under the backup's folder, and the line names
 * both the backup and the file at fault.
 */
function problemOf(error: unknown, path: string): Problem {
  if (!(error instanceof SynthvhdError)) throw error;
  const culprit = error.path ?? path;
  const reason = lineNaming(culprit, error.message);
  return { path, reason: culprit === path ? reason : lineNaming(path, reason), code: error.code };
}


/**
 * Loads `candidates` that could be companions of an anchor taken at `timestamp`, all at once:
 * the mount composes a disk when a folder is first looked at, and each load is a few metadata
 * reads whose round trips would otherwise add up on that first `ls -l`.
 */
async function loadNearby(candidates: readonly VolumeBackup[], anchor: VolumeBackup, fs: BackupFs): Promise<LoadedVolume[]> {
  const minutes = timestampMinutes(anchor.timestamp);
  const nearby = candidates.filter(
    (candidate) => candidate !== anchor && candidate.client === anchor.client && candidate.complete && Math.abs(timestampMinutes(candidate.timestamp) - minutes) <= RUN_WINDOW_MINUTES,
  );
  const loaded = await Promise.all(
    nearby.map((candidate) =>
      loadVolume(candidate, fs).catch(() => undefined), // Not a companion then; `ls` and `doctor` report why.
    ),
  );
  return loaded.filter((volume): volume is LoadedVolume => volume !== undefined);
}

/** The disk of `anchor` with its companions among `candidates`, and the notes on where they came from. */
function composeWithNotes(anchor: LoadedVolume, candidates: readonly LoadedVolume[]): ComposedDisk {
  const companions = findCompanions(anchor, candidates);
  const disk = composeDisk({ client: anchor.backup.client, anchor, companions });
  const placed = new Set(disk.placed.map(({ volume }) => volume));
  const notes = companionNotes(anchor, companions.filter((companion) => placed.has(companion)), candidates);
  return notes.length === 0 ? disk : { ...disk, notes: [...disk.notes, ...notes] };
}

/** Composes the disk a drive-letter backup lived on, with its companions among `siblings`. */
export async function composeDiskFor(anchor: VolumeBackup, siblings: readonly VolumeBackup[], fs: BackupFs = nodeBackupFs): Promise<{ disk: ComposedDisk; loaded: LoadedVolume }> {
  if (!anchor.complete) {
    throw fileError('E_INCOMPLETE', anchor.folder, `incomplete backup: no ${basename(anchor.rawPath)}.sync (urBackup has not finished it)`);
  }
  const [loaded, nearby] = await Promise.all([loadVolume(anchor, fs), loadNearby(siblings, anchor, fs)]);
  return { disk: composeWithNotes(loaded, nearby), loaded };
}

export interface CatalogOptions {
  /** The file system to scan (default: the real one). */
  readonly fs?: BackupFs;
  /** How many backups are opened and read at once (default 16). */
  readonly concurrency?: number;
  /**
   * Find the holes of every `.raw` (default true). `ls` and `doctor` say false: what they show
   * does not depend on them, and finding them costs a few system calls per data range.
   */
  readonly holes?: boolean;
}

export interface CatalogScan<T> {
  readonly root: string;
  /** What `describe` made of each disk, by client, then backup folder. */
  readonly disks: readonly T[];
  readonly problems: readonly Problem[];
  /** Every RAW volume backup found (complete or not), by client, then folder. */
  readonly volumes: readonly VolumeBackup[];
  /** Backup folders that are not RAW image backups. */
  readonly skipped: readonly SkippedBackup[];
}

/** The disks and problems of one client folder: the grouping rule only ever looks inside one client. */
async function scanClient<T>(
  root: string,
  client: string,
  fs: BackupFs,
  limit: Limiter,
  describe: (disk: CatalogDisk) => T,
  holes: boolean,
): Promise<{ disks: T[]; problems: Problem[]; volumes: VolumeBackup[]; skipped: SkippedBackup[] }> {
  const { volumes, skipped } = await limit(() => scanClientFolder(client, join(root, client), fs));
  const problems: Problem[] = skipped.map((entry: SkippedBackup) => ({ path: entry.path, reason: `${entry.path}: ${entry.reason}`, code: 'E_UNSUPPORTED' }));
  const attempts = await Promise.all(
    volumes.map(async (volume): Promise<LoadedVolume | Problem> => {
      if (!volume.complete) {
        return { path: volume.folder, reason: `${volume.folder}: incomplete backup: no ${basename(volume.rawPath)}.sync (urBackup has not finished it)`, code: 'E_INCOMPLETE' };
      }
      try {
        return await limit(() => loadVolume(volume, fs, { holes }));
      } catch (error) {
        return problemOf(error, volume.rawPath);
      }
    }),
  );
  const all: LoadedVolume[] = [];
  for (const attempt of attempts) {
    if ('backup' in attempt) all.push(attempt);
    else problems.push(attempt);
  }
  // Candidates by disk identity: findCompanions only ever takes a volume of the anchor's identity.
  const byIdentity = new Map<string, LoadedVolume[]>();
  for (const volume of all) {
    const key = diskIdentityKey(volume);
    const group = byIdentity.get(key);
    if (group === undefined) byIdentity.set(key, [volume]);
    else group.push(volume);
  }
  const disks: T[] = [];
  const placedPaths = new Set<string>();
  /** Backup folders a disk tried to place and reported why it could not. */
  const refusedFolders = new Set<string>();
  for (const volume of all) {
    if (!isAnchor(volume)) continue;
    try {
      const disk = composeWithNotes(volume, byIdentity.get(diskIdentityKey(volume)) ?? []);
      disks.push(describe({ client: volume.backup.client, anchor: volume.backup, disk }));
      for (const placed of disk.placed) placedPaths.add(placed.volume.backup.rawPath);
      for (const unplaced of disk.unplaced) {
        problems.push({ path: unplaced.path, reason: unplaced.reason, code: 'E_PLACEMENT' });
        refusedFolders.add(dirname(unplaced.path));
      }
    } catch (error) {
      problems.push(problemOf(error, volume.backup.rawPath));
    }
  }
  // SYSVOL/ESP backups that no drive-letter disk took (or tried to) are reported, never silently dropped.
  for (const volume of all) {
    if (!isDriveLetter(volume.backup.letter) && !placedPaths.has(volume.backup.rawPath) && !refusedFolders.has(volume.backup.folder)) {
      problems.push({ path: volume.backup.folder, reason: `${volume.backup.folder}: no drive-letter backup of the same disk within 24 hours to attach it to`, code: 'E_PLACEMENT' });
    }
  }
  return { disks, problems, volumes, skipped };
}

/**
 * Everything under a backup root, each disk handed to `describe` as soon as it is composed (so
 * a caller that keeps only a summary never holds 10 000 composed disks at once). Clients are
 * scanned in parallel with at most `concurrency` backups read at once; the result is in client,
 * then folder order all the same.
 */
export async function scanCatalog<T>(
  rootArgument: string,
  describe: (disk: CatalogDisk) => T,
  options: CatalogOptions & {
    /**
     * Takes the described disks in order (client, then folder) as soon as every earlier client
     * is done, instead of returning them: `disks` of the result is then empty, and a caller
     * printing them holds no more than a few clients' worth.
     */
    readonly emit?: (disk: T) => void;
  } = {},
): Promise<CatalogScan<T>> {
  const fs = options.fs ?? nodeBackupFs;
  let root: string;
  try {
    root = await fs.realpath(rootArgument);
  } catch (error) {
    throw fileError('E_USAGE', rootArgument, 'does not exist', error);
  }
  if (!(await fs.isDirectory(root))) throw fileError('E_USAGE', rootArgument, 'is not a folder');
  const concurrency = options.concurrency ?? 16;
  const limit = createLimiter(concurrency);
  const clients = await listClients(root, fs);
  // A few clients at a time (each reads up to `concurrency` backups at once): what is held at
  // any moment is a few clients' loaded volumes, not the whole root's.
  const perClient: Awaited<ReturnType<typeof scanClient<T>>>[] = [];
  let next = 0;
  let emitted = 0;
  const emit = options.emit;
  const lane = async (): Promise<void> => {
    while (next < clients.length) {
      const index = next++;
      perClient[index] = await scanClient(root, clients[index] ?? '', fs, limit, describe, options.holes ?? true);
      if (emit === undefined) continue;
      for (let ready = perClient[emitted]; ready !== undefined; ready = perClient[++emitted]) {
        for (const disk of ready.disks) emit(disk);
        ready.disks = [];
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(clients.length, Math.max(1, Math.ceil(concurrency / 4))) }, lane));
  return {
    root: rootArgument,
    disks: perClient.flatMap((result) => result.disks),
    problems: perClient.flatMap((result) => result.problems),
    volumes: perClient.flatMap((result) => result.volumes),
    skipped: perClient.flatMap((result) => result.skipped),
  };
}

/** Everything under a backup root, with every composed disk. */
export async function buildCatalog(root: string, options: CatalogOptions = {}): Promise<Catalog> {
  const { disks, problems } = await scanCatalog(root, (disk) => disk, options);
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
