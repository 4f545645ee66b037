// SPDX-License-Identifier: MIT
/**
 * Which backup a path inside a live synthvhd mount is served from: for
 * `<mountpoint>/<client>/<YYMMDD-HHMM>_Image_<L>/Image_<L>_<ts>.disk.vhdx` the backup root the
 * mount serves, the backup folder and the container format. `inspect --map` uses it to show the
 * composed layout behind a served file (docs/architecture.md §10).
 *
 * The mount table (/proc/self/mountinfo, ./mountinfo.ts) names the mount point but not its
 * source root (fsname is `synthvhd`), so the root is read from the command line of the process
 * serving it (`synthvhd mount [options] ROOT MOUNTPOINT`, /proc/<pid>/cmdline, relative paths
 * against /proc/<pid>/cwd; proc(5)). Processes that are not ours or not readable are skipped.
 */
import { readdir, readFile, readlink } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { ContainerFormat } from '../catalog/catalog.js';
import { readMounts } from './mountinfo.js';
import { virtualNamesOf } from './served-disks.js';

/** `fuse.` + the subtype synthvhd mounts with (`subtype=synthvhd`, ./native-session.ts). */
const SYNTHVHD_FS_TYPE = 'fuse.synthvhd';
/** `mount` options that take a value (src/cli/main.ts); ROOT and MOUNTPOINT are the last two arguments left. */
const MOUNT_OPTIONS_WITH_VALUE = new Set(['--blocklist-cache', '--windows-path']);

export interface ServedPath {
  readonly mountPoint: string;
  /** The backup root the mount serves. */
  readonly root: string;
  /** The drive-letter backup folder in `root` whose disk the file is. */
  readonly folder: string;
  readonly format: ContainerFormat;
}

/**
 * The backup behind `path` when it names a virtual whole-disk file of a synthvhd mount;
 * undefined when it is not inside a synthvhd mount or names something else.
 */
export async function resolveServedPath(path: string): Promise<ServedPath | undefined> {
  const absolute = resolve(path);
  const mount = (await readMounts())
    .filter((entry) => entry.fsType === SYNTHVHD_FS_TYPE && isInside(absolute, entry.mountPoint))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length)[0];
  if (mount === undefined) return undefined;
  const parts = relative(mount.mountPoint, absolute).split(sep);
  if (parts.length !== 3) return undefined;
  const [client = '', folderName = '', name = ''] = parts;
  const format = virtualNamesOf(folderName).get(name);
  if (format === undefined) return undefined;
  const root = await mountRoot(mount.mountPoint);
  if (root === undefined) return undefined;
  return { mountPoint: mount.mountPoint, root, folder: join(root, client, folderName), format };
}

function isInside(path: string, directory: string): boolean {
  const rest = relative(directory, path);
  return rest !== '' && !rest.startsWith('..') && !isAbsolute(rest);
}

/** ROOT of the `synthvhd mount … ROOT MOUNTPOINT` process serving `mountPoint`, if one is found. */
async function mountRoot(mountPoint: string): Promise<string | undefined> {
  let pids: string[];
  try {
    pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    try {
      const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((arg) => arg !== '');
      const positional = mountArguments(argv);
      if (positional === undefined) continue;
      const cwd = await readlink(`/proc/${pid}/cwd`);
      if (resolve(cwd, positional.mountPoint) === mountPoint) return resolve(cwd, positional.root);
    } catch {
      // The process ended or is not readable: not the one.
    }
  }
  return undefined;
}

/** ROOT and MOUNTPOINT of a `… mount [options] ROOT MOUNTPOINT` argument vector. */
export function mountArguments(argv: readonly string[]): { root: string; mountPoint: string } | undefined {
  const command = argv.indexOf('mount');
  if (command < 1) return undefined;
  const positional: string[] = [];
  for (let index = command + 1; index < argv.length; index++) {
    const arg = argv[index] ?? '';
    if (MOUNT_OPTIONS_WITH_VALUE.has(arg)) index++;
    else if (!arg.startsWith('-')) positional.push(arg);
  }
  const [root, mountPoint] = positional.slice(-2);
  return root === undefined || mountPoint === undefined ? undefined : { root, mountPoint };
}
