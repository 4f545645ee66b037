// SPDX-License-Identifier: MIT
/**
 * The decoded blocks of compressed extents (./extent.ts `CompressedExtent`), kept in a
 * bytes-bounded LRU (lru-cache `maxSize`): a sequential reader of a served .vhdz decodes each
 * 2 MiB block once however small its reads are, and concurrent readers of one block share one
 * decode. Blocks are read and decoded by the caller's `decode` (the native record codec on the
 * libuv pool, ./compressed-record.ts). A corrupt block is logged once (file and record) by the
 * caller and fails that read with E_IO; it is not cached, so a repaired file reads again.
 *
 * A block is named by file, record offset *and* the length it must decode to: one record may be
 * pointed at by two index entries, the file's short last block and a whole one (a damaged or
 * crafted index), and a block decoded for one must never serve the other. Every copy checks the
 * block's real length against what the extent needs.
 */
import { LRUCache } from 'lru-cache';
import { fileError } from '../errors/synthvhd-error.js';
import type { CompressedExtent } from './extent.js';

/** The block the record at `record` of `path` decodes to, exactly `blockLength` bytes, or a failure. */
export type BlockDecoder = (path: string, record: number, blockLength: number) => Promise<Uint8Array>;

/** Default cache: 64 MiB = 32 urBackup blocks (a 1 MiB FUSE read spans at most two). */
export const DEFAULT_BLOCK_CACHE_BYTES = 64 * 1024 * 1024;

type BlockRef = Pick<CompressedExtent, 'path' | 'record' | 'blockLength'>;

/** The cache key of a block: its file, its record and the length it decodes to. */
export function blockKey(extent: BlockRef): string {
  return `${extent.record}\u0000${extent.blockLength}\u0000${extent.path}`;
}

export class DecodedBlocks {
  private readonly cache: LRUCache<string, Uint8Array>;
  private readonly inFlight = new Map<string, Promise<Uint8Array>>();

  constructor(
    private readonly decode: BlockDecoder,
    maxBytes = DEFAULT_BLOCK_CACHE_BYTES,
  ) {
    this.cache = new LRUCache<string, Uint8Array>({ maxSize: maxBytes, sizeCalculation: (block) => Math.max(1, block.length) });
  }

  /** The decoded block `extent` points into: exactly `extent.blockLength` bytes. */
  block(extent: BlockRef): Promise<Uint8Array> {
    const key = blockKey(extent);
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

  private async load(extent: BlockRef): Promise<Uint8Array> {
    const block = await this.decode(extent.path, extent.record, extent.blockLength);
    if (block.length !== extent.blockLength) {
      throw fileError('E_IO', extent.path, `block record at ${extent.record}: decoded ${block.length} bytes, expected ${extent.blockLength}`);
    }
    return block;
  }

  /** Copies [skip, skip + length) of the extent's block (plus `offset` into the extent) into `into`. */
  async readInto(extent: CompressedExtent, offset: number, into: Uint8Array, intoOffset: number, length: number): Promise<void> {
    const block = await this.block(extent);
    const from = extent.skip + offset;
    // Never copy short: a piece outside the block is an error, not fewer bytes.
    if (from < 0 || length < 0 || from + length > block.length) {
      throw fileError('E_IO', extent.path, `block record at ${extent.record}: bytes ${from}..${from + length} are outside its ${block.length}-byte block`);
    }
    into.set(block.subarray(from, from + length), intoOffset);
  }

  clear(): void {
    this.cache.clear();
  }
}
