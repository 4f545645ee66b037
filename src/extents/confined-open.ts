// SPDX-License-Identifier: MIT
/**
 * Opening a source file of a backup so that no byte from outside the backup root is ever
 * served (docs/architecture.md "Who may read what"):
 *
 * - the last component is opened with O_NOFOLLOW: a source that is a symlink is refused, even
 *   one pointing inside the root (urBackup never makes them; a link is someone's doing);
 * - the opened file must be a regular file (fstat): not a FIFO that would block a reader, not a
 *   device;
 * - the file actually opened (`/proc/self/fd/N`, the kernel's answer after every directory
 *   symlink on the way was followed) must lie inside the backup root. Checking the opened fd,
 *   not the path beforehand, leaves no window in which the path can be swapped;
 * - optionally its size is checked before a byte is read (metadata files are small; a 4 GiB
 *   `.raw.mbr` is refused, not read).
 *
 * O_NONBLOCK keeps the open itself from hanging on a FIFO planted under a source's name; it
 * changes nothing for reads of regular files.
 */
import { closeSync, constants, fstatSync, openSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { open, readlink, type FileHandle } from 'node:fs/promises';
import { isAbsolute, relative } from 'node:path';
import { fileError, systemErrorCode, type SynthvhdError } from '../errors/synthvhd-error.js';
import { isNativeError } from '../native/native-error.js';
import { openConfined } from '../native/native.js';

export interface Confinement {
  /** The backup root, absolute and resolved (realpath). */
  readonly root: string;
}

export interface ConfinedOpenOptions {
  /** Refuse (without reading) a file larger than this many bytes. */
  readonly maxSize?: number;
  /** What the file is, for messages ("urBackup .raw.mbr"). */
  readonly role?: string;
}

/** True when `child` is `parent` or lies below it (both absolute, resolved). */
export function isInsideDirectory(parent: string, child: string): boolean {
  const path = relative(parent, child);
  return path === '' || (!path.startsWith('..') && !isAbsolute(path));
}

/** The open(2) flags of a source: read-only, never blocking on a FIFO, no final symlink when confined. */
function sourceFlags(confinement: Confinement | undefined): number {
  return constants.O_RDONLY | constants.O_NONBLOCK | (confinement === undefined ? 0 : constants.O_NOFOLLOW);
}

/** The error for a failed open of a source (`code`: the errno name open failed with). */
function openFailure(path: string, role: string, error: unknown, code = systemErrorCode(error)): SynthvhdError {
  if (code === 'ELOOP') {
    return fileError('E_UNSAFE_SOURCE', path, `is a symbolic link: a ${role} must be a regular file inside the backup root, so it is not used`, error);
  }
  return fileError('E_IO', path, `cannot open: ${code}`, error);
}

function notRegular(path: string, role: string): SynthvhdError {
  return fileError('E_UNSAFE_SOURCE', path, `is not a regular file: a ${role} must be one, so it is not used`);
}

function tooLarge(path: string, role: string, size: number, maxSize: number): SynthvhdError {
  return fileError('E_UNSAFE_SOURCE', path, `is ${size} bytes, more than a ${role} can be (${maxSize}): refused without reading it`);
}

function outside(path: string, actual: string, confinement: Confinement): SynthvhdError {
  return fileError('E_UNSAFE_SOURCE', path, `resolves to ${actual}, outside the backup root ${confinement.root}: not used`);
}

/** An opened source must be a regular file and not over `maxSize` (checked before any read). */
function checkOpenedFile(path: string, info: Stats, options: ConfinedOpenOptions): void {
  const role = options.role ?? 'source file';
  if (!info.isFile()) throw notRegular(path, role);
  if (options.maxSize !== undefined && info.size > options.maxSize) throw tooLarge(path, role, info.size, options.maxSize);
}

/** `actual` (the kernel's path of the opened descriptor) must lie inside the backup root. */
function checkInside(path: string, actual: string, confinement: Confinement): void {
  if (!isInsideDirectory(confinement.root, actual)) throw outside(path, actual, confinement);
}

/**
 * The same checks and errors as openSourceFileWithStat, in one pool job (native/src/source_files.cc):
 * open, fstat, readlink of the descriptor and, with `readLength` > 0, the read of the file's first
 * bytes and the close. For the mount's walk, whose every disk opens two files per volume: as
 * separate promises that was five to six thread-pool round trips per file (docs/architecture.md
 * §7.1). Returns an open fd (the caller closes it) when nothing was read, else fd -1.
 */
export async function openSourceNative(
  path: string,
  confinement: Confinement | undefined,
  options: ConfinedOpenOptions & { readonly readLength?: number },
): Promise<{ fd: number; size: number; mtimeMs: number; bytes: Buffer }> {
  const role = options.role ?? 'source file';
  const maxSize = options.maxSize ?? Number.MAX_SAFE_INTEGER;
  try {
    return await openConfined(path, confinement?.root ?? '', maxSize, options.readLength ?? 0);
  } catch (error) {
    if (!isNativeError(error)) throw error;
    switch (error.errno) {
      case 'E_SYMLINK':
        throw openFailure(path, role, error, 'ELOOP');
      case 'E_NOT_REGULAR':
        throw notRegular(path, role);
      case 'E_TOO_LARGE':
        throw tooLarge(path, role, error.size ?? 0, maxSize);
      case 'E_OUTSIDE_ROOT':
        throw outside(path, error.actual ?? '?', confinement ?? { root: '/' });
      default:
        if (error.syscall === 'open') throw openFailure(path, role, error, error.errno);
        throw fileError('E_IO', path, `cannot read: ${error.errno}`, error);
    }
  }
}

/**
 * Opens `path` read-only under `confinement` (see the file comment), or throws a SynthvhdError
 * with code `E_UNSAFE_SOURCE` (symlink, not a regular file, outside the root, too large) or
 * `E_IO` (cannot open) that names the file. Without a confinement only the regular-file and
 * size checks apply.
 */
export async function openSourceFile(path: string, confinement: Confinement | undefined, options: ConfinedOpenOptions = {}): Promise<FileHandle> {
  return (await openSourceFileWithStat(path, confinement, options)).handle;
}

/** `openSourceFile`, with the size and mtime of the file it opened (from the fstat it checked). */
export async function openSourceFileWithStat(
  path: string,
  confinement: Confinement | undefined,
  options: ConfinedOpenOptions = {},
): Promise<{ handle: FileHandle; size: number; mtimeMs: number }> {
  let handle: FileHandle;
  try {
    handle = await open(path, sourceFlags(confinement));
  } catch (error) {
    throw openFailure(path, options.role ?? 'source file', error);
  }
  try {
    const info = await handle.stat();
    checkOpenedFile(path, info, options);
    if (confinement !== undefined) checkInside(path, await readlink(`/proc/self/fd/${handle.fd}`), confinement);
    return { handle, size: info.size, mtimeMs: info.mtimeMs };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/**
 * `openSourceFileWithStat` with synchronous system calls, returning a plain descriptor (the
 * caller closes it with closeSync). For one-shot commands that scan a whole tree (`ls`,
 * `doctor`): on page-cached metadata each call takes microseconds, and skipping the thread-pool
 * round trip and the FileHandle objects was most of a 10 000-disk scan's time. Never on the
 * mount's thread, which answers the kernel.
 */
export function openSourceFdSync(path: string, confinement: Confinement | undefined, options: ConfinedOpenOptions = {}): { fd: number; size: number; mtimeMs: number } {
  let fd: number;
  try {
    fd = openSync(path, sourceFlags(confinement));
  } catch (error) {
    throw openFailure(path, options.role ?? 'source file', error);
  }
  try {
    const info = fstatSync(fd);
    checkOpenedFile(path, info, options);
    if (confinement !== undefined) checkInside(path, readlinkSync(`/proc/self/fd/${fd}`), confinement);
    return { fd, size: info.size, mtimeMs: info.mtimeMs };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/** `readSourceFile` with synchronous system calls (see openSourceFdSync: one-shot scans only). */
export function readSourceFileSync(
  path: string,
  confinement: Confinement | undefined,
  options: ConfinedOpenOptions & { readonly maxSize: number; /** Read into this when the file fits (its bytes are then a view of it). */ readonly into?: Buffer },
): { bytes: Buffer; mtimeMs: number; size: number } {
  const { fd, size, mtimeMs } = openSourceFdSync(path, confinement, options);
  try {
    const bytes = options.into !== undefined && options.into.length >= size ? options.into.subarray(0, size) : Buffer.allocUnsafe(size);
    let done = 0;
    while (done < bytes.length) {
      const bytesRead = readSync(fd, bytes, done, bytes.length - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return { bytes: bytes.subarray(0, done), mtimeMs, size };
  } finally {
    closeSync(fd);
  }
}

/** Reads a whole small file through `openSourceFile` (the size is checked before reading). */
export async function readSourceFile(path: string, confinement: Confinement | undefined, options: ConfinedOpenOptions & { readonly maxSize: number }): Promise<{ bytes: Buffer; mtimeMs: number; size: number }> {
  const { handle, ...info } = await openSourceFileWithStat(path, confinement, options);
  try {
    // Every byte is overwritten by the reads below (and only what was read is returned).
    const bytes = Buffer.allocUnsafe(info.size);
    let done = 0;
    while (done < bytes.length) {
      const { bytesRead } = await handle.read(bytes, done, bytes.length - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return { bytes: bytes.subarray(0, done), mtimeMs: info.mtimeMs, size: info.size };
  } finally {
    await handle.close();
  }
}
