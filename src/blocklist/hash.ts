// SPDX-License-Identifier: MIT
/**
 * Computes the blocklist of a disk given as a Layout (./blocklist.ts for the format).
 *
 * - A 2 MiB block made only of `zero` extents (gaps, unbacked partitions, holes of the sources:
 *   the layouts of src/disk and src/container/open-image.ts already turned holes into zero
 *   extents) gets the constant zero-block entry without a single read. So a mostly empty 1 TiB
 *   disk is hashed in well under a second.
 * - Other blocks are read through `readAt` (the one read path of the product) in chunks of up to
 *   CHUNK_BLOCKS consecutive blocks, 2 MiB-aligned, into SharedArrayBuffers, several chunks in
 *   flight, and hashed by a pool of worker threads (./hash-pool.ts): the reads and every core's
 *   SHA-1 overlap.
 */
import type { Layout } from '../extents/extent.js';
import { extentEnd } from '../extents/extent.js';
import { readAt } from '../extents/read-at.js';
import type { Confinement } from '../extents/confined-open.js';
import { SourceFiles } from '../extents/source-files.js';
import { BLOCKLIST_BLOCK_SIZE, BLOCKLIST_HASH_SIZE, blockCountOf, blockLengthOf, zeroBlockHash } from './blocklist.js';
import { HashPool } from './hash-pool.js';
import { SynthvhdError } from '../errors/synthvhd-error.js';

/** Blocks per read: 16 MiB, large enough to stream, small enough to keep every worker busy. */
const CHUNK_BLOCKS = 8;

export interface HashOptions {
  /** Worker threads (default: one per core). */
  readonly workers?: number;
  /** Called with bytes of the disk done so far (zero blocks count as done at once). */
  readonly onProgress?: (done: number, total: number) => void;
  /**
   * Stops hashing early (the mount unmounting while it precomputes a list): every lane finishes
   * the chunk it is on, then hashDisk rejects with an E_IO error and returns no list.
   */
  readonly signal?: AbortSignal;
  /** The backup root the layout's sources must stay in (src/extents/confined-open.ts). */
  readonly confinement?: Confinement;
}

export interface HashResult {
  readonly list: Uint8Array;
  readonly blocks: number;
  /** Blocks that were all zero extents: never read. */
  readonly zeroBlocks: number;
  /** Bytes read and hashed. */
  readonly hashedBytes: number;
  readonly seconds: number;
  /** Worker threads used. */
  readonly workers: number;
}

/**
 * One flag per 2 MiB block: 1 when some extent other than `zero` touches it. One pass over the
 * extents, so the cost is the number of extents, not the disk size.
 */
export function dataBlockFlags(layout: Layout): Uint8Array {
  const flags = new Uint8Array(blockCountOf(layout.size));
  for (const extent of layout.extents) {
    if (extent.kind === 'zero') continue;
    const first = Math.floor(extent.start / BLOCKLIST_BLOCK_SIZE);
    const last = Math.floor((extentEnd(extent) - 1) / BLOCKLIST_BLOCK_SIZE);
    flags.fill(1, first, last + 1);
  }
  return flags;
}

/** Runs of consecutive data blocks, cut into chunks of at most CHUNK_BLOCKS: [first block, count]. */
function dataChunks(flags: Uint8Array): [number, number][] {
  const chunks: [number, number][] = [];
  for (let block = 0; block < flags.length; block++) {
    if (flags[block] === 0) continue;
    const last = chunks.at(-1);
    if (last !== undefined && last[0] + last[1] === block && last[1] < CHUNK_BLOCKS) last[1]++;
    else chunks.push([block, 1]);
  }
  return chunks;
}

/** The blocklist of the disk `layout`. Sources are opened read-only and closed at the end. */
export async function hashDisk(layout: Layout, options: HashOptions = {}): Promise<HashResult> {
  const started = process.hrtime.bigint();
  const size = layout.size;
  const blocks = blockCountOf(size);
  const list = new Uint8Array(blocks * BLOCKLIST_HASH_SIZE);
  const flags = dataBlockFlags(layout);
  let zeroBlocks = 0;
  let done = 0;
  for (let block = 0; block < blocks; block++) {
    if (flags[block] === 1) continue;
    const length = blockLengthOf(block, size);
    list.set(zeroBlockHash(length), block * BLOCKLIST_HASH_SIZE);
    zeroBlocks++;
    done += length;
  }
  options.onProgress?.(done, size);
  const chunks = dataChunks(flags);
  let hashedBytes = 0;
  let workers = 0;
  if (chunks.length > 0) {
    const pool = new HashPool(Math.min(options.workers ?? HashPool.defaultSize(), chunks.length));
    workers = pool.size;
    const sources = new SourceFiles(64, options.confinement);
    try {
      let next = 0;
      // Each lane owns one buffer: read a chunk, hand it to a worker, wait, repeat. Two lanes per
      // worker keep every worker busy while the next chunk is being read.
      const lane = async (): Promise<void> => {
        const buffer = new SharedArrayBuffer(CHUNK_BLOCKS * BLOCKLIST_BLOCK_SIZE);
        const view = new Uint8Array(buffer);
        while (next < chunks.length && options.signal?.aborted !== true) {
          const chunk = chunks[next++];
          if (chunk === undefined) break;
          const [first, count] = chunk;
          const start = first * BLOCKLIST_BLOCK_SIZE;
          const length = Math.min(count * BLOCKLIST_BLOCK_SIZE, size - start);
          await readAt(layout, sources, start, view, length);
          list.set(await pool.hash(buffer, length), first * BLOCKLIST_HASH_SIZE);
          hashedBytes += length;
          done += length;
          options.onProgress?.(done, size);
        }
      };
      await Promise.all(Array.from({ length: Math.min(chunks.length, pool.size * 2) }, lane));
      // Checked after every lane stopped, so no read or worker job is left running behind us.
      if (options.signal?.aborted === true) throw new SynthvhdError('E_IO', 'blocklist hashing stopped before it was complete');
    } finally {
      await Promise.all([pool.close(), sources.close()]);
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { list, blocks, zeroBlocks, hashedBytes, seconds, workers };
}
