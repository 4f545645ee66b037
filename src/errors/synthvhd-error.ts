// SPDX-License-Identifier: MIT
/**
 * The one error type of synthvhd. Every failure a user can cause (bad input, a limit of a
 * format, an I/O problem) is a SynthvhdError with a stable `code`; the CLI prints
 * `synthvhd: <message>` and exits non-zero, the FUSE layer maps the code to an errno.
 *
 * Messages follow "<object>: <what is wrong>" and name the file.
 */
export type ErrorCode =
  /** A `.raw.mbr` cannot be parsed (truncated, unknown version, bad string length). */
  | 'E_MBRDATA'
  /** A `.raw` image is missing, too short, or disagrees with its `.raw.mbr`. */
  | 'E_RAW_IMAGE'
  /** The saved partition table is unusable (bad CRC on both copies, bad signature). */
  | 'E_PARTITION_TABLE'
  /** A volume cannot be placed on its disk (no such partition, too small, serial mismatch). */
  | 'E_PLACEMENT'
  /** A backup has no `.raw.sync`: urBackup has not finished it. */
  | 'E_INCOMPLETE'
  /** A container format cannot express this disk (VHD above 2040 GiB, 4Kn as VHD). */
  | 'E_FORMAT_LIMIT'
  /** A path given on the command line is not what the command expects. */
  | 'E_USAGE'
  /** A `.vhd`/`.vhdx` being inspected is not valid. */
  | 'E_CONTAINER'
  /** `--reflink always` was asked for but the output cannot share blocks with the source. */
  | 'E_REFLINK'
  /** A blocklist is missing, stale, of the wrong length, or the two disks compared differ in size. */
  | 'E_BLOCKLIST'
  /** Reading or writing a file failed. */
  | 'E_IO'
  /**
   * A backup's source file is not used because serving it could leak bytes: a symbolic link, not
   * a regular file, outside the backup root, or a metadata file larger than its format allows.
   */
  | 'E_UNSAFE_SOURCE'
  /** A broken invariant: a bug in synthvhd. */
  | 'E_INTERNAL';

export class SynthvhdError extends Error {
  override readonly name = 'SynthvhdError';
  readonly code: ErrorCode;
  /** The file the message is about, when there is one. */
  readonly path: string | undefined;

  constructor(code: ErrorCode, message: string, options: { path?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.path = options.path;
  }

  toJSON(): { code: ErrorCode; message: string; path?: string } {
    return this.path === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, path: this.path };
  }
}

export function isSynthvhdError(error: unknown): error is SynthvhdError {
  return error instanceof SynthvhdError;
}

/** Builds an error about one file: the message reads "<path>: <problem>". */
export function fileError(code: ErrorCode, path: string, problem: string, cause?: unknown): SynthvhdError {
  return new SynthvhdError(code, `${path}: ${problem}`, cause === undefined ? { path } : { path, cause });
}

/** The errno name of a failed system call (`ENOENT`), or the error as text when it has none. */
export function systemErrorCode(error: unknown): string {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : String(error);
}

/** For broken invariants only: these are bugs, never user errors. */
export function internalError(message: string): SynthvhdError {
  return new SynthvhdError('E_INTERNAL', `internal error (please report): ${message}`);
}
