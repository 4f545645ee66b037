// SPDX-License-Identifier: MIT
/**
 * Blocklists of the virtual disks of urBackup backups, kept in a cache directory the user chooses,
 * never inside the backup tree (the backup is read-only everywhere: docs/architecture.md
 * §9). The FUSE mount serves a cached list beside the virtual disk as
 * `Image_<L>_<ts>.disk.vhdx.blocklist.bin` (and `.disk.vhd.blocklist.bin`: the list is of the
 * disk, so both containers share it), so VhdBlockBackup on Windows can `--check`/`--copy` from
 * the share without hashing the disk over SMB.
 *
 * Layout of the cache (one folder per backup folder, mirroring the backup tree):
 *
 *   <cacheDir>/<client>/<YYMMDD-HHMM>_Image_<L>/Image_<L>_<ts>.disk.<tag>.blocklist.bin
 *
 * `<tag>` is 16 hex digits of a hash of the disk identity (DiskImage.identity: the `.raw.mbr`
 * bytes, `.raw` sizes and mtimes), so a list made for an older state of a backup (urBackup
 * rewrote or finished it) is never served for the new state; writing a new list removes the
 * stale ones of that folder.
 *
 * For the mount (src/fuse/backup-fs.ts): `servedBlocklistName` gives the names to show,
 * `readCachedBlocklist` whether a list exists and its size and mtime (never older than the
 * image: VhdBlockBackup refuses a list older than its image), and `BlocklistPrecomputer` computes
 * missing lists in the background, one disk at a time.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, realpath, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { virtualFileName, type ContainerFormat } from '../catalog/catalog.js';
import type { DiskImage } from '../disk/disk-image.js';
import { fileError } from '../errors/synthvhd-error.js';
import type { VolumeBackup } from '../urbackup/backup-tree.js';
import { BLOCKLIST_SUFFIX, blocklistLength } from './blocklist.js';
import { type HashOptions, type HashResult, hashDisk } from './hash.js';
import { writeListFile } from './list-file.js';

/** A list in the cache, as the mount should serve it. */
export interface CachedBlocklist {
  readonly path: string;
  readonly size: number;
  /** max(the file's mtime, the image's mtime): what to report as the served file's mtime. */
  readonly mtimeMs: number;
}

/** The disk of a drive-letter backup folder: what the catalog and the mount compose. */
export interface BackupDisk {
  readonly anchor: VolumeBackup;
  readonly disk: DiskImage;
}

const TAG_PREFIX = 'synthvhd blocklist cache v1\u0000';

function identityTag(disk: DiskImage): string {
  return createHash('sha256').update(TAG_PREFIX).update(disk.identity).digest('hex').slice(0, 16);
}

/** The names the mount shows beside the virtual disks: `<virtual file name>.blocklist.bin`. */
export function servedBlocklistName(anchor: VolumeBackup, format: ContainerFormat): string {
  return `${virtualFileName(anchor, format)}${BLOCKLIST_SUFFIX}`;
}

/** The cache folder of one backup folder. */
function cacheFolder(cacheDir: string, anchor: VolumeBackup): string {
  return join(resolve(cacheDir), anchor.client, basename(anchor.folder));
}

/** Where the list of the disk of `anchor` in state `disk` lives in `cacheDir`. */
export function blocklistCachePath(cacheDir: string, anchor: VolumeBackup, disk: DiskImage): string {
  return join(cacheFolder(cacheDir, anchor), `Image_${anchor.letter}_${anchor.timestamp}.disk.${identityTag(disk)}${BLOCKLIST_SUFFIX}`);
}

/** realpath of `path`, or of its nearest existing ancestor plus the rest (the cache may not exist yet). */
async function realpathLoose(path: string): Promise<string> {
  const absolute = resolve(path);
  try {
    return await realpath(absolute);
  } catch {
    const parent = dirname(absolute);
    if (parent === absolute) return absolute;
    return join(await realpathLoose(parent), basename(absolute));
  }
}

/**
 * The cache directory, absolute; refused (E_USAGE, naming it) when it is the backup root or inside
 * it: lists are never written into the backup tree.
 */
export async function checkCacheDir(cacheDir: string, backupRoot: string): Promise<string> {
  const dir = resolve(cacheDir);
  const [realDir, realRoot] = await Promise.all([realpathLoose(dir), realpathLoose(backupRoot)]);
  if (realDir === realRoot || realDir.startsWith(realRoot.endsWith(sep) ? realRoot : realRoot + sep)) {
    throw fileError('E_USAGE', dir, `is inside the backup root ${realRoot}: blocklists are never written into the backup tree; choose a --cache-dir outside it`);
  }
  return dir;
}

/** The cached list of this disk state when it exists and has the right length, else undefined. */
export async function readCachedBlocklist(cacheDir: string, anchor: VolumeBackup, disk: DiskImage): Promise<CachedBlocklist | undefined> {
  const path = blocklistCachePath(cacheDir, anchor, disk);
  try {
    const info = await stat(path);
    if (!info.isFile() || info.size !== blocklistLength(disk.layout.size)) return undefined;
    return { path, size: info.size, mtimeMs: Math.max(info.mtimeMs, disk.mtimeMs) };
  } catch {
    return undefined;
  }
}

/**
 * Hashes the disk and stores its list in the cache (complete or absent; its mtime not older than
 * the disk's), then removes lists of older states of the same backup folder.
 */
export async function computeCachedBlocklist(
  cacheDir: string,
  anchor: VolumeBackup,
  disk: DiskImage,
  options: HashOptions = {},
): Promise<CachedBlocklist & { readonly result: HashResult }> {
  const dir = await checkCacheDir(cacheDir, anchor.root);
  const path = blocklistCachePath(dir, anchor, disk);
  const folder = dirname(path);
  try {
    await mkdir(folder, { recursive: true });
  } catch (error) {
    throw fileError('E_IO', folder, `cannot create the cache folder: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, error);
  }
  const result = await hashDisk(disk.layout, { confinement: { root: anchor.root }, ...options });
  const mtimeMs = await writeListFile(path, result.list, disk.mtimeMs);
  for (const name of await readdir(folder).catch(() => [] as string[])) {
    if (name !== basename(path) && name.endsWith(BLOCKLIST_SUFFIX)) await unlink(join(folder, name)).catch(() => undefined);
  }
  return { path, size: result.list.length, mtimeMs: Math.max(mtimeMs, disk.mtimeMs), result };
}

export interface PrecomputerEvents {
  /** A list is ready (computed now, or found in the cache). */
  readonly onReady?: (request: BackupDisk, cached: CachedBlocklist) => void;
  /** A list could not be computed (the message names the file). */
  readonly onError?: (request: BackupDisk, error: Error) => void;
  /** Worker threads per hash (default 1: the mount keeps serving while this runs). */
  readonly workers?: number;
}

/**
 * Computes missing lists in the background, one disk at a time, in request order; a request for
 * a disk already queued or cached is a no-op. For the FUSE mount: call `request` when a folder's
 * virtual disk is composed, serve `readCachedBlocklist` results, and `close()` on unmount.
 */
export class BlocklistPrecomputer {
  private readonly queue: BackupDisk[] = [];
  private readonly queued = new Set<string>();
  private running: Promise<void> | undefined;
  private closed = false;
  /** Aborts the hash in progress on close(): a big disk must not hold up an unmount for minutes. */
  private readonly abort = new AbortController();

  constructor(
    private readonly cacheDir: string,
    private readonly events: PrecomputerEvents = {},
  ) {}

  /** Queues the disk unless its list is cached or already queued. */
  request(anchor: VolumeBackup, disk: DiskImage): void {
    if (this.closed) return;
    const key = blocklistCachePath(this.cacheDir, anchor, disk);
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push({ anchor, disk });
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
    });
  }

  /** Resolves when the queue is empty. */
  async idle(): Promise<void> {
    while (this.running !== undefined) await this.running;
  }

  /**
   * Drops pending requests and stops the list being computed now (it is not written; the chunk
   * being hashed is finished first, so this takes a fraction of a second).
   */
  async close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    this.abort.abort();
    await this.idle();
  }

  private async drain(): Promise<void> {
    for (let next = this.queue.shift(); next !== undefined && !this.closed; next = this.queue.shift()) {
      const request = next;
      const key = blocklistCachePath(this.cacheDir, request.anchor, request.disk);
      try {
        const cached =
          (await readCachedBlocklist(this.cacheDir, request.anchor, request.disk)) ??
          (await computeCachedBlocklist(this.cacheDir, request.anchor, request.disk, { workers: this.events.workers ?? 1, signal: this.abort.signal }));
        this.events.onReady?.(request, { path: cached.path, size: cached.size, mtimeMs: cached.mtimeMs });
      } catch (error) {
        // Never thrown: this runs detached from any caller. The mount logs it and serves no list.
        // A hash stopped by close() is no failure worth a line.
        if (!this.closed) this.events.onError?.(request, error instanceof Error ? error : new Error(String(error)));
      } finally {
        this.queued.delete(key);
      }
    }
  }
}
