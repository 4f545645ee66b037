// SPDX-License-Identifier: MIT
/**
 * The file system the urBackup scan sees: the few operations finding, loading and grouping
 * backups need, behind one interface (isomorphic-git's injected `fs`, docs/STYLE §3). The real
 * one, `nodeBackupFs`, goes through node:fs, the confined opens (src/extents/confined-open.ts)
 * and SEEK_DATA/SEEK_HOLE; `memoryBackupFs` (backup-fs-memory.ts) holds a tree in memory, so the
 * grouping rule can be tested on any tree without writing one to disk.
 */
import { readdir, realpath, stat } from 'node:fs/promises';
import { openSourceFileWithStat, readSourceFile, type Confinement, type ConfinedOpenOptions } from '../extents/confined-open.js';
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
  /** A whole small file (a `.raw.mbr`), refused without reading when over `options.maxSize`. */
  readSmallFile(path: string, confinement: Confinement | undefined, options: ConfinedOpenOptions & { readonly maxSize: number }): Promise<{ bytes: Uint8Array; mtimeMs: number }>;
  openImage(path: string, confinement: Confinement | undefined, options: ConfinedOpenOptions): Promise<BackupImageFile>;
}

/** The real file system. */
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
  readSmallFile: async (path, confinement, options) => {
    const { bytes, mtimeMs } = await readSourceFile(path, confinement, options);
    return { bytes, mtimeMs };
  },
  openImage: async (path, confinement, options) => {
    const { handle, size, mtimeMs } = await openSourceFileWithStat(path, confinement, options);
    return {
      size,
      mtimeMs,
      read: async (position, length) => {
        const buffer = new Uint8Array(length);
        const { bytesRead } = await handle.read(buffer, 0, length, position);
        return buffer.subarray(0, bytesRead);
      },
      dataRanges: (start, end) => dataRanges(handle.fd, start, end),
      close: () => handle.close(),
    };
  },
};
