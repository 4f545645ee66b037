// SPDX-License-Identifier: MIT
/**
 * The decoded blocks of compressed extents (./extent.ts `CompressedExtent`), kept in a
 * bytes-bounded LRU (lru-cache `maxSize`): a sequential reader of a served .vhdz decodes each
 * 2 MiB block once however small its reads are, and concurrent readers of one block share one
 * decode. Records are read by the caller's `readRecord` (confined handles, libuv pool); decoding
 * runs on ./decode-pool.ts's workers. A corrupt block is logged once (file and record) by the
 * caller and fails that read with E_IO; it is not cached, so a repaired file reads again.
 */
import { LRUCache } from 'lru-cache';
import { fileError, isSynthvhdError } from '../errors/synthvhd-error.js';
import { RECORD_HEADER_SIZE, parseRecordHeader } from './compressed-record.js';
import type { DecodePool } from './decode-pool.js';
import type { CompressedExtent } from './extent.js';

/** Reads `length` bytes of `path` at `position` into a new buffer, or fails. */
export type RecordReader = (path: string, position: number, length: number) => Promise<Uint8Array>;

/** Default cache: 64 MiB = 32 urBackup blocks (a 1 MiB FUSE read spans at most two). */
export const DEFAULT_BLOCK_CACHE_BYTES = 64 * 1024 * 1024;

/** Upper bound of a record payload: a zstd/zlib bound of a 64 MiB block (CompressedFile allows 2 MiB). */
const MAX_PAYLOAD = 80 * 1024 * 1024;

export class DecodedBlocks {
  private readonly cache: LRUCache<string, Uint8Array>;
  private readonly inFlight = new Map<string, Promise<Uint8Array>>();

  constructor(
    private readonly pool: DecodePool,
    private readonly readRecord: RecordReader,
    maxBytes = DEFAULT_BLOCK_CACHE_BYTES,
  ) {
    this.cache = new LRUCache<string, Uint8Array>({ maxSize: maxBytes, sizeCalculation: (block) => Math.max(1, block.length) });
  }

  /** The decoded block `extent` points into. */
  block(extent: Pick<CompressedExtent, 'path' | 'record' | 'blockLength'>): Promise<Uint8Array> {
    const key = `${extent.record}\u0000${extent.path}`;
    const cached = this.cache.get(key);
    if (cached !== undefined) return Promise.resolve(cached);
    let pending = this.inFlight.get(key);
    if (pending === undefined) {
      pending = this.load(extent).finally(() => this.inFlight.delete(key));
      pending.then(
        (block) => this.cache.set(key, block),
        () => undefined,
      );
      this.inFlight.set(key, pending);
    }
    return pending;
  }

  private async load(extent: Pick<CompressedExtent, 'path' | 'record' | 'blockLength'>): Promise<Uint8Array> {
    const head = parseRecordHeader(await this.readRecord(extent.path, extent.record, RECORD_HEADER_SIZE));
    if (head.storedSize > MAX_PAYLOAD) {
      throw fileError('E_IO', extent.path, `corrupt compressed block record at ${extent.record}: payload size ${head.storedSize}`);
    }
    const payload = await this.readRecord(extent.path, extent.record + RECORD_HEADER_SIZE, head.storedSize);
    try {
      return await this.pool.decode(head.mode, payload, extent.blockLength);
    } catch (error) {
      if (isSynthvhdError(error) && error.path === undefined) throw fileError(error.code, extent.path, `block record at ${extent.record}: ${error.message}`, error);
      throw error;
    }
  }

  /** Copies [skip, skip + length) of the extent's block (plus `offset` into the extent) into `into`. */
  async readInto(extent: CompressedExtent, offset: number, into: Uint8Array, intoOffset: number, length: number): Promise<void> {
    const block = await this.block(extent);
    const from = extent.skip + offset;
    into.set(block.subarray(from, from + length), intoOffset);
  }

  clear(): void {
    this.cache.clear();
  }
}
