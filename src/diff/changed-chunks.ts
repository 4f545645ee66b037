// SPDX-License-Identifier: MIT
/**
 * Which 512 KiB chunks of a volume changed between two backups of it, reading as little as
 * possible: chunks whose `.raw` extents are still shared (FIEMAP) are unchanged by definition;
 * chunks both `.raw.hash` files describe are decided by their hashes; only the rest is read
 * and compared. A `.raw.hash` is trusted only after checks that cost little: its length, its
 * hole chunks hashing as zeros, and a sample of data chunks re-hashed; a failed check means
 * comparing data instead (and saying so), never a wrong diff.
 */
import { SourceFiles } from '../extents/source-files.js';
import type { LoadedVolume } from '../urbackup/load-volume.js';
import { chunkCountOf, RAW_HASH_CHUNK, readRawHashes, zeroChunkHash, type RawHashes } from '../urbackup/raw-hash.js';
import { chunkLength, chunksWithData, hashChunk, readChunk } from '../urbackup/volume-chunks.js';
import { sharedRanges, type SharedRanges } from './shared-extents.js';
import { changedChunkFlags, changedSince } from '../urbackup/images/load-image-volume.js';

const SAMPLE_CHUNKS = 16;

export interface ChunkComparison {
  readonly chunkCount: number;
  /** Indices of changed chunks (chunk i covers volume bytes [i·512 KiB, (i+1)·512 KiB)). */
  readonly changed: readonly number[];
  readonly decidedBySharing: number;
  readonly decidedByHashes: number;
  readonly decidedByReading: number;
  readonly bytesRead: number;
  readonly notes: readonly string[];
}

/**
 * Chunks decided by sharing: chunks holding data in either file, all of whose data (in either)
 * lies in `ranges`, where both files map to the same physical blocks; the rest of such a chunk
 * is a hole in both, zeros on both sides. A sparse `.raw` leaves holes in most chunks that hold
 * data (an NTFS volume's first chunk: boot sector, then gaps), so "fully inside a shared range"
 * would decide almost nothing. `ranges` are sorted file offsets.
 */
function sharedChunks(ranges: SharedRanges, older: LoadedVolume, newer: LoadedVolume, chunkCount: number): Uint8Array {
  const shared = new Uint8Array(chunkCount);
  if (ranges.length === 0 || older.volumeOffset !== newer.volumeOffset) return shared;
  const base = newer.volumeOffset;
  const chunkOf = (offset: number): number => Math.floor((offset - base) / RAW_HASH_CHUNK);
  const mark = (start: number, end: number, flag: number): void => {
    for (let index = Math.max(0, chunkOf(start)); index <= Math.min(chunkCount - 1, chunkOf(end - 1)); index++) shared[index] = flag;
  };
  for (const [start, end] of ranges) mark(start, end, 1);
  // Any byte of data, in either file, outside the shared ranges leaves its chunk to be compared.
  for (const { offset, length } of [...older.dataRanges, ...newer.dataRanges]) {
    let position = offset;
    const end = offset + length;
    // The first shared range that ends after `position` (binary search: ranges are sorted).
    let low = 0;
    let high = ranges.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((ranges[middle]?.[1] ?? 0) <= position) low = middle + 1;
      else high = middle;
    }
    for (let index = low; position < end; index++) {
      const [sharedStart, sharedEnd] = ranges[index] ?? [end, end];
      if (sharedStart > position) mark(position, Math.min(sharedStart, end), 0);
      position = Math.max(position, sharedEnd);
    }
  }
  return shared;
}

/** A deterministic spread of up to `count` indices among those where `pick` is 1. */
function sample(pick: Uint8Array, count: number): number[] {
  const candidates: number[] = [];
  for (let index = 0; index < pick.length; index++) if (pick[index] === 1) candidates.push(index);
  if (candidates.length <= count) return candidates;
  return Array.from({ length: count }, (_, k) => candidates[Math.floor((k * candidates.length) / count)] as number);
}

/** Checks a `.raw.hash` cheaply; returns a reason when it cannot be trusted. */
async function distrust(hashes: RawHashes, volume: LoadedVolume, withData: Uint8Array, sources: SourceFiles, scratch: Uint8Array): Promise<string | undefined> {
  for (let index = 0; index < hashes.chunkCount; index++) {
    if (withData[index] === 0 && !zeroChunkHash(chunkLength(volume, index)).equals(hashes.hash(index))) {
      return `${hashes.path}: chunk ${index} is a hole in the .raw but its hash is not that of zeros`;
    }
  }
  for (const index of sample(withData, SAMPLE_CHUNKS)) {
    const actual = await hashChunk(sources, volume, index, true, scratch);
    if (!actual.equals(hashes.hash(index))) return `${hashes.path}: chunk ${index} does not match its data`;
  }
  return undefined;
}

async function trustedHashes(
  volume: LoadedVolume,
  chunkCount: number,
  withData: Uint8Array,
  sources: SourceFiles,
  notes: string[],
  scratch: Uint8Array,
): Promise<RawHashes | undefined> {
  const hashes = await readRawHashes(volume.backup.rawPath, volume.volumeLength, { root: volume.backup.root });
  if ('problem' in hashes) {
    notes.push(`${hashes.problem}: comparing data instead`);
    return undefined;
  }
  if (hashes.chunkCount !== chunkCount) return undefined;
  const reason = await distrust(hashes, volume, withData, sources, scratch);
  if (reason !== undefined) {
    notes.push(`${reason}: not trusted, comparing data instead`);
    return undefined;
  }
  return hashes;
}

/**
 * A differencing VHD/VHDX chain says itself what each backup run wrote (its BATs and sector
 * bitmaps, docs/urbackup-image-formats.md §3): when `older` is in `newer`'s chain, the changed
 * chunks are the ones the files between them wrote, and nothing is read.
 */
async function compareInChain(older: LoadedVolume, newer: LoadedVolume): Promise<ChunkComparison | undefined> {
  if (older.image === undefined || newer.image === undefined) return undefined;
  const ranges = await changedSince(newer.image.loaded, older.image.loaded.path);
  if (ranges === undefined) return undefined;
  const chunkCount = chunkCountOf(newer.volumeLength);
  const flags = changedChunkFlags(ranges, newer.volumeLength, RAW_HASH_CHUNK);
  const changed: number[] = [];
  flags.forEach((flag, index) => {
    if (flag) changed.push(index);
  });
  const depth = newer.image.loaded.chain.findIndex((file) => file.path === older.image?.loaded.path);
  return {
    chunkCount,
    changed,
    decidedBySharing: chunkCount,
    decidedByHashes: 0,
    decidedByReading: 0,
    bytesRead: 0,
    notes: [`decided by the BATs and sector bitmaps of ${depth} differencing image(s) between the two backups: nothing read`],
  };
}

export async function compareVolumes(older: LoadedVolume, newer: LoadedVolume): Promise<ChunkComparison> {
  const inChain = await compareInChain(older, newer);
  if (inChain !== undefined) return inChain;
  const chunkCount = chunkCountOf(newer.volumeLength);
  const olderCount = chunkCountOf(older.volumeLength);
  const notes: string[] = [];
  const sources = new SourceFiles(4, { root: newer.backup.root });
  try {
    const olderData = chunksWithData(older, olderCount);
    const newerData = chunksWithData(newer, chunkCount);
    // Shared extents (FIEMAP) mean something only between two `.raw` files.
    const bothRaw = older.image === undefined && newer.image === undefined;
    const ranges = bothRaw
      ? await sharedRanges(
          { path: older.backup.rawPath, confinement: { root: older.backup.root } },
          { path: newer.backup.rawPath, confinement: { root: newer.backup.root } },
          newer.volumeOffset,
          newer.volumeOffset + Math.min(older.volumeLength, newer.volumeLength),
        )
      : [];
    const shared = sharedChunks(ranges, older, newer, chunkCount);
    const sameLength = older.volumeLength === newer.volumeLength;
    if (!sameLength) notes.push(`volume length changed (${older.volumeLength} → ${newer.volumeLength} bytes): hashes not used`);
    // Only a chunk that sharing leaves open needs hashes (whose trust costs 16 chunks read per
    // file) or reads: a volume whose every chunk is still shared, as an unchanged ESP is in a
    // reflinked incremental, is decided without reading a byte of either backup.
    const open = (index: number): boolean => index < olderCount && chunkLength(older, index) === chunkLength(newer, index) && shared[index] === 0;
    let undecided = false;
    for (let index = 0; index < chunkCount && !undecided; index++) undecided = open(index) && (olderData[index] === 1 || newerData[index] === 1);
    const a = undecided ? new Uint8Array(RAW_HASH_CHUNK) : new Uint8Array(0);
    const b = undecided ? new Uint8Array(RAW_HASH_CHUNK) : new Uint8Array(0);
    const olderHashes = sameLength && undecided ? await trustedHashes(older, olderCount, olderData, sources, notes, a) : undefined;
    const newerHashes = sameLength && undecided ? await trustedHashes(newer, chunkCount, newerData, sources, notes, a) : undefined;
    const changed: number[] = [];
    let decidedBySharing = 0;
    let decidedByHashes = 0;
    let decidedByReading = 0;
    let bytesRead = 0;
    for (let index = 0; index < chunkCount; index++) {
      if (index >= olderCount || chunkLength(older, index) !== chunkLength(newer, index)) {
        changed.push(index);
        continue;
      }
      if (shared[index] === 1) {
        decidedBySharing++;
        continue;
      }
      if (olderHashes !== undefined && newerHashes !== undefined) {
        decidedByHashes++;
        if (!Buffer.from(olderHashes.hash(index)).equals(newerHashes.hash(index))) changed.push(index);
        continue;
      }
      decidedByReading++;
      if (olderData[index] === 0 && newerData[index] === 0) continue;
      const oldBytes = olderData[index] === 1 ? await readChunk(sources, older, index, a) : a.fill(0).subarray(0, chunkLength(older, index));
      const newBytes = newerData[index] === 1 ? await readChunk(sources, newer, index, b) : b.fill(0).subarray(0, chunkLength(newer, index));
      bytesRead += (olderData[index] ?? 0) * oldBytes.length + (newerData[index] ?? 0) * newBytes.length;
      if (!Buffer.from(oldBytes.buffer, oldBytes.byteOffset, oldBytes.length).equals(newBytes)) changed.push(index);
    }
    return { chunkCount, changed, decidedBySharing, decidedByHashes, decidedByReading, bytesRead, notes };
  } finally {
    await sources.close();
  }
}
