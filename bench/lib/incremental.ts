// SPDX-License-Identifier: MIT
/**
 * Two RAW backups of one volume, made as urBackup makes a RAW incremental on btrfs/XFS
 * (docs/urbackup-formats.md §1.3): the older `.raw` holds `dataBytes` of data made by cloning one random seed
 * (so 100 GiB cost one seed's I/O), the newer is a reflink copy of it with 1 % of the data
 * chunks rewritten, and both have a correct `.raw.hash`. Used by `bench diff` and its test.
 */
import { createHash, randomBytes } from 'node:crypto';
import { open, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { cloneRange } from '../../src/native/native.js';
import { makeRawBackup } from './raw-backup.js';

const RAW_HEADER = 524288;
const CHUNK = 512 * 1024;

export interface IncrementalPair {
  readonly older: { readonly folder: string; readonly raw: string };
  readonly newer: { readonly folder: string; readonly raw: string };
  readonly dataChunks: number;
  /** Chunks of the volume rewritten in the newer backup. */
  readonly rewritten: number;
  /** Their indexes (512 KiB chunks of the volume), ascending. */
  readonly rewrittenChunks: readonly number[];
}

export async function makeIncrementalPair(
  root: string,
  options: { readonly volumeLength: number; readonly dataBytes: number; readonly seedBytes: number },
): Promise<IncrementalPair> {
  const { volumeLength, dataBytes, seedBytes } = options;
  const older = await makeRawBackup(root, 'bench', '241201-0100', volumeLength);
  await writeFile(older.raw, '');
  await truncate(older.raw, RAW_HEADER + volumeLength);
  const seed = randomBytes(seedBytes);
  const seedPath = join(root, 'seed.bin');
  await writeFile(seedPath, seed);
  const hashes = Buffer.alloc((volumeLength / CHUNK) * 32);
  const zero = createHash('sha256').update(Buffer.alloc(CHUNK)).digest();
  const seedHashes: Buffer[] = [];
  for (let offset = 0; offset < seedBytes; offset += CHUNK) seedHashes.push(createHash('sha256').update(seed.subarray(offset, offset + CHUNK)).digest());
  for (let index = 0; index < volumeLength / CHUNK; index++) {
    const hash = index * CHUNK < dataBytes ? (seedHashes[index % seedHashes.length] as Buffer) : zero;
    hash.copy(hashes, index * 32);
  }
  const source = await open(seedPath, 'r');
  const target = await open(older.raw, 'r+');
  try {
    for (let offset = 0; offset < dataBytes; offset += seedBytes) await cloneRange(source.fd, 0, target.fd, RAW_HEADER + offset, seedBytes);
  } finally {
    await source.close();
    await target.close();
  }
  await writeFile(`${older.raw}.hash`, hashes);
  await rm(seedPath);

  const newer = await makeRawBackup(root, 'bench', '241208-0100', volumeLength);
  await promisify(execFile)('cp', ['--reflink=always', older.raw, newer.raw]);
  const dataChunks = dataBytes / CHUNK;
  const rewritten = Math.floor(dataChunks / 100);
  const rewrittenChunks: number[] = [];
  const handle = await open(newer.raw, 'r+');
  try {
    for (let k = 0; k < rewritten; k++) {
      const index = Math.floor((k * dataChunks) / rewritten);
      rewrittenChunks.push(index);
      const bytes = randomBytes(CHUNK);
      await handle.write(bytes, 0, CHUNK, RAW_HEADER + index * CHUNK);
      createHash('sha256').update(bytes).digest().copy(hashes, index * 32);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  await writeFile(`${newer.raw}.hash`, hashes);
  return { older, newer, dataChunks, rewritten, rewrittenChunks };
}
