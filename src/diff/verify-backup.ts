// SPDX-License-Identifier: MIT
/**
 * `synthvhd verify`: re-hashes a volume backup and compares it with its `.raw.hash`, chunk by
 * chunk. Holes are hashed without being read; data is read with several reads in flight.
 */
import { fileError } from '../errors/synthvhd-error.js';
import { SourceFiles } from '../extents/source-files.js';
import type { LoadedVolume } from '../urbackup/load-volume.js';
import { chunkCountOf, readRawHashes, RAW_HASH_CHUNK } from '../urbackup/raw-hash.js';
import { chunksWithData, hashChunk } from '../urbackup/volume-chunks.js';

export interface VerifyReport {
  readonly raw: string;
  readonly chunkCount: number;
  readonly chunkSize: number;
  /** Chunks that were read and hashed (the rest are holes). */
  readonly chunksRead: number;
  /** Indices of chunks whose data does not match `.raw.hash`. */
  readonly mismatches: readonly number[];
  readonly seconds: number;
}

const IN_FLIGHT = 8;

export async function verifyVolume(volume: LoadedVolume, onProgress?: (done: number, total: number) => void): Promise<VerifyReport> {
  const started = process.hrtime.bigint();
  const hashes = await readRawHashes(volume.backup.rawPath, volume.volumeLength, { root: volume.backup.root });
  if ('problem' in hashes) throw fileError('E_RAW_IMAGE', `${volume.backup.rawPath}.hash`, hashes.problem.replace(/^[^:]*: /, ''));
  const chunkCount = chunkCountOf(volume.volumeLength);
  const withData = chunksWithData(volume, chunkCount);
  const sources = new SourceFiles(4, { root: volume.backup.root });
  const mismatches: number[] = [];
  let next = 0;
  let done = 0;
  let chunksRead = 0;
  try {
    const worker = async (): Promise<void> => {
      const scratch = new Uint8Array(RAW_HASH_CHUNK);
      for (let index = next++; index < chunkCount; index = next++) {
        const hasData = withData[index] === 1;
        if (hasData) chunksRead++;
        const actual = await hashChunk(sources, volume, index, hasData, scratch);
        if (!actual.equals(hashes.hash(index))) mismatches.push(index);
        done++;
        if (done % 256 === 0) onProgress?.(done, chunkCount);
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  } finally {
    await sources.close();
  }
  onProgress?.(chunkCount, chunkCount);
  return {
    raw: volume.backup.rawPath,
    chunkCount,
    chunkSize: RAW_HASH_CHUNK,
    chunksRead,
    mismatches: mismatches.sort((a, b) => a - b),
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
  };
}
