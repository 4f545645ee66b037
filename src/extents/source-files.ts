// SPDX-License-Identifier: MIT
/**
 * Read-only file handles for the source files named by `file` extents, kept open in an LRU so
 * that a FUSE read or a copy loop does not pay an open() per call. Sources are always opened
 * O_RDONLY: the backup is never written to. With a confinement (the backup root), every open
 * goes through ./confined-open.ts: no symlink, regular files only, inside the root, checked on
 * the opened descriptor, so a source swapped for a link after the disk was composed is refused.
 */
import type { FileHandle } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import { fileError, isSynthvhdError } from '../errors/synthvhd-error.js';
import { openSourceFile, type Confinement } from './confined-open.js';
import { sharedDecodePool } from './decode-pool.js';
import { DecodedBlocks } from './decoded-blocks.js';
import type { CompressedExtent } from './extent.js';
import { logger } from '../util/logger.js';

export class SourceFiles {
  private readonly handles: LRUCache<string, Promise<FileHandle>>;
  /** Decoded blocks of `compressed` extents, made on first use (./decoded-blocks.ts). */
  private blocks: { readonly cache: DecodedBlocks } | undefined;
  /** Blocks already reported as corrupt: one log line each, not one per read. */
  private readonly reported = new Set<string>();

  constructor(
    maxOpen = 256,
    private readonly confinement?: Confinement,
  ) {
    this.handles = new LRUCache<string, Promise<FileHandle>>({
      max: maxOpen,
      dispose: (handle) => {
        handle.then((h) => h.close()).catch(() => undefined);
      },
    });
  }

  /** The open handle for `path`, opening it on first use. */
  get(path: string): Promise<FileHandle> {
    let handle = this.handles.get(path);
    if (handle === undefined) {
      handle = openSourceFile(path, this.confinement);
      // A failed open must not stay cached: the file may appear later (live backup roots).
      handle.catch(() => this.handles.delete(path));
      this.handles.set(path, handle);
    }
    return handle;
  }

  /** Forgets `path` (after it was deleted or replaced). */
  forget(path: string): void {
    this.handles.delete(path);
  }

  /** Fills `into[intoOffset, intoOffset + length)` from `path` at `position`, or fails. */
  async readFully(path: string, position: number, into: Uint8Array, intoOffset: number, length: number): Promise<void> {
    let handle: FileHandle;
    try {
      handle = await this.get(path);
    } catch (error) {
      if (isSynthvhdError(error)) throw error;
      throw fileError('E_IO', path, `cannot open: ${(error as Error).message}`, error);
    }
    let done = 0;
    while (done < length) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(into, intoOffset + done, length - done, position + done));
      } catch (error) {
        throw fileError('E_IO', path, `read failed at offset ${position + done}: ${(error as Error).message}`, error);
      }
      if (bytesRead === 0) {
        throw fileError('E_IO', path, `unexpected end of file at offset ${position + done} (file shrank?)`);
      }
      done += bytesRead;
    }
  }

  /**
   * Fills `into[intoOffset, intoOffset + length)` from a `compressed` extent, `offset` bytes into
   * it: the block is read through these handles and decoded on worker threads, once while cached.
   * A corrupt block fails the read (E_IO) and is logged once, naming the file and the record.
   */
  async readCompressed(extent: CompressedExtent, offset: number, into: Uint8Array, intoOffset: number, length: number): Promise<void> {
    if (this.blocks === undefined) {
      const pool = sharedDecodePool();
      const cache = new DecodedBlocks(pool, async (path, position, count) => {
        const buffer = new Uint8Array(count);
        await this.readFully(path, position, buffer, 0, count);
        return buffer;
      });
      this.blocks = { cache };
    }
    try {
      await this.blocks.cache.readInto(extent, offset, into, intoOffset, length);
    } catch (error) {
      const key = `${extent.record}\u0000${extent.path}`;
      if (!this.reported.has(key)) {
        this.reported.add(key);
        logger.warn(isSynthvhdError(error) ? error.message : `${extent.path}: block record at ${extent.record}: ${String(error)}`);
      }
      throw error;
    }
  }

  async close(): Promise<void> {
    // The decoded blocks go with this object; the pool is the process's (sharedDecodePool).
    this.blocks = undefined;
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.allSettled(all.map(async (handle) => (await handle).close()));
  }
}
