// SPDX-License-Identifier: MIT
/**
 * `synthvhd doctor`: what this machine and a backup root need for synthvhd to work, each
 * check a small function returning a typed result (ok / warn / fail and one line).
 *
 * The backup tree is never written: the reflink probe writes its two temp files in the parent
 * directory of ROOT (or `--probe-dir`), and says which directory it used.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, open, readdir, realpath, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { scanCatalog, virtualFileName } from '../catalog/catalog.js';
import { offeredFiles } from '../catalog/virtual-files.js';
import { lineNaming } from '../errors/naming.js';
import { isSynthvhdError } from '../errors/synthvhd-error.js';
import {
  checkAllowOther,
  checkFuseDevice,
  checkFusermount,
  checkLibfuse,
  checkMountPermission,
  checkNativeAddon,
  errnoOf,
  fail,
  firstLine,
  ok,
  warn,
  type CheckResult,
  type CheckStatus,
} from '../fuse/preflight.js';
import { cloneRange } from '../native/native.js';
import { isNativeError } from '../native/native-error.js';
import type { SkippedBackup, VolumeBackup } from '../urbackup/backup-tree.js';
import { formatBytes } from '../util/format-bytes.js';
import { scanBackupFs } from '../urbackup/backup-fs.js';
import { isInsideDirectory } from '../extents/confined-open.js';

export type { CheckResult, CheckStatus } from '../fuse/preflight.js';

export interface FileSystemInfo {
  /** `stat -f -c %T` (ext4 reads as `ext2/ext3`: they share one magic number). */
  readonly statType: string;
  /** The mount's type from findmnt (`ext4`), when findmnt knows it. */
  readonly mountType: string | undefined;
  /** Where that file system is mounted, when findmnt knows it. */
  readonly mountPoint: string | undefined;
}

export interface ReflinkResult extends CheckResult {
  readonly name: 'reflink';
  /** The directory the probe files were created in (never ROOT or anything below it). */
  readonly probeDir: string;
  /** true: FICLONERANGE worked; false: the file system refused; null: not probed. */
  readonly canReflink: boolean | null;
  /** The errno FICLONERANGE failed with, when it did. */
  readonly errno?: string;
}

export type BackupFormat = 'raw' | 'vhd' | 'vhdz' | 'vhdx' | 'vhdxz' | 'unknown';
export type BackupState = 'served' | 'incomplete' | 'not-served';

export interface BackupEntry {
  readonly client: string;
  /** Absolute path of the backup folder. */
  readonly folder: string;
  readonly format: BackupFormat;
  readonly state: BackupState;
  /** served: which virtual file serves it; otherwise why it is not served. */
  readonly detail: string;
  /** For a drive-letter backup: what its disk says about where its volumes came from (as `ls` shows them). */
  readonly notes?: readonly string[];
}

export interface DoctorOptions {
  /** The urBackup backup folder to check; only the machine is checked without it. */
  readonly root?: string | undefined;
  /** Where the reflink probe may write (default: the parent directory of ROOT). */
  readonly probeDir?: string | undefined;
}

export interface DoctorReport {
  readonly root: string | null;
  readonly checks: readonly CheckResult[];
  readonly fileSystem: FileSystemInfo | null;
  readonly reflink: ReflinkResult | null;
  readonly backups: readonly BackupEntry[];
  /** Names of the checks that failed; the CLI exits 1 when there is any. */
  readonly failed: readonly string[];
}

/** Runs a program and resolves to its trimmed stdout, or undefined when it fails or is missing. */
function output(command: string, args: readonly string[]): Promise<string | undefined> {
  return new Promise((resolvePromise) => {
    execFile(command, [...args], { timeout: 10_000 }, (error, stdout) => {
      resolvePromise(error === null ? stdout.trim() : undefined);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// The backup root
// ---------------------------------------------------------------------------------------------

export async function checkBackupRoot(root: string): Promise<CheckResult> {
  const name = 'backup-root';
  try {
    if (!(await stat(root)).isDirectory()) return fail(name, `${root} is not a directory`);
    await access(root, constants.R_OK | constants.X_OK);
    return ok(name, `${root} is a readable directory`);
  } catch (error) {
    return fail(name, `${root}: ${errnoOf(error) === 'ENOENT' ? 'does not exist' : `cannot be read (${errnoOf(error)})`}`);
  }
}

/** The type of the file system holding `path` (`stat -f -c %T`) and its mount (findmnt). */
export async function fileSystemOf(path: string): Promise<FileSystemInfo> {
  const statType = (await output('stat', ['-f', '-c', '%T', path])) ?? 'unknown';
  const mount = await output('findmnt', ['-n', '-r', '-o', 'FSTYPE,TARGET', '--target', path]);
  // findmnt -r escapes blanks in TARGET as \x20; the type never has one.
  const [mountType, ...target] = (mount?.split('\n')[0] ?? '').split(' ');
  const mountPoint = target.length === 0 ? undefined : target.join(' ').replace(/\\x([0-9a-f]{2})/gi, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
  return { statType, mountType: mountType === '' ? undefined : mountType, mountPoint };
}

function fsName(info: FileSystemInfo): string {
  return info.mountType ?? info.statType;
}

export function checkFileSystem(root: string, info: FileSystemInfo): CheckResult {
  const mounted = info.mountPoint === undefined ? '' : `, mounted at ${info.mountPoint}`;
  const type = info.mountType !== undefined && info.mountType !== info.statType ? `${info.statType} (${info.mountType})` : info.statType;
  return ok('filesystem', `${root} is on ${type}${mounted}`);
}

const NO_REFLINK_ERRNOS = ['EOPNOTSUPP', 'ENOTSUP', 'ENOTTY', 'ENOSYS', 'EINVAL', 'EXDEV', 'EPERM'];

/**
 * Can the file system holding ROOT share blocks (FICLONERANGE), which `materialize` uses to
 * write a whole disk in seconds? Probes in `probeDir`, which must be on ROOT's file system
 * (same mount); writes 4 KiB into a temp file, clones it into a second, removes both.
 */
export async function probeReflink(root: string, probeDir: string, rootFs: FileSystemInfo): Promise<ReflinkResult> {
  const name = 'reflink';
  const where = `probed in ${probeDir}`;
  const result = (status: CheckStatus, canReflink: boolean | null, detail: string, errno?: string): ReflinkResult =>
    errno === undefined ? { name, status, detail, probeDir, canReflink } : { name, status, detail, probeDir, canReflink, errno };
  try {
    if (!(await stat(probeDir)).isDirectory()) return result('warn', null, `not probed: ${probeDir} is not a directory`);
  } catch (error) {
    return result('warn', null, `not probed: ${probeDir} cannot be used (${errnoOf(error)}): pass --probe-dir with a writable directory on ${root}'s file system`);
  }
  const probeFs = await fileSystemOf(probeDir);
  const sameMount = rootFs.mountPoint !== undefined && probeFs.mountPoint !== undefined
    ? rootFs.mountPoint === probeFs.mountPoint
    : (await stat(probeDir)).dev === (await stat(root)).dev;
  if (!sameMount) {
    return result('warn', null, `not probed: ${probeDir} is on another file system (${fsName(probeFs)} at ${probeFs.mountPoint ?? '?'}) than ${root} (${fsName(rootFs)}): pass --probe-dir with a writable directory on ${root}'s file system, outside the backup tree`);
  }
  const stem = join(probeDir, `.synthvhd-doctor-${process.pid}-${randomBytes(4).toString('hex')}`);
  const created: string[] = [];
  let source: FileHandle | undefined;
  let target: FileHandle | undefined;
  try {
    try {
      source = await open(`${stem}.a`, 'wx+');
      created.push(`${stem}.a`);
      target = await open(`${stem}.b`, 'wx+');
      created.push(`${stem}.b`);
      await source.write(Buffer.alloc(4096, 0x5a), 0, 4096, 0);
    } catch (error) {
      return result('warn', null, `not probed: cannot write in ${probeDir} (${errnoOf(error)}): pass --probe-dir with a writable directory on ${root}'s file system`);
    }
    try {
      await cloneRange(source.fd, 0, target.fd, 0, 4096);
    } catch (error) {
      if (isNativeError(error, ...NO_REFLINK_ERRNOS)) {
        return result('warn', false, `no: ${fsName(rootFs)} cannot share blocks (${error.errno}; ${where}): materialize copies the data instead`, error.errno);
      }
      return result('fail', null, `probe failed: ${firstLine(error)} (${where})`, isNativeError(error) ? error.errno : undefined);
    }
    const copy = Buffer.alloc(4096);
    await target.read(copy, 0, 4096, 0);
    if (!copy.equals(Buffer.alloc(4096, 0x5a))) return result('fail', null, `probe failed: the cloned block reads back different (${where})`);
    return result('ok', true, `yes: ${fsName(rootFs)} shares blocks (${where}): materialize clones partition data instead of copying it`);
  } finally {
    await source?.close();
    await target?.close();
    for (const path of created) await unlink(path).catch(() => undefined);
  }
}

/** Free space of the file system holding ROOT. */
export async function checkFreeSpace(root: string, info: FileSystemInfo): Promise<CheckResult> {
  const name = 'free-space';
  const stats = await statfs(root);
  const free = stats.bavail * stats.bsize;
  const total = stats.blocks * stats.bsize;
  const percent = total === 0 ? 0 : (100 * free) / total;
  const detail = `${formatBytes(free)} free of ${formatBytes(total)} (${percent.toFixed(0)}%) on ${info.mountPoint ?? root}`;
  if (free < 1024 ** 3 || percent < 5) return warn(name, `${detail}: urBackup needs room for its next backups, materialize for data it cannot share`);
  return ok(name, detail);
}

const OTHER_FORMATS: readonly BackupFormat[] = ['vhd', 'vhdz', 'vhdx', 'vhdxz'];

/** The format a skipped (non-RAW) backup folder holds, from its file names. */
async function formatOf(skipped: SkippedBackup): Promise<BackupFormat> {
  const match = /^(\d{6}-\d{4})_Image_(.+)$/.exec(basename(skipped.path));
  if (match === null) return 'unknown';
  const names = new Set(await readdir(skipped.path).catch(() => []));
  return OTHER_FORMATS.find((format) => names.has(`Image_${match[2] ?? ''}_${match[1] ?? ''}.${format}`)) ?? 'unknown';
}

async function realpathOr(path: string): Promise<string> {
  return realpath(path).catch(() => path);
}

/** Every image backup under ROOT: served (and as what), incomplete, or not served and why. */
export async function listBackups(root: string): Promise<BackupEntry[]> {
  // Each disk is reduced to what the list says about its volumes as soon as it is composed.
  const catalog = await scanCatalog(root, ({ anchor, disk }) => {
    const offered = offeredFiles(disk.image);
    const files = offered.filter(({ unavailable }) => unavailable === undefined).map(({ format }) => virtualFileName(anchor, format));
    const missing = offered.flatMap(({ format, unavailable }) => (unavailable === undefined ? [] : [`no .disk.${format}: ${unavailable}`]));
    const served: [string, string][] = [[anchor.rawPath, `served as ${files.join(' and ')}${missing.length === 0 ? '' : ` (${missing.join('; ')})`}`]];
    for (const { volume, partition } of disk.placed) {
      if (volume.backup.rawPath === anchor.rawPath) continue;
      served.push([volume.backup.rawPath, `served as partition ${partition.number} of ${anchor.client}/${basename(anchor.folder)}/${virtualFileName(anchor, 'vhdx')}`]);
    }
    return { anchor: anchor.rawPath, served, notes: disk.notes };
  }, { holes: false, fs: scanBackupFs });
  const servedAs = new Map<string, string>();
  const notesOf = new Map<string, readonly string[]>();
  for (const disk of catalog.disks) {
    for (const [rawPath, detail] of disk.served) servedAs.set(rawPath, detail);
    if (disk.notes.length > 0) notesOf.set(disk.anchor, disk.notes);
  }
  // A problem belongs to the backup folder it names (the folder itself or a file in it).
  const problemOf = new Map<string, string>();
  for (const { path, reason } of catalog.problems) {
    // Its line names the file even when the parser that found the problem did not know it.
    for (const folder of [path, dirname(path)]) if (!problemOf.has(folder)) problemOf.set(folder, lineNaming(path, reason));
  }
  const entries: BackupEntry[] = [];
  const rawEntry = (volume: VolumeBackup): BackupEntry => {
    const base = { client: volume.client, folder: volume.folder, format: volume.format ?? 'raw' };
    if (!volume.complete) {
      return { ...base, state: 'incomplete', detail: `no ${basename(volume.rawPath)}.sync: urBackup has not finished it; served once it has` };
    }
    const served = servedAs.get(volume.rawPath);
    const notes = notesOf.get(volume.rawPath);
    if (served !== undefined) return { ...base, state: 'served', detail: served, ...(notes === undefined ? {} : { notes }) };
    return { ...base, state: 'not-served', detail: problemOf.get(volume.folder) ?? 'not placed on any disk' };
  };
  const { volumes, skipped } = catalog;
  for (const volume of volumes) entries.push(rawEntry(volume));
  for (const entry of skipped) {
    const format = await formatOf(entry);
    entries.push({ client: basename(dirname(entry.path)), folder: entry.path, format, state: 'not-served', detail: entry.reason });
  }
  return entries.sort((a, b) => a.folder.localeCompare(b.folder));
}

export function checkBackups(root: string, backups: readonly BackupEntry[]): CheckResult {
  const name = 'backups';
  const count = (state: BackupState): number => backups.filter((entry) => entry.state === state).length;
  const served = count('served');
  const incomplete = count('incomplete');
  const notServed = count('not-served');
  if (backups.length === 0) return warn(name, `no image backups under ${root} (expected <client>/<YYMMDD-HHMM>_Image_<L>/ folders)`);
  const detail = `${served} served, ${incomplete} incomplete, ${notServed} not served`;
  return served === 0 || notServed > 0 ? warn(name, `${detail} (see the list)`) : ok(name, detail);
}

// ---------------------------------------------------------------------------------------------
// All of it
// ---------------------------------------------------------------------------------------------

export async function runDoctor(options: DoctorOptions = {}): Promise<DoctorReport> {
  const checks: CheckResult[] = [
    await checkFuseDevice(),
    await checkLibfuse(),
    await checkFusermount(),
    await checkMountPermission(),
    await checkAllowOther(),
    await checkNativeAddon(),
  ];
  let fileSystem: FileSystemInfo | null = null;
  let reflink: ReflinkResult | null = null;
  let backups: BackupEntry[] = [];
  const root = options.root === undefined ? null : resolve(options.root);
  if (root !== null) {
    const rootCheck = await checkBackupRoot(root);
    checks.push(rootCheck);
    if (rootCheck.status !== 'fail') {
      fileSystem = await fileSystemOf(root);
      checks.push(checkFileSystem(root, fileSystem));
      const probeDir = await realpathOr(resolve(options.probeDir ?? dirname(root)));
      if (isInsideDirectory(await realpathOr(root), probeDir)) {
        reflink = { name: 'reflink', status: 'fail', detail: `${probeDir} is inside the backup tree ${root}, which doctor never writes: pick another --probe-dir`, probeDir, canReflink: null };
      } else {
        reflink = await probeReflink(root, probeDir, fileSystem);
      }
      checks.push(reflink);
      try {
        backups = await listBackups(root);
        checks.push(checkBackups(root, backups));
      } catch (error) {
        if (!isSynthvhdError(error)) throw error;
        checks.push(fail('backups', firstLine(error)));
      }
      checks.push(await checkFreeSpace(root, fileSystem));
    }
  }
  const failed = checks.filter(({ status }) => status === 'fail').map(({ name }) => name);
  return { root, checks, fileSystem, reflink, backups, failed };
}
