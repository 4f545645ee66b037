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
import { constants } from 'node:fs';
import { open, readlink, type FileHandle } from 'node:fs/promises';
import { isAbsolute, relative } from 'node:path';
import { fileError } from '../errors/synthvhd-error.js';

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

function codeOf(error: unknown): string {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : String(error);
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
  const role = options.role ?? 'source file';
  const flags = constants.O_RDONLY | constants.O_NONBLOCK | (confinement === undefined ? 0 : constants.O_NOFOLLOW);
  let handle: FileHandle;
  try {
    handle = await open(path, flags);
  } catch (error) {
    const code = codeOf(error);
    if (code === 'ELOOP') {
      throw fileError('E_UNSAFE_SOURCE', path, `is a symbolic link: a ${role} must be a regular file inside the backup root, so it is not used`, error);
    }
    throw fileError('E_IO', path, `cannot open: ${code}`, error);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw fileError('E_UNSAFE_SOURCE', path, `is not a regular file: a ${role} must be one, so it is not used`);
    if (confinement !== undefined) {
      const actual = await readlink(`/proc/self/fd/${handle.fd}`);
      if (!isInsideDirectory(confinement.root, actual)) {
        throw fileError('E_UNSAFE_SOURCE', path, `resolves to ${actual}, outside the backup root ${confinement.root}: not used`);
      }
    }
    if (options.maxSize !== undefined && info.size > options.maxSize) {
      throw fileError('E_UNSAFE_SOURCE', path, `is ${info.size} bytes, more than a ${role} can be (${options.maxSize}): refused without reading it`);
    }
    return { handle, size: info.size, mtimeMs: info.mtimeMs };
  } catch (error) {
    await handle.close();
    throw error;
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
