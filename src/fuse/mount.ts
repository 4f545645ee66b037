// SPDX-License-Identifier: MIT
/**
 * Mounts a backup root read-only with synthvhd's own FUSE session (./native-session.ts: libfuse 3,
 * low-level API, multi-threaded; reads served by native code, everything else by BackupFs).
 *
 * Mount options and tuning (measured with bench/fuse.ts; the numbers are in the README):
 * - `ro`: the kernel refuses writes itself (EROFS) before they reach the daemon.
 * - `default_permissions`: the kernel checks every access against the owner, group and mode
 *   getattr reports (the source's, minus write; for virtual files derived from their sources,
 *   ./reader-access.ts), for every caller. Without it, with `allow_other`, every local user
 *   (and every Samba user) could read whatever the daemon can.
 * - st_ino is inode.ts's number (the low-level API reports the attributes' st_ino as they are;
 *   node ids are the session's own), so stat() and Samba's file ids stay stable across lookups,
 *   `forget`s and remounts.
 * - page cache: every open keeps the pages cached by earlier opens (FOPEN_KEEP_CACHE) and the
 *   kernel drops them when a getattr shows another mtime or size (libfuse 3's default
 *   auto_inval_data): what libfuse 2's `auto_cache` did. Virtual disks are immutable for a given
 *   source state (mtime = newest source mtime), so repeat reads never reach the daemon.
 * - `max_read=1048576`: 1 MiB requests (libfuse 3 offers the kernel max_pages = 256, the
 *   kernel's default fs.fuse.max_pages_limit); libfuse 2 stopped at 128 KiB.
 * - kernel readahead (`read_ahead_kb` of the mount's bdi, set once INIT is done, root only):
 *   1 MiB, so sequential reads arrive as 1 MiB requests. First reads of a 1 GiB disk measured
 *   1.9–2.9 GB/s with it against 1.8–2.2 GB/s at the kernel's 128 KiB (alternating runs), while
 *   8 random 4 KiB readers were a little faster at 128 KiB (24–28k against 21–23k reads/s); on
 *   a loaded machine the bench's tuning table (4 MiB, max_background 32, clone_fd, 4 threads)
 *   did not separate any variant from the defaults beyond the noise.
 * - up to 16 worker threads: each serves one request at a time, and a read blocks its thread in
 *   pread on the source; 8 concurrent random readers need 8 free threads.
 * - `attr_timeout`/`entry_timeout` 1 s, and no negative entries cached: a live backup root shows
 *   new backups at once and deleted ones within a second.
 */
import { logger } from '../util/logger.js';
import { mkdir, readdir, realpath, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { checkCacheDir } from '../blocklist/cache.js';
import { SynthvhdError, fileError, systemErrorCode } from '../errors/synthvhd-error.js';
import { isInsideDirectory } from '../extents/confined-open.js';
import { BackupFs } from './backup-fs.js';
import { CloneCache } from './clone-cache.js';
import { parseWindowsFolder } from '../container/windows-path.js';
import { findMount } from './mountinfo.js';
import { NativeFuseSession } from './native-session.js';
import { requireMountable } from './preflight.js';
import { sessionHandlers } from './session-handlers.js';

export interface MountTuning {
  /** Largest read request, bytes (at most 1 MiB). */
  readonly maxRead: number;
  /** `keep`: pages stay cached across opens until mtime or size changes; `none`: dropped on every open. */
  readonly pageCache: 'keep' | 'none';
  readonly attrTimeout: number;
  readonly entryTimeout: number;
  /** Kernel readahead of the mount in KiB; undefined leaves the kernel's default (128). */
  readonly readAheadKb: number | undefined;
  /** Most FUSE worker threads. */
  readonly threads: number;
  /** One /dev/fuse file per worker thread (libfuse's clone_fd). */
  readonly cloneFd: boolean;
  /** The kernel's max_background (readahead requests in flight); 0: libfuse's default, 12. */
  readonly maxBackground: number;
  /** How often (ms) a handle being read re-checks its backups (EIO once one changed or vanished). */
  readonly touchIntervalMs: number;
  /** FUSE passthrough for real files and clones when the kernel offers it (docs/fuse-passthrough.md). */
  readonly passthrough: boolean;
}

export const DEFAULT_TUNING: MountTuning = {
  maxRead: 1024 * 1024,
  pageCache: 'keep',
  attrTimeout: 1,
  entryTimeout: 1,
  readAheadKb: 1024,
  threads: 16,
  cloneFd: false,
  maxBackground: 0,
  touchIntervalMs: 250,
  passthrough: true,
};

export interface MountOptions {
  /** Let other users (smbd's guest or mapped users) in: `allow_other`. */
  readonly allowOther?: boolean;
  /** One line per problem (volumes not served, internal errors). Default: stderr. */
  readonly log?: (line: string) => void;
  readonly tuning?: Partial<MountTuning>;
  /** libfuse's debug output on stderr. */
  readonly debug?: boolean;
  /**
   * Serve the blocklists found in this cache directory (src/blocklist/cache.ts) beside the
   * virtual disks. Refused inside the backup root or the mount point; must exist unless
   * `precomputeBlocklists` (then it is created).
   */
  readonly blocklistCache?: string;
  /** Compute missing lists into `blocklistCache` in the background (needs `blocklistCache`). */
  readonly precomputeBlocklists?: boolean;
  /**
   * A directory on the backup's file system, outside the root and the mount point: disks that
   * can be are served from reflinked copies made there, read by the kernel itself (FUSE
   * passthrough; src/fuse/clone-cache.ts). Must exist.
   */
  readonly cloneCache?: string;
  /**
   * Serve clonable disks from unnamed clones made on their backups' file system (default true;
   * src/fuse/clone-cache.ts). Off: every disk is read through the daemon. `cloneCache` names a
   * folder instead.
   */
  readonly clones?: boolean;
  /**
   * The mount point as Windows reaches it (`\\server\share`): served diffs name their parent
   * there in `absolute_win32_path` (src/container/windows-path.ts). Default: `\\<host name>\<the
   * mount point's folder name>`, the share contrib/smb.conf.example makes of /srv/vdisks.
   */
  readonly windowsPath?: string;
}

export interface MountedBackupRoot {
  readonly root: string;
  readonly mountpoint: string;
  readonly fs: BackupFs;
  /** Resolves when the mount went away without `unmount()` (fusermount -u by someone else). */
  readonly lost: Promise<void>;
  /** Unmounts (lazily, like fusermount -uz) and closes every source file. Idempotent. */
  unmount(): Promise<void>;
}

/**
 * What Windows most likely calls the mount point when it is shared as contrib/smb.conf.example
 * shares it: `\\<this host>\<folder name>`. libvhdi needs an `absolute_win32_path` to find a
 * diff's parent (it never matches `relative_path`), and a wrong guess costs Windows nothing: it
 * tries `relative_path` first.
 */
export function defaultWindowsPath(mountpoint: string): string {
  return `\\\\${hostname()}\\${basename(mountpoint)}`;
}

/** The checked `windowsPath` to serve diffs with: the user's, else the default when it is a valid path. */
function windowsPathOption(given: string | undefined, mountpoint: string): { windowsPath?: string } {
  if (given !== undefined) return { windowsPath: parseWindowsFolder(given) };
  try {
    return { windowsPath: parseWindowsFolder(defaultWindowsPath(mountpoint)) };
  } catch {
    return {};
  }
}

function defaultLog(line: string): void {
  logger.warn(line);
}

async function checkRoot(root: string): Promise<{ path: string; dev: number }> {
  let path: string;
  try {
    path = await realpath(resolve(root));
  } catch (error) {
    throw fileError('E_USAGE', resolve(root), `backup root does not exist (${systemErrorCode(error)})`, error);
  }
  const info = await stat(path);
  if (!info.isDirectory()) throw fileError('E_USAGE', path, 'backup root is not a directory');
  return { path, dev: info.dev };
}

/** Resolves and checks the mount point without ever stat()ing a possibly dead mount. */
async function checkMountpoint(mountpoint: string, root: string): Promise<string> {
  const absolute = resolve(mountpoint);
  let parent: string;
  try {
    parent = await realpath(dirname(absolute));
  } catch (error) {
    throw fileError('E_USAGE', absolute, `mount point does not exist (${systemErrorCode(error)})`, error);
  }
  const candidate = join(parent, basename(absolute));
  const mounted = await findMount(candidate);
  if (mounted !== undefined) {
    const hint = mounted.fsType === 'fuse.synthvhd' ? `; if no synthvhd process serves it any more, run \`synthvhd unmount ${candidate}\`` : '';
    throw fileError('E_IO', candidate, `mount point in use: a ${mounted.fsType} file system is mounted there${hint}`);
  }
  let path: string;
  try {
    path = await realpath(candidate);
    if (!(await stat(path)).isDirectory()) throw fileError('E_USAGE', candidate, 'mount point is not a directory');
  } catch (error) {
    if (error instanceof SynthvhdError) throw error;
    throw fileError('E_USAGE', candidate, `mount point does not exist (${systemErrorCode(error)})`, error);
  }
  if (path !== candidate && (await findMount(path)) !== undefined) throw fileError('E_IO', path, 'mount point in use: something is mounted there');
  if ((await readdir(path)).length > 0) throw fileError('E_USAGE', path, 'mount point is not empty: mount on an empty directory');
  if (isInsideDirectory(root, path) || isInsideDirectory(path, root)) {
    throw fileError('E_USAGE', path, `mount point must be outside the backup root ${root} (the mount would serve itself)`);
  }
  return path;
}

/**
 * The blocklist cache directory, absolute. Never inside the backup root (lists are never written
 * into the backup tree) nor inside the mount point (the mount would then serve, and wait on,
 * its own files).
 */
/**
 * A cache directory given as `option` (`--blocklist-cache`, `--clone-cache`): outside the backup
 * root (`what` is never written into the backup tree) and outside the mount point; created when
 * `create`, else it must exist.
 */
async function checkCacheFolder(option: string, what: string, cacheDir: string, root: string, mountpoint: string, create: boolean): Promise<string> {
  let dir: string;
  try {
    dir = await checkCacheDir(cacheDir, root);
  } catch (error) {
    if (!(error instanceof SynthvhdError) || error.code !== 'E_USAGE') throw error;
    throw fileError('E_USAGE', resolve(cacheDir), `is inside the backup root ${root}: ${what} are never written into the backup tree; choose a ${option} outside it`, error);
  }
  if (isInsideDirectory(mountpoint, dir)) throw fileError('E_USAGE', dir, `is inside the mount point ${mountpoint}: choose a ${option} outside it`);
  if (create) {
    try {
      await mkdir(dir, { recursive: true });
    } catch (error) {
      throw fileError('E_IO', dir, `cannot create the ${option} directory (${systemErrorCode(error)})`, error);
    }
  }
  let info;
  try {
    info = await stat(dir);
  } catch (error) {
    const hint = option === '--blocklist-cache' ? '; `synthvhd blocklist create --cache-dir` makes it, or add --blocklists' : '';
    throw fileError('E_USAGE', dir, `${option} directory does not exist (${systemErrorCode(error)})${hint}`, error);
  }
  if (!info.isDirectory()) throw fileError('E_USAGE', dir, `${option} is not a directory`);
  // Again through symlinks, now that it exists.
  if (isInsideDirectory(mountpoint, await realpath(dir))) throw fileError('E_USAGE', dir, `is inside the mount point ${mountpoint}: choose a ${option} outside it`);
  return dir;
}

/** Makes the kernel read ahead `kb` KiB on the mount (best effort: needs root). */
async function setReadAhead(mountpoint: string, kb: number): Promise<void> {
  const entry = await findMount(mountpoint);
  if (entry === undefined) return;
  await writeFile(`/sys/class/bdi/${entry.device}/read_ahead_kb`, `${kb}\n`).catch(() => undefined);
}

export async function mountBackupRoot(rootArgument: string, mountpointArgument: string, options: MountOptions = {}): Promise<MountedBackupRoot> {
  const log = options.log ?? defaultLog;
  const allowOther = options.allowOther ?? false;
  const tuning: MountTuning = { ...DEFAULT_TUNING, ...options.tuning };
  const root = await checkRoot(rootArgument);
  const mountpoint = await checkMountpoint(mountpointArgument, root.path);
  const precompute = options.precomputeBlocklists ?? false;
  if (precompute && options.blocklistCache === undefined) throw new SynthvhdError('E_USAGE', '--blocklists needs --blocklist-cache DIR (where the lists are written)');
  const blocklistCache =
    options.blocklistCache === undefined ? undefined : await checkCacheFolder('--blocklist-cache', 'blocklists', options.blocklistCache, root.path, mountpoint, precompute);
  const cloneDir = options.cloneCache === undefined ? undefined : await checkCacheFolder('--clone-cache', 'clones', options.cloneCache, root.path, mountpoint, false);
  // The same checks `synthvhd doctor` reports; the first failing one stops us with its line.
  await requireMountable({ allowOther });
  if (options.clones === false && cloneDir !== undefined) throw new SynthvhdError('E_USAGE', '--clone-cache DIR and --no-clones contradict each other');
  // Made only once the kernel took FUSE passthrough (onlyWhile below): it reads them itself.
  const cloneCache = options.clones === false ? undefined : cloneDir === undefined ? CloneCache.besideBackups(root.path, log) : await CloneCache.create(cloneDir, root.path, log);

  const fs = new BackupFs(root.path, root.dev, {
    log,
    mountpoint,
    ...(cloneCache === undefined ? {} : { cloneCache }),
    ...(blocklistCache === undefined ? {} : { blocklistCache, precomputeBlocklists: precompute }),
    ...windowsPathOption(options.windowsPath, mountpoint),
  });
  let session: NativeFuseSession | undefined;
  const handlers = sessionHandlers(fs, log, (fh) => {
    session?.invalidate(fh);
  });
  try {
    session = await NativeFuseSession.mount(mountpoint, handlers, {
      allowOther,
      debug: options.debug ?? false,
      maxRead: tuning.maxRead,
      attrTimeout: tuning.attrTimeout,
      entryTimeout: tuning.entryTimeout,
      threads: tuning.threads,
      cloneFd: tuning.cloneFd,
      maxBackground: tuning.maxBackground,
      touchIntervalMs: tuning.touchIntervalMs,
      keepCache: tuning.pageCache === 'keep',
      passthrough: tuning.passthrough,
    });
  } catch (error) {
    await fs.close();
    throw error;
  }
  const mounted = session;
  cloneCache?.onlyWhile(() => mounted.passthroughEnabled());
  if (tuning.readAheadKb !== undefined) await setReadAhead(mountpoint, tuning.readAheadKb);

  let unmounting: Promise<void> | undefined;
  let markLost: () => void = () => undefined;
  const lost = new Promise<void>((resolvePromise) => {
    markLost = resolvePromise;
  });
  // Someone else may unmount us (`synthvhd unmount`, fusermount -u): notice it and let go.
  const watch = setInterval(() => {
    if (unmounting !== undefined) return;
    findMount(mountpoint).then(
      (entry) => {
        if (entry === undefined && unmounting === undefined) markLost();
      },
      () => undefined,
    );
  }, 1000);
  watch.unref();

  // The session ends on its own when the kernel drops the connection (an unmount from outside
  // once the last open file is closed, or `fusermount -u` on an idle mount).
  void mounted.closed.then(() => {
    if (unmounting === undefined) markLost();
  });

  const unmount = (): Promise<void> => {
    unmounting ??= (async () => {
      clearInterval(watch);
      let failure: Error | undefined;
      try {
        await mounted.unmount();
      } catch (error) {
        failure = error instanceof Error ? error : new Error(String(error));
      }
      // Lazy: the mount point is free now; the kernel lets go of the session once no file is
      // open on it any more (files still open are served until then, or until the process exits).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([mounted.closed, new Promise((resolvePromise) => (timer = setTimeout(resolvePromise, 2000)))]);
      clearTimeout(timer);
      await fs.close();
      if (failure !== undefined && (await findMount(mountpoint)) !== undefined) {
        throw new SynthvhdError('E_IO', `${mountpoint}: cannot unmount: ${failure.message}`, { path: mountpoint, cause: failure });
      }
    })();
    return unmounting;
  };
  return { root: root.path, mountpoint, fs, lost, unmount };
}
