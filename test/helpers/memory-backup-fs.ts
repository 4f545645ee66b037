// SPDX-License-Identifier: MIT
/**
 * A backup tree in memory, as the urBackup scan sees it (src/urbackup/backup-fs.ts): folders,
 * small files with their bytes, and sparse image files given by their size and the few ranges
 * that hold data (everything else is a hole and reads as zeros). Lets the grouping rule be
 * tested on trees of any shape without writing a byte to disk.
 */
import { dirname, isAbsolute, relative } from 'node:path';
import type { BackupFs, BackupImageFile } from '../../src/urbackup/backup-fs.js';

interface MemoryFile {
  readonly size: number;
  readonly mtimeMs: number;
  /** Data ranges, sorted, non-overlapping; bytes outside them read as zeros. */
  readonly data: readonly { readonly offset: number; readonly bytes: Uint8Array }[];
}

function errno(code: string, path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${path}`), { code });
}

export class MemoryBackupFs implements BackupFs {
  private readonly files = new Map<string, MemoryFile>();
  private readonly folders = new Set<string>(['/']);

  /** A folder (and its parents). */
  folder(path: string): this {
    for (let at = path; !this.folders.has(at); at = dirname(at)) this.folders.add(at);
    return this;
  }

  /** A file of `size` bytes (default: the data's end) holding `data` at the given offsets. */
  file(path: string, data: readonly { offset: number; bytes: Uint8Array }[], options: { size?: number; mtimeMs?: number } = {}): this {
    this.folder(dirname(path));
    const sorted = [...data].sort((a, b) => a.offset - b.offset);
    const end = sorted.reduce((max, range) => Math.max(max, range.offset + range.bytes.length), 0);
    this.files.set(path, { size: options.size ?? end, mtimeMs: options.mtimeMs ?? 0, data: sorted });
    return this;
  }

  realpath(path: string): Promise<string> {
    return this.folders.has(path) || this.files.has(path) ? Promise.resolve(path) : Promise.reject(errno('ENOENT', path));
  }

  readdir(path: string): Promise<string[]> {
    if (!this.folders.has(path)) return Promise.reject(errno(this.files.has(path) ? 'ENOTDIR' : 'ENOENT', path));
    const names = new Set<string>();
    for (const entry of [...this.folders, ...this.files.keys()]) {
      if (entry !== path && dirname(entry) === path) names.add(entry.slice(path === '/' ? 1 : path.length + 1));
    }
    return Promise.resolve([...names]);
  }

  isDirectory(path: string): Promise<boolean> {
    return Promise.resolve(this.folders.has(path));
  }

  async parseSmallFile<T>(path: string, confinement: { readonly root: string } | undefined, options: { readonly maxSize: number }, parse: (bytes: Uint8Array) => T): Promise<{ value: T; mtimeMs: number }> {
    const image = await this.openImage(path, confinement);
    if (image.size > options.maxSize) throw errno('EFBIG', path);
    return { value: parse(await image.read(0, image.size)), mtimeMs: image.mtimeMs };
  }

  openImage(path: string, confinement: { readonly root: string } | undefined): Promise<BackupImageFile> {
    const file = this.files.get(path);
    if (file === undefined) return Promise.reject(errno('ENOENT', path));
    if (confinement !== undefined) {
      const inside = relative(confinement.root, path);
      if (inside.startsWith('..') || isAbsolute(inside)) return Promise.reject(errno('EACCES', path));
    }
    return Promise.resolve({
      size: file.size,
      mtimeMs: file.mtimeMs,
      read: (position, length) => {
        const out = new Uint8Array(Math.max(0, Math.min(length, file.size - position)));
        for (const { offset, bytes } of file.data) {
          const from = Math.max(offset, position);
          const to = Math.min(offset + bytes.length, position + out.length);
          if (from < to) out.set(bytes.subarray(from - offset, to - offset), from - position);
        }
        return Promise.resolve(out);
      },
      dataRanges: (start, end) =>
        Promise.resolve(
          file.data
            .map(({ offset, bytes }) => [Math.max(offset, start), Math.min(offset + bytes.length, end, file.size)] as const)
            .filter(([from, to]) => from < to)
            .map(([from, to]) => [from, to - from] as const),
        ),
      close: () => Promise.resolve(),
    });
  }
}
