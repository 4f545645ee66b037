// SPDX-License-Identifier: MIT
/**
 * A failed system call in the native addon (FICLONERANGE, copy_file_range, lseek, fstatfs), or a
 * record the codec refused (decodeRecord: errno 'EIO', the codec's one line in `reason`).
 * `errno` is the errno name, which callers branch on: materialize falls back from a clone to a
 * copy on `EXDEV` (different file systems), `EOPNOTSUPP` (no reflink: ext4, tmpfs) and `EINVAL`
 * (unaligned offsets or length, or a btrfs nodatacow/datacow mix).
 */
import { SynthvhdError } from '../errors/synthvhd-error.js';

export class NativeError extends SynthvhdError {
  /** The errno name: 'EXDEV', 'EOPNOTSUPP', 'EINVAL', 'EBADF', 'ENXIO'…, or 'EOF' (copy ran out of source). */
  readonly errno: string;
  /** The failed call: 'FICLONERANGE', 'copy_file_range', 'lseek SEEK_DATA', 'lseek SEEK_HOLE', 'fstatfs', 'decodeRecord'. */
  readonly syscall: string;
  /** copyFileRange only: bytes copied before the failure (they are in the destination). */
  readonly bytesCopied: number | undefined;
  /** decodeRecord only: why the record was refused, one line ("zstd: Data corruption detected"). */
  readonly reason: string | undefined;
  /** openConfined only: the file's size (E_TOO_LARGE). */
  readonly size: number | undefined;
  /** openConfined only: where the opened file actually is (E_OUTSIDE_ROOT). */
  readonly actual: string | undefined;

  constructor(
    message: string,
    details: {
      errno: string;
      syscall: string;
      bytesCopied?: number | undefined;
      reason?: string | undefined;
      size?: number | undefined;
      actual?: string | undefined;
      cause?: unknown;
    },
  ) {
    super('E_IO', message, details.cause === undefined ? {} : { cause: details.cause });
    this.errno = details.errno;
    this.syscall = details.syscall;
    this.bytesCopied = details.bytesCopied;
    this.reason = details.reason;
    this.size = details.size;
    this.actual = details.actual;
  }
}

/** True for a NativeError, and when `errnos` are given, only for one with one of those names. */
export function isNativeError(error: unknown, ...errnos: readonly string[]): error is NativeError {
  return error instanceof NativeError && (errnos.length === 0 || errnos.includes(error.errno));
}
