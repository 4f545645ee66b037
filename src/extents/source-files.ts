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
import { readCompressedRecord } from './compressed-record.js';
import { DecodedBlocks, blockKey } from './decoded-blocks.js';
import type { CompressedExtent } from './extent.js';
import { logger } from '../util/logger.js';

export class SourceFiles {
  private readonly handles: LRUCache<string, Promise<FileHandle>>;
  /** Decoded blocks of `compressed` extents, made on first use (./decoded-blocks.ts). */
  private blocks: { readonly cache: DecodedBlocks } | undefined;
  /** Blocks already reported as corrupt: one log line each, not one per read. */
  private readonly reported = new Set<string>();
  /**
   * Handles lent to the native decoder by their fd, with the number of decodes in flight: one
   * evicted from the LRU (or closed) meanwhile is closed when its last decode settles, so its fd
   * number is never reused under a decode. (A FileHandle's own reads hold it open by themselves.)
   */
  private readonly lent = new Map<Promise<FileHandle>, number>();
  private readonly closeWhenReturned = new Set<Promise<FileHandle>>();

  constructor(
    maxOpen = 256,
    private readonly confinement?: Confinement,
    /** Log a corrupt block once (default); off where the caller reports the failure itself (materialize). */
    private readonly logCorruptBlocks = true,
  ) {
    this.handles = new LRUCache<string, Promise<FileHandle>>({
      max: maxOpen,
      dispose: (handle) => {
        this.closeHandle(handle);
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

  private closeHandle(handle: Promise<FileHandle>): void {
    if (this.lent.has(handle)) {
      this.closeWhenReturned.add(handle);
      return;
    }
    handle.then((h) => h.close()).catch(() => undefined);
  }

  /** Runs `work` on the open handle of `path`, which stays open until `work` settles. */
  private async withHandle<T>(path: string, work: (handle: FileHandle) => Promise<T>): Promise<T> {
    const pending = this.get(path);
    this.lent.set(pending, (this.lent.get(pending) ?? 0) + 1);
    try {
      let handle: FileHandle;
      try {
        handle = await pending;
      } catch (error) {
        if (isSynthvhdError(error)) throw error;
        throw fileError('E_IO', path, `cannot open: ${(error as Error).message}`, error);
      }
      return await work(handle);
    } finally {
      const count = (this.lent.get(pending) ?? 1) - 1;
      if (count > 0) {
        this.lent.set(pending, count);
      } else {
        this.lent.delete(pending);
        if (this.closeWhenReturned.delete(pending)) this.closeHandle(pending);
      }
    }
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
   * it: the block is read through these handles and decoded by the native record codec on the
   * libuv pool, once while cached.
   * A corrupt block fails the read (E_IO) and is logged once, naming the file and the record.
   */
  async readCompressed(extent: CompressedExtent, offset: number, into: Uint8Array, intoOffset: number, length: number): Promise<void> {
    if (this.blocks === undefined) {
      const cache = new DecodedBlocks((path, record, blockLength) =>
        this.withHandle(path, (handle) => readCompressedRecord(handle, path, record, blockLength)),
      );
      this.blocks = { cache };
    }
    try {
      await this.blocks.cache.readInto(extent, offset, into, intoOffset, length);
    } catch (error) {
      const key = blockKey(extent);
      if (this.logCorruptBlocks && !this.reported.has(key)) {
        this.reported.add(key);
        logger.warn(isSynthvhdError(error) ? error.message : `${extent.path}: block record at ${extent.record}: ${String(error)}`);
      }
      throw error;
    }
  }

  async close(): Promise<void> {
    // The decoded blocks go with this object. Handles lent to a decode in flight close when it settles.
    this.blocks = undefined;
    const idle = [...this.handles.values()].filter((handle) => !this.lent.has(handle));
    this.handles.clear(); // dispose: closes the idle handles, marks the lent ones
    await Promise.allSettled(idle.map(async (handle) => (await handle).close()));
  }
}
