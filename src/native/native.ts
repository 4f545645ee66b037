// SPDX-License-Identifier: MIT
/**
 * Typed access to the native addon (`native/src/synthvhd_native.cc`): the Linux file calls Node has
 * no API for: FICLONERANGE and copy_file_range with explicit offsets, SEEK_DATA/SEEK_HOLE, and the
 * file system block size. Every call runs on the libuv worker pool and never blocks the main thread.
 *
 * Arguments are plain fds and byte offsets (safe integers, so up to 2^53 - 1; the addon turns them
 * into the kernel's 64-bit fields). Keep the fds open until the promise settles. A failed syscall
 * rejects with a NativeError whose `errno` is the errno name; an argument out of range is a bug in
 * the caller and rejects with E_INTERNAL.
 *
 * It also holds the product's one decoder of urBackup's compressed block records
 * (`native/src/record_codec.cc`): decodeRecord reads and decodes a record on the pool.
 *
 * The addon is loaded on first use, so importing this module never fails; a missing build fails
 * the first call with a message that says how to build it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { internalError, SynthvhdError } from '../errors/synthvhd-error.js';
import { NativeError } from './native-error.js';

/** One run of data in a file: [offset, length], half-open [offset, offset + length). */
export type DataRange = readonly [offset: number, length: number];

/** The addon's exports, as `native/src/synthvhd_native.cc` defines them. */
interface NativeAddon {
  cloneRange(srcFd: number, srcOffset: number, dstFd: number, dstOffset: number, length: number): Promise<undefined>;
  copyFileRange(srcFd: number, srcOffset: number, dstFd: number, dstOffset: number, length: number): Promise<number>;
  seekData(fd: number, offset: number): Promise<number>;
  seekHole(fd: number, offset: number): Promise<number>;
  dataRanges(fd: number, start: number, end: number): Promise<DataRange[]>;
  fsBlockSize(fd: number): Promise<number>;
  fiemap(fd: number, start: number, end: number): Promise<PhysicalExtent[]>;
  decodeRecord(fd: number, recordOffset: number, minLength: number, maxLength: number, into: Uint8Array): Promise<number>;
  maxStoredBytes(decodedLength: number): number;
  readonly recordLimits: RecordLimits;
  lstatPaths(paths: readonly string[], follow: boolean): Promise<{ fields: Float64Array; errors: Int32Array }>;
  openConfined(path: string, root: string, maxSize: number, readLength: number): Promise<{ fd: number; size: number; mtimeMs: number; bytes: Buffer }>;
}

/** The record codec's bounds (native/src/record_codec.h), as the addon reports them. */
export interface RecordLimits {
  /** Bytes of a record's header: uint32 stored size, uint32 mode. */
  readonly headerBytes: number;
  /** The largest block a record may decode to. */
  readonly maxDecodedBytes: number;
}

/** One FIEMAP extent: [logical offset, physical offset, length, FIEMAP_EXTENT_* flags]. */
export type PhysicalExtent = readonly [logical: number, physical: number, length: number, flags: number];

/** linux/fiemap.h: the data is shared with another file (a reflink or snapshot). */
export const FIEMAP_EXTENT_SHARED = 0x2000;
/** linux/fiemap.h: flags that make `physical` meaningless (unknown, delalloc, encoded, inline). */
export const FIEMAP_EXTENT_NOT_COMPARABLE = 0x2 | 0x4 | 0x8 | 0x200;

const ADDON_FUNCTIONS = ['cloneRange', 'copyFileRange', 'seekData', 'seekHole', 'dataRanges', 'fsBlockSize', 'fiemap', 'decodeRecord', 'maxStoredBytes', 'lstatPaths', 'openConfined'] as const;

let addon: NativeAddon | undefined;

/**
 * Where the built addon lives: `<package root>/native/build/Release/synthvhd_native.node`. The package
 * root is the first directory above this file holding a package.json, which finds it both from
 * `src/native/` (tests run the .ts) and from `dist/src/native/` (the compiled CLI).
 */
export function nativeAddonPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (let dir = here; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'native', 'build', 'Release', 'synthvhd_native.node');
    if (dirname(dir) === dir) throw internalError(`no package.json above ${here}: cannot locate the native addon`);
  }
}

function loadAddon(): NativeAddon {
  if (addon !== undefined) return addon;
  const path = nativeAddonPath();
  const hint = 'build it with `npm run build:native` (needs python3, make and g++)';
  if (!existsSync(path)) {
    throw new SynthvhdError('E_IO', `${path}: the native addon is not built: ${hint}`, { path });
  }
  let loaded: unknown;
  try {
    loaded = createRequire(import.meta.url)(path);
  } catch (error) {
    throw new SynthvhdError('E_IO', `${path}: cannot load the native addon (${(error as Error).message}): re${hint}`, {
      path,
      cause: error,
    });
  }
  const missing = ADDON_FUNCTIONS.filter(
    (name) => typeof (loaded as Partial<Record<string, unknown>> | null)?.[name] !== 'function',
  );
  if (missing.length > 0) {
    throw new SynthvhdError('E_IO', `${path}: the native addon is out of date (no ${missing.join(', ')}): re${hint}`, {
      path,
    });
  }
  addon = loaded as NativeAddon;
  return addon;
}

function checkFd(name: string, fd: number): void {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fff_ffff) throw internalError(`${name} ${fd} is not a file descriptor`);
}

function checkOffset(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw internalError(`${name} ${value} is not a byte offset in [0, 2^53)`);
}

/** Turns the addon's rejection (an Error with code/errno/syscall) into a NativeError. */
async function call<T>(operation: string, run: (native: NativeAddon) => Promise<T>): Promise<T> {
  const native = loadAddon();
  try {
    return await run(native);
  } catch (error) {
    const fields = error as { code?: unknown; syscall?: unknown; bytesCopied?: unknown; reason?: unknown; message?: unknown; size?: unknown; actual?: unknown };
    if (error instanceof Error && typeof fields.code === 'string' && typeof fields.syscall === 'string') {
      throw new NativeError(`${operation}: ${error.message}`, {
        errno: fields.code,
        syscall: fields.syscall,
        bytesCopied: typeof fields.bytesCopied === 'number' ? fields.bytesCopied : undefined,
        reason: typeof fields.reason === 'string' ? fields.reason : undefined,
        size: typeof fields.size === 'number' ? fields.size : undefined,
        actual: typeof fields.actual === 'string' ? fields.actual : undefined,
        cause: error,
      });
    }
    throw internalError(`${operation}: unexpected failure in the native addon: ${String(fields.message ?? error)}`);
  }
}

/**
 * Shares `length` bytes of `srcFd` at `srcOffset` into `dstFd` at `dstOffset` (FICLONERANGE): no data
 * is copied, the destination's blocks point at the source's. All or nothing. The kernel demands
 * (`generic_remap_checks`): both offsets aligned to the file system block (see fsBlockSize), and the
 * length too unless the range ends at the source's EOF and lands at or past the destination's EOF.
 * Fails with EXDEV across file systems, EOPNOTSUPP where the file system cannot share blocks (ext4,
 * tmpfs), EINVAL on misalignment, overlap within one file, or a btrfs nodatacow/datacow mix, EBADF
 * when `dstFd` is not writable. `length` must be > 0 (the kernel reads 0 as "to EOF").
 */
export async function cloneRange(
  srcFd: number,
  srcOffset: number,
  dstFd: number,
  dstOffset: number,
  length: number,
): Promise<void> {
  checkFd('srcFd', srcFd);
  checkOffset('srcOffset', srcOffset);
  checkFd('dstFd', dstFd);
  checkOffset('dstOffset', dstOffset);
  checkOffset('length', length);
  if (length === 0) throw internalError('cloneRange: length 0 (FICLONERANGE would clone to EOF)');
  const what = `cloneRange(fd ${srcFd} @ ${srcOffset} -> fd ${dstFd} @ ${dstOffset}, ${length} bytes)`;
  await call(what, (native) => native.cloneRange(srcFd, srcOffset, dstFd, dstOffset, length));
}

/**
 * Copies `length` bytes of `srcFd` at `srcOffset` to `dstFd` at `dstOffset` with copy_file_range,
 * looping over short copies; resolves to `length`. The fds' file positions do not move. On btrfs
 * and XFS the kernel shares aligned blocks instead of copying them. Fails with code 'EOF' (and
 * `bytesCopied`) when the source ends early, and with EXDEV between file systems of different types
 * (kernel >= 5.19): then copy with pread/pwrite.
 */
export async function copyFileRange(
  srcFd: number,
  srcOffset: number,
  dstFd: number,
  dstOffset: number,
  length: number,
): Promise<number> {
  checkFd('srcFd', srcFd);
  checkOffset('srcOffset', srcOffset);
  checkFd('dstFd', dstFd);
  checkOffset('dstOffset', dstOffset);
  checkOffset('length', length);
  const what = `copyFileRange(fd ${srcFd} @ ${srcOffset} -> fd ${dstFd} @ ${dstOffset}, ${length} bytes)`;
  return call(what, (native) => native.copyFileRange(srcFd, srcOffset, dstFd, dstOffset, length));
}

/**
 * The first offset >= `offset` that holds data (lseek SEEK_DATA), or -1 when there is none before
 * EOF. Moves the fd's file position (positional reads and writes do not care).
 */
export async function seekData(fd: number, offset: number): Promise<number> {
  checkFd('fd', fd);
  checkOffset('offset', offset);
  return call(`seekData(fd ${fd} @ ${offset})`, (native) => native.seekData(fd, offset));
}

/**
 * The first offset >= `offset` that starts a hole (lseek SEEK_HOLE); EOF counts as a hole, so this
 * is at most the file size. Fails with ENXIO when `offset` is at or past EOF.
 */
export async function seekHole(fd: number, offset: number): Promise<number> {
  checkFd('fd', fd);
  checkOffset('offset', offset);
  return call(`seekHole(fd ${fd} @ ${offset})`, (native) => native.seekHole(fd, offset));
}

/**
 * The data ranges of `[start, end)` (end defaults to EOF), sorted, clipped to the window, in one
 * pool job. Everything else in the window is a hole or past EOF. Granularity is the file system's
 * block or extent, so a range may include zeros written next to data. A file system without hole
 * tracking reports the whole file as one range.
 */
export async function dataRanges(fd: number, start = 0, end = Number.MAX_SAFE_INTEGER): Promise<DataRange[]> {
  checkFd('fd', fd);
  checkOffset('start', start);
  checkOffset('end', end);
  if (end < start) throw internalError(`dataRanges: end ${end} < start ${start}`);
  return call(`dataRanges(fd ${fd}, ${start}..${end})`, (native) => native.dataRanges(fd, start, end));
}

/**
 * The block size of the file system holding `fd` (fstatfs f_bsize): on btrfs and XFS, the unit
 * FICLONERANGE offsets must be aligned to (4096 on usual file systems).
 */
export async function fsBlockSize(fd: number): Promise<number> {
  checkFd('fd', fd);
  return call(`fsBlockSize(fd ${fd})`, (native) => native.fsBlockSize(fd));
}

/**
 * The physical extents of `fd` that overlap `[start, end)` (FS_IOC_FIEMAP, delayed allocations
 * flushed first), in logical order; holes have none. Extents are not clipped to the window.
 */
export async function fiemap(fd: number, start: number, end: number): Promise<PhysicalExtent[]> {
  checkFd('fd', fd);
  checkOffset('start', start);
  checkOffset('end', end);
  if (end < start) throw internalError(`fiemap: end ${end} < start ${start}`);
  return call(`fiemap(fd ${fd}, ${start}..${end})`, (native) => native.fiemap(fd, start, end));
}

/**
 * Reads the urBackup compressed block record at `recordOffset` of `fd` and decodes it into
 * `into[0, expectedLength)` on the libuv pool (native/src/record_codec.cc: stored, zlib or zstd;
 * docs/urbackup-image-formats.md §2). The record must decode to exactly `expectedLength` bytes.
 * A corrupt record rejects with a NativeError whose errno is 'EIO' and whose `reason` is the
 * codec's one line; a failed read with its errno. Keep `fd` open, and `into` neither transferred
 * nor detached, until the promise settles.
 */
export async function decodeRecord(fd: number, recordOffset: number, expectedLength: number, into: Uint8Array): Promise<void> {
  await decodeRecordUpTo(fd, recordOffset, expectedLength, expectedLength, into);
}

/**
 * As decodeRecord, but the record may decode to any length in [minLength, maxLength]; resolves to
 * that length. Only for learning the length of a compressed file's last block, which urBackup's
 * reader accepts short (CompressedFile.cpp fillCache).
 */
export async function decodeRecordUpTo(fd: number, recordOffset: number, minLength: number, maxLength: number, into: Uint8Array): Promise<number> {
  checkFd('fd', fd);
  checkOffset('recordOffset', recordOffset);
  checkOffset('minLength', minLength);
  checkOffset('maxLength', maxLength);
  if (minLength > maxLength || maxLength > into.length) {
    throw internalError(`decodeRecord: lengths ${minLength}..${maxLength} do not fit a ${into.length}-byte buffer`);
  }
  const what = `decodeRecord(fd ${fd} @ ${recordOffset}, ${minLength === maxLength ? maxLength : `${minLength}..${maxLength}`} bytes)`;
  return call(what, (native) => native.decodeRecord(fd, recordOffset, minLength, maxLength, into));
}

/** The codec's bounds and its stored-size bound for `decodedLength` (tests check the TypeScript copy against these). */
export function nativeRecordLimits(decodedLength: number): RecordLimits & { readonly maxStoredBytes: number } {
  checkOffset('decodedLength', decodedLength);
  const native = loadAddon();
  return { ...native.recordLimits, maxStoredBytes: native.maxStoredBytes(decodedLength) };
}

/** What lstat (or stat) says of one path, the fields Node's Stats has that synthvhd uses. */
export interface EntryStat {
  readonly dev: number;
  readonly ino: number;
  /** st_mode: type and permission bits. */
  readonly mode: number;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly blksize: number;
  readonly blocks: number;
  /** Times as Node's Stats has them: sec * 1e3 + nsec / 1e6. */
  readonly atimeMs: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
}

const STAT_FIELDS = 12;

/**
 * lstat of every path (stat when `follow`), in one pool job: the mount's walk asks this of every
 * entry of a folder and of every source of a disk (native/src/source_files.cc). An entry is
 * undefined where its call failed (gone, no permission on the way).
 */
export async function lstatPaths(paths: readonly string[], follow = false): Promise<(EntryStat | undefined)[]> {
  if (paths.length === 0) return [];
  const { fields, errors } = await call(`lstatPaths(${paths.length} paths)`, (native) => native.lstatPaths(paths, follow));
  return paths.map((_, index) => {
    if (errors[index] !== 0) return undefined;
    const at = index * STAT_FIELDS;
    const field = (offset: number): number => fields[at + offset] ?? 0;
    return {
      dev: field(0),
      ino: field(1),
      mode: field(2),
      nlink: field(3),
      uid: field(4),
      gid: field(5),
      size: field(6),
      blksize: field(7),
      blocks: field(8),
      atimeMs: field(9),
      mtimeMs: field(10),
      ctimeMs: field(11),
    };
  });
}

/** What openConfined opened: an open fd (when nothing was read) or the bytes read (fd -1, closed). */
export interface ConfinedFile {
  readonly fd: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly bytes: Buffer;
}

/**
 * Opens `path` read-only, non-blocking, and checks it (native/src/source_files.cc): a regular
 * file of at most `maxSize` bytes and, when `root` is not '', not a final symlink and, as the
 * kernel resolved it, inside `root`; all before a byte is read. With `readLength` > 0 it reads up
 * to that many bytes from the start and closes the file; otherwise the caller owns the fd. One
 * pool job: the open, fstat, readlink, read and close of src/extents/confined-open.ts, which as
 * separate promises were most of a walk's opens. A refusal rejects with a NativeError whose errno
 * is E_SYMLINK, E_NOT_REGULAR, E_TOO_LARGE (`size`) or E_OUTSIDE_ROOT (`actual`).
 */
export async function openConfined(path: string, root: string, maxSize: number, readLength: number): Promise<ConfinedFile> {
  checkOffset('maxSize', maxSize);
  checkOffset('readLength', readLength);
  return call(`openConfined(${path})`, (native) => native.openConfined(path, root, maxSize, readLength));
}
