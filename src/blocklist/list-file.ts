// SPDX-License-Identifier: MIT
/**
 * Reading and writing `.blocklist.bin` files. A list is written complete or not at all (temp file
 * in the same folder, fsync, rename), and its mtime is never older than its image's: VhdBlockBackup
 * refuses a list older than its image (Program.cs `CopyDiff`: "File '...' is older than '...'"),
 * and so do we (./check.ts).
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, stat, unlink, utimes } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileError } from '../errors/synthvhd-error.js';

export interface ListFile {
  readonly path: string;
  readonly bytes: Uint8Array;
  readonly mtimeMs: number;
}

/** Reads a list; a missing one is a clear error that says how to make it. */
export async function readListFile(path: string, imageLabel: string): Promise<ListFile> {
  try {
    const [bytes, info] = await Promise.all([readFile(path), stat(path)]);
    return { path, bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length), mtimeMs: info.mtimeMs };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw fileError('E_BLOCKLIST', path, `no blocklist: run \`synthvhd blocklist create ${imageLabel}\` first`, error);
    throw fileError('E_IO', path, `cannot read: ${code ?? String(error)}`, error);
  }
}

/**
 * Writes `bytes` to `path` atomically and sets its mtime to at least `notOlderThanMs` (the
 * image's mtime: a list is never older than its image). Returns the mtime set.
 */
export async function writeListFile(path: string, bytes: Uint8Array, notOlderThanMs: number): Promise<number> {
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.partial`);
  try {
    const handle = await open(temporary, 'wx', 0o644);
    try {
      let done = 0;
      while (done < bytes.length) done += (await handle.write(bytes, done, bytes.length - done, done)).bytesWritten;
      await handle.sync();
    } finally {
      await handle.close();
    }
    const written = (await stat(temporary)).mtimeMs;
    const mtimeMs = Math.max(written, Math.ceil(notOlderThanMs));
    if (mtimeMs !== written) await utimes(temporary, new Date(), new Date(mtimeMs));
    await rename(temporary, path);
    return mtimeMs;
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw fileError('E_IO', path, `cannot write the blocklist: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, error);
  }
}
