// SPDX-License-Identifier: MIT
/**
 * The one place where errors become errno values: the FUSE edge. Everything below src/fuse
 * throws SynthvhdErrors or Node system errors; a handler answers libfuse with the negative errno
 * this module picks (session-handlers.ts hands the session its absolute value).
 */
import { constants } from 'node:os';
import { isSynthvhdError } from '../errors/synthvhd-error.js';

const errno = constants.errno;

export const ENOENT = -errno.ENOENT;
export const EIO = -errno.EIO;
export const EROFS = -errno.EROFS;
export const EBADF = -errno.EBADF;
export const ENODATA = -errno.ENODATA;
export const EISDIR = -errno.EISDIR;
export const ENOTDIR = -errno.ENOTDIR;

/** Node system error codes passed through as they are (they describe the source tree). */
const PASS_THROUGH = new Set(['EROFS', 'EBADF', 'ENOENT', 'ENOTDIR', 'EISDIR', 'EACCES', 'EPERM', 'ELOOP', 'ENAMETOOLONG', 'EMFILE', 'ENFILE', 'ENOMEM', 'ESTALE']);

/** A Node-style system error (`code` = errno name), e.g. EROFS for a write attempt. */
export function systemError(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code });
}

function systemCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null || !('code' in error)) return undefined;
  return typeof error.code === 'string' ? error.code : undefined;
}

/** The negative errno a FUSE handler answers for `error`. */
export function errnoOf(error: unknown): number {
  if (isSynthvhdError(error)) {
    // A failed open or read of a source keeps the system's own answer (ENOENT, EACCES, …).
    const cause = systemCode(error.cause);
    if (error.code === 'E_IO' && cause !== undefined && PASS_THROUGH.has(cause)) return errnoOf(error.cause);
    switch (error.code) {
      // A source that is a symlink, a FIFO or outside the root is refused like a forbidden file.
      case 'E_UNSAFE_SOURCE':
        return -errno.EACCES;
      case 'E_IO':
      case 'E_INTERNAL':
        return EIO;
      // The virtual file a backup would give does not exist (yet, or cannot exist).
      case 'E_INCOMPLETE':
      case 'E_MBRDATA':
      case 'E_RAW_IMAGE':
      case 'E_PARTITION_TABLE':
      case 'E_PLACEMENT':
      case 'E_FORMAT_LIMIT':
      case 'E_USAGE':
      case 'E_CONTAINER':
        return ENOENT;
    }
  }
  const code = systemCode(error);
  if (code !== undefined && PASS_THROUGH.has(code)) {
    const value = (errno as Record<string, number | undefined>)[code];
    if (value !== undefined) return -value;
  }
  return EIO;
}
