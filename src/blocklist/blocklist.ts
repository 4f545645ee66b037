// SPDX-License-Identifier: MIT
/**
 * The blocklist format of LTR Data's VhdBlockBackup (docs/containers.md §7, read in
 * `LTRData/DotNetFileTools` VhdBlockBackup/Program.cs): `<image>.blocklist.bin`, no header, one
 * 16-byte entry per 2 MiB block of the virtual DISK (not of the image file), each the first 16
 * bytes of the SHA-1 of the block; the last block is hashed over its short remainder only. So a
 * .vhd, a .vhdx and a raw image of one disk have the same list, and lists made here and on
 * Windows compare equal.
 *
 * Pure: hashing of in-memory bytes and list arithmetic. Reading disks is ./hash.ts.
 */
import { createHash } from 'node:crypto';
import { fileError } from '../errors/synthvhd-error.js';

/** Program.cs: `private const int BlockSize = (int)(2 * Sizes.OneMiB);` */
export const BLOCKLIST_BLOCK_SIZE = 2 * 1024 * 1024;
/** Program.cs: `private const int HashSize = 16;` (SHA-1 cut to its first 16 bytes). */
export const BLOCKLIST_HASH_SIZE = 16;
/** Program.cs: `$"{file}.blocklist.bin"`. */
export const BLOCKLIST_SUFFIX = '.blocklist.bin';

/** Where VhdBlockBackup keeps the list of `imagePath`: beside it. */
export function blocklistPathOf(imagePath: string): string {
  return `${imagePath}${BLOCKLIST_SUFFIX}`;
}

/** Program.cs: `blockCount = (Content.Length + BlockSize - 1) / BlockSize`. */
export function blockCountOf(diskSize: number): number {
  return Math.ceil(diskSize / BLOCKLIST_BLOCK_SIZE);
}

/** The exact length in bytes of the list of a `diskSize`-byte disk. */
export function blocklistLength(diskSize: number): number {
  return blockCountOf(diskSize) * BLOCKLIST_HASH_SIZE;
}

/** Bytes of block `index` of a `diskSize`-byte disk (the last one may be short). */
export function blockLengthOf(index: number, diskSize: number): number {
  return Math.min(BLOCKLIST_BLOCK_SIZE, diskSize - index * BLOCKLIST_BLOCK_SIZE);
}

/** Program.cs `SHA1.HashData(span, hash); hash[..HashSize].CopyTo(checksum)`. */
export function blockHash(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha1').update(data).digest().subarray(0, BLOCKLIST_HASH_SIZE));
}

const zeroHashes = new Map<number, Uint8Array>();

/**
 * The entry of an all-zero block of `length` bytes: a constant, so zero blocks are never read
 * (docs/containers.md §7). Computed once per length (in practice: 2 MiB and the short tail).
 */
export function zeroBlockHash(length = BLOCKLIST_BLOCK_SIZE): Uint8Array {
  let hash = zeroHashes.get(length);
  if (hash === undefined) {
    hash = blockHash(new Uint8Array(length));
    zeroHashes.set(length, hash);
  }
  return hash;
}

/** Fails (naming `listPath`) unless `list` has exactly the length a `diskSize`-byte disk needs. */
export function checkBlocklistLength(list: Uint8Array, diskSize: number, listPath: string, imageLabel: string): void {
  const expected = blocklistLength(diskSize);
  if (list.length !== expected) {
    throw fileError(
      'E_BLOCKLIST',
      listPath,
      `is ${list.length} bytes, but ${imageLabel} is a ${diskSize}-byte disk whose list has ${expected} bytes (${blockCountOf(diskSize)} blocks of 2 MiB x 16): wrong or damaged list, run \`synthvhd blocklist create\` again`,
    );
  }
}

/** Indices of the blocks whose entries differ (the lists must have the same length). */
export function changedBlocks(source: Uint8Array, target: Uint8Array): number[] {
  const changed: number[] = [];
  const count = Math.min(source.length, target.length) / BLOCKLIST_HASH_SIZE;
  for (let index = 0; index < count; index++) {
    const at = index * BLOCKLIST_HASH_SIZE;
    for (let byte = 0; byte < BLOCKLIST_HASH_SIZE; byte++) {
      if (source[at + byte] !== target[at + byte]) {
        changed.push(index);
        break;
      }
    }
  }
  return changed;
}

/** Byte ranges of the disk covered by the blocks `indices` (sorted), adjacent blocks merged. */
export function blockRanges(indices: readonly number[], diskSize: number): { start: number; length: number }[] {
  const ranges: { start: number; length: number }[] = [];
  for (const index of indices) {
    const start = index * BLOCKLIST_BLOCK_SIZE;
    const length = blockLengthOf(index, diskSize);
    const last = ranges.at(-1);
    if (last !== undefined && last.start + last.length === start) ranges[ranges.length - 1] = { start: last.start, length: last.length + length };
    else ranges.push({ start, length });
  }
  return ranges;
}
