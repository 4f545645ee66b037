// SPDX-License-Identifier: MIT
/**
 * The file system the urBackup scan sees: the few operations finding, loading and grouping
 * backups need, behind one interface (isomorphic-git's injected `fs`, docs/STYLE §3). The real
 * one, `nodeBackupFs`, goes through node:fs, the confined opens (src/extents/confined-open.ts)
 * and SEEK_DATA/SEEK_HOLE; `memoryBackupFs` (backup-fs-memory.ts) holds a tree in memory, so the
 * grouping rule can be tested on any tree without writing one to disk.
 */
import { close, closeSync, read, readSync } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import {
  openSourceFdSync,
  openSourceNative,
  readSourceFileSync,
  type Confinement,
  type ConfinedOpenOptions,
} from '../extents/confined-open.js';
import { dataRanges, type DataRange } from '../native/native.js';

/** One opened image file (`.raw`): read-only, positional. */
export interface BackupImageFile {
  readonly size: number;
  readonly mtimeMs: number;
  /** Up to `length` bytes at `position` (fewer at the end of the file). */
  read(position: number, length: number): Promise<Uint8Array>;
  /** The ranges of `[start, end)` that hold data, sorted; the rest are holes. */
  dataRanges(start: number, end: number): Promise<DataRange[]>;
  close(): Promise<void>;
}

export interface BackupFs {
  realpath(path: string): Promise<string>;
  /** The names in a directory; rejects when it cannot be listed. */
  readdir(path: string): Promise<string[]>;
  /** False when `path` is not a directory or cannot be looked at. */
  isDirectory(path: string): Promise<boolean>;
  /**
   * A whole small file (a `.raw.mbr`), refused without reading when over `options.maxSize`, as
   * `parse` makes it into a value. `parse` runs before this returns and must not keep the bytes:
   * the synchronous implementation reads every file into one reused buffer.
   */
  parseSmallFile<T>(path: string, confinement: Confinement | undefined, options: ConfinedOpenOptions & { readonly maxSize: number }, parse: (bytes: Uint8Array) => T): Promise<{ value: T; mtimeMs: number }>;
  openImage(path: string, confinement: Confinement | undefined, options: ConfinedOpenOptions): Promise<BackupImageFile>;
}

/** pread on a plain fd, as a promise (fs/promises reads only through FileHandles). */
function readFd(fd: number, position: number, length: number): Promise<Uint8Array> {
  return new Promise((resolvePromise, reject) => {
    const buffer = new Uint8Array(length);
    read(fd, buffer, 0, length, position, (error, bytesRead) => {
      if (error === null) resolvePromise(buffer.subarray(0, bytesRead));
      else reject(error);
    });
  });
}

function closeFd(fd: number): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    close(fd, (error) => {
      if (error === null) resolvePromise();
      else reject(error);
    });
  });
}

/**
 * The real file system. The confined opens are one pool job each (openSourceNative: open, checks
 * and, for a small file, its read and close), not a promise per system call: the mount composes
 * a disk for every folder a walk looks at.
 */
export const nodeBackupFs: BackupFs = {
  realpath: (path) => realpath(path),
  readdir: (path) => readdir(path),
  isDirectory: async (path) => {
    try {
      return (await stat(path)).isDirectory();
    } catch {
      return false;
    }
  },
  parseSmallFile: async (path, confinement, options, parse) => {
    const { bytes, mtimeMs } = await openSourceNative(path, confinement, { ...options, readLength: options.maxSize });
    return { value: parse(bytes), mtimeMs };
  },
  openImage: async (path, confinement, options) => {
    const { fd, size, mtimeMs } = await openSourceNative(path, confinement, options);
    return {
      size,
      mtimeMs,
      read: (position, length) => readFd(fd, position, length),
      dataRanges: (start, end) => dataRanges(fd, start, end),
      close: () => closeFd(fd),
    };
  },
};

/**
 * The real file system through synchronous system calls, for one-shot commands that scan a whole
 * tree (`ls`, `doctor`). Scanning 10 000 disks is some 200 000 opens, fstats, readlinks, reads
 * and closes of page-cached metadata: as promises each paid a thread-pool round trip and a
 * FileHandle, most of the scan's time; as plain calls each takes microseconds (folders are still
 * listed asynchronously, several at a time). Never for the
 * mount, whose thread must stay free to answer the kernel. Same checks as `nodeBackupFs`.
 */
let smallFileBuffer: Buffer | undefined;

export const scanBackupFs: BackupFs = {
  // Listing folders stays asynchronous: on some file systems (overlayfs) a readdir is slow, and
  // the thread pool runs several at once.
  realpath: (path) => realpath(path),
  readdir: (path) => readdir(path),
  isDirectory: (path) => nodeBackupFs.isDirectory(path),
  // Read and parsed in one synchronous step, so one buffer serves every file: a scan of 10 000
  // disks reads 20 000 `.raw.mbr` files of some 34 KB, whose fresh buffers (656 MB in all) were
  // most of what the garbage collector had to catch up with, and of the peak RSS.
  parseSmallFile: (path, confinement, options, parse) =>
    settled(() => {
      const { bytes, mtimeMs } = readSourceFileSync(path, confinement, { ...options, into: (smallFileBuffer ??= Buffer.allocUnsafe(options.maxSize)) });
      return { value: parse(bytes), mtimeMs };
    }),
  openImage: (path, confinement, options) =>
    settled(() => {
      const { fd, size, mtimeMs } = openSourceFdSync(path, confinement, options);
      return {
        size,
        mtimeMs,
        read: (position, length) =>
          settled(() => {
            const buffer = new Uint8Array(length);
            return buffer.subarray(0, readSync(fd, buffer, 0, length, position));
          }),
        dataRanges: (start, end) => dataRanges(fd, start, end),
        close: () =>
          settled(() => {
            closeSync(fd);
          }),
      };
    }),
};

/** The result of synchronous `work` as a promise: a throw becomes a rejection, as for async calls. */
function settled<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new Error(String(error)));
  }
}
