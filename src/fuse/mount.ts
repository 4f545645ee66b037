// SPDX-License-Identifier: MIT
/**
 * Mounts a backup root read-only with fuse-native (libfuse 2.9 high-level API).
 *
 * Mount options (measured in bench/fuse.ts, numbers in the report of that change):
 * - `ro`: the kernel refuses writes itself (EROFS) before they reach a handler.
 * - `default_permissions`: the kernel checks every access against the owner, group and mode
 *   getattr reports (the source's, minus write; for virtual files derived from their sources,
 *   ./reader-access.ts), for every caller. Without it, with `allow_other`, every local user
 *   (and every Samba user) could read whatever the daemon can.
 * - `use_ino`: st_ino from inode.ts reaches stat() and Samba's file ids (libfuse otherwise
 *   reports its own node ids, which change after `forget`). fuse-native forwards neither `ro`
 *   nor `use_ino`, so the option string is built here (see `SynthvhdFuse`).
 * - `auto_cache`: the kernel keeps a file's page cache across opens while its mtime and size
 *   stay the same. Virtual disks are immutable for a given source state (mtime = newest source
 *   mtime), so warm reads never reach Node; a changed backup changes mtime and drops the cache.
 * - `max_read=131072`: the largest read libfuse 2 can negotiate (32 pages per request).
 * - kernel readahead (`read_ahead_kb` of the mount's bdi, set after mounting, root only):
 *   512 KiB = four 128 KiB requests in flight, one per libuv pool thread (which does the
 *   source preads). Measured on cold sequential reads: 128 KiB (the kernel default) and
 *   512 KiB within noise of each other, 1 MiB and 4 MiB clearly slower (more requests queued
 *   behind the same four threads, source preads no longer in order).
 * - `attr_timeout`/`entry_timeout` 1 s (libfuse's default, kept explicit), `negative_timeout=0`:
 *   a live backup root shows new backups at once and deleted ones within a second.
 * - fuse-native's `timeout: false`: its default turns any read slower than 15 s into ETIMEDOUT.
 */
import { logger } from '../util/logger.js';
import { constants } from 'node:fs';
import { access, mkdir, readdir, readFile, realpath, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { basename, dirname, join, relative, resolve, isAbsolute } from 'node:path';
import type * as FuseClass from 'fuse-native';
import { checkCacheDir } from '../blocklist/cache.js';
import { SynthvhdError, fileError } from '../errors/synthvhd-error.js';
import { BackupFs } from './backup-fs.js';
import { parseWindowsFolder } from '../container/windows-path.js';
import { findMount } from './mountinfo.js';
import { fuseOperations } from './operations.js';

export interface MountTuning {
  /** Largest read request, bytes (libfuse 2: at most 128 KiB). */
  readonly maxRead: number;
  /** `auto`: auto_cache, `keep`: kernel_cache, `none`: page cache dropped on every open. */
  readonly pageCache: 'auto' | 'keep' | 'none';
  readonly attrTimeout: number;
  readonly entryTimeout: number;
  /** Kernel readahead of the mount in KiB; undefined leaves the kernel's default (128). */
  readonly readAheadKb: number | undefined;
}

export const DEFAULT_TUNING: MountTuning = {
  maxRead: 128 * 1024,
  pageCache: 'auto',
  attrTimeout: 1,
  entryTimeout: 1,
  readAheadKb: 512,
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

/** The `-o` argument: fuse-native's own option list lacks ro, use_ino, negative_timeout. */
export function fuseOptionString(tuning: MountTuning, allowOther: boolean, debug: boolean): string {
  const options = [
    'ro',
    'default_permissions',
    'use_ino',
    'fsname=synthvhd',
    'subtype=synthvhd',
    `max_read=${tuning.maxRead}`,
    `attr_timeout=${tuning.attrTimeout}`,
    `entry_timeout=${tuning.entryTimeout}`,
    'negative_timeout=0',
  ];
  if (tuning.pageCache === 'auto') options.push('auto_cache');
  if (tuning.pageCache === 'keep') options.push('kernel_cache');
  if (allowOther) options.push('allow_other');
  if (debug) options.push('debug');
  return `-o${options.join(',')}`;
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

function codeOf(error: unknown): string {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : String(error);
}

function isInside(parent: string, child: string): boolean {
  const path = relative(parent, child);
  return path === '' || (!path.startsWith('..') && !isAbsolute(path));
}

async function checkRoot(root: string): Promise<{ path: string; dev: number }> {
  let path: string;
  try {
    path = await realpath(resolve(root));
  } catch (error) {
    throw fileError('E_USAGE', resolve(root), `backup root does not exist (${codeOf(error)})`, error);
  }
  const info = await stat(path);
  if (!info.isDirectory()) throw fileError('E_USAGE', path, 'backup root is not a directory');
  return { path, dev: info.dev };
}

/**
 * fuse-native unmounts with `exec('fusermount -uz "<path>"')`, a shell command line: a path with
 * a character the shell still interprets inside double quotes could not be unmounted safely.
 */
const SHELL_SPECIAL = /[$`"\\\n]/;

/** Resolves and checks the mount point without ever stat()ing a possibly dead mount. */
async function checkMountpoint(mountpoint: string, root: string): Promise<string> {
  const absolute = resolve(mountpoint);
  if (SHELL_SPECIAL.test(absolute)) {
    throw fileError('E_USAGE', absolute, 'mount point path must not contain $, `, ", \\ or a newline (fuse-native passes it to fusermount through a shell)');
  }
  let parent: string;
  try {
    parent = await realpath(dirname(absolute));
  } catch (error) {
    throw fileError('E_USAGE', absolute, `mount point does not exist (${codeOf(error)})`, error);
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
    throw fileError('E_USAGE', candidate, `mount point does not exist (${codeOf(error)})`, error);
  }
  if (path !== candidate && (await findMount(path)) !== undefined) throw fileError('E_IO', path, 'mount point in use: something is mounted there');
  if (SHELL_SPECIAL.test(path)) throw fileError('E_USAGE', path, 'mount point path must not contain $, `, ", \\ or a newline');
  if ((await readdir(path)).length > 0) throw fileError('E_USAGE', path, 'mount point is not empty: mount on an empty directory');
  if (isInside(root, path) || isInside(path, root)) {
    throw fileError('E_USAGE', path, `mount point must be outside the backup root ${root} (the mount would serve itself)`);
  }
  return path;
}

/**
 * The blocklist cache directory, absolute. Never inside the backup root (lists are never written
 * into the backup tree) nor inside the mount point (the mount would then serve, and wait on,
 * its own files).
 */
async function checkBlocklistCache(cacheDir: string, root: string, mountpoint: string, create: boolean): Promise<string> {
  let dir: string;
  try {
    dir = await checkCacheDir(cacheDir, root);
  } catch (error) {
    if (!(error instanceof SynthvhdError) || error.code !== 'E_USAGE') throw error;
    throw fileError('E_USAGE', resolve(cacheDir), `is inside the backup root ${root}: blocklists are never written into the backup tree; choose a --blocklist-cache outside it`, error);
  }
  if (isInside(mountpoint, dir)) throw fileError('E_USAGE', dir, `is inside the mount point ${mountpoint}: choose a --blocklist-cache outside it`);
  if (create) {
    try {
      await mkdir(dir, { recursive: true });
    } catch (error) {
      throw fileError('E_IO', dir, `cannot create the blocklist cache directory (${codeOf(error)})`, error);
    }
  }
  let info;
  try {
    info = await stat(dir);
  } catch (error) {
    throw fileError('E_USAGE', dir, `blocklist cache directory does not exist (${codeOf(error)}); \`synthvhd blocklist create --cache-dir\` makes it, or add --blocklists`, error);
  }
  if (!info.isDirectory()) throw fileError('E_USAGE', dir, 'blocklist cache is not a directory');
  // Again through symlinks, now that it exists.
  if (isInside(mountpoint, await realpath(dir))) throw fileError('E_USAGE', dir, `is inside the mount point ${mountpoint}: choose a --blocklist-cache outside it`);
  return dir;
}

async function checkFuseDevice(allowOther: boolean): Promise<void> {
  try {
    await access('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch (error) {
    const code = codeOf(error);
    const hint =
      code === 'ENOENT'
        ? 'no FUSE device: load the fuse kernel module (modprobe fuse), or give the container --device /dev/fuse'
        : 'no permission to use it: run as root or as a member of the group owning /dev/fuse';
    throw new SynthvhdError('E_IO', `/dev/fuse: ${hint} (${code})`, { path: '/dev/fuse', cause: error });
  }
  if (allowOther && process.getuid?.() !== 0) {
    const config = await readFile('/etc/fuse.conf', 'utf8').catch(() => '');
    if (!/^\s*user_allow_other\b/m.test(config)) {
      throw new SynthvhdError('E_IO', '/etc/fuse.conf: --allow-other needs the line user_allow_other there (or mount as root)', { path: '/etc/fuse.conf' });
    }
  }
}

type FuseConstructor = typeof FuseClass;

function loadFuseNative(): FuseConstructor {
  try {
    return createRequire(import.meta.url)('fuse-native') as FuseConstructor;
  } catch (error) {
    const first = (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
    throw new SynthvhdError('E_IO', `cannot load fuse-native or libfuse.so.2 (install libfuse2: apt-get install libfuse2): ${first}`, { cause: error });
  }
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
  const blocklistCache = options.blocklistCache === undefined ? undefined : await checkBlocklistCache(options.blocklistCache, root.path, mountpoint, precompute);
  await checkFuseDevice(allowOther);
  const Fuse = loadFuseNative();

  const optionString = fuseOptionString(tuning, allowOther, options.debug ?? false);
  class SynthvhdFuse extends Fuse {
    protected override _fuseOptions(): string {
      return optionString;
    }
  }
  const fs = new BackupFs(root.path, root.dev, {
    log,
    mountpoint,
    ...(blocklistCache === undefined ? {} : { blocklistCache, precomputeBlocklists: precompute }),
    ...windowsPathOption(options.windowsPath, mountpoint),
  });
  const fuse = new SynthvhdFuse(mountpoint, fuseOperations(fs, log), { timeout: false });
  await new Promise<void>((resolvePromise, reject) => {
    fuse.mount((error) => {
      if (error === null) {
        resolvePromise();
        return;
      }
      const reason = error.message === 'fuse failed' ? "libfuse refused (its reason is on the line above)" : error.message;
      reject(new SynthvhdError('E_IO', `${mountpoint}: cannot mount: ${reason}`, { path: mountpoint, cause: error }));
    });
  });
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

  const unmount = (): Promise<void> => {
    unmounting ??= (async () => {
      clearInterval(watch);
      const failure = await new Promise<Error | null>((resolvePromise) => {
        fuse.unmount(resolvePromise);
      });
      await fs.close();
      if (failure !== null && (await findMount(mountpoint)) !== undefined) {
        throw new SynthvhdError('E_IO', `${mountpoint}: cannot unmount: ${failure.message.split('\n')[0] ?? ''}`, { path: mountpoint, cause: failure });
      }
    })();
    return unmounting;
  };
  return { root: root.path, mountpoint, fs, lost, unmount };
}
