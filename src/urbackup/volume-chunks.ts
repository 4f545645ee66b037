// SPDX-License-Identifier: MIT
/**
 * Reads a volume of a `.raw` in 512 KiB chunks (the `.raw.hash` granularity): which chunks are
 * holes (no read needed), and the bytes or SHA-256 of one chunk.
 */
import { webcrypto } from 'node:crypto';
import { readAt } from '../extents/read-at.js';
import type { SourceFiles } from '../extents/source-files.js';
import type { LoadedVolume } from './load-volume.js';
import { RAW_HASH_CHUNK, zeroChunkHash } from './raw-hash.js';

export function chunkLength(volume: LoadedVolume, index: number): number {
  return Math.min(RAW_HASH_CHUNK, volume.volumeLength - index * RAW_HASH_CHUNK);
}

/** For each chunk: does any data range of the `.raw` touch it? */
export function chunksWithData(volume: LoadedVolume, chunkCount: number): Uint8Array {
  const touched = new Uint8Array(chunkCount);
  for (const range of volume.dataRanges) {
    const first = Math.floor((range.offset - volume.volumeOffset) / RAW_HASH_CHUNK);
    const last = Math.floor((range.offset + range.length - 1 - volume.volumeOffset) / RAW_HASH_CHUNK);
    for (let index = Math.max(0, first); index <= Math.min(chunkCount - 1, last); index++) touched[index] = 1;
  }
  return touched;
}

export async function readChunk(sources: SourceFiles, volume: LoadedVolume, index: number, into: Uint8Array): Promise<Uint8Array> {
  const length = chunkLength(volume, index);
  // A VHD/VHDZ/VHDX(Z) backup: its volume is a layout (chains, compressed blocks), not a file range.
  if (volume.image !== undefined) await readAt(volume.image.layout, sources, index * RAW_HASH_CHUNK, into, length, 0);
  else await sources.readFully(volume.backup.rawPath, volume.volumeOffset + index * RAW_HASH_CHUNK, into, 0, length);
  return into.subarray(0, length);
}

/**
 * SHA-256 of chunk `index`; `hasData` false means it is a hole and is not read. Hashed by
 * WebCrypto, which runs on the libuv thread pool: in the mount, a diff planned in the background
 * checks `.raw.hash` samples this way without stalling the thread that answers lookups.
 */
export async function hashChunk(sources: SourceFiles, volume: LoadedVolume, index: number, hasData: boolean, scratch: Uint8Array): Promise<Buffer> {
  if (!hasData) return zeroChunkHash(chunkLength(volume, index));
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', await readChunk(sources, volume, index, scratch)));
}
