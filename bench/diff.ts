// SPDX-License-Identifier: MIT
/**
 * `npm run bench -- diff`: two backups of a 200 GB disk whose C: holds 100 GiB of data (one
 * written 1 GiB file cloned 100 times), the newer made as urBackup makes RAW incrementals (a
 * reflink copy of the older `.raw`, then 1 % of its 512 KiB chunks rewritten, `.raw.hash`
 * updated). `synthvhd diff` is timed beside `blocklist create` + `blocklist copy --createmeta`
 * of the same pair, which must read both disks. SYNTHVHD_BENCH_DATA_GIB shrinks the data.
 */
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cloneRange } from '../src/native/native.js';
import { makeRawBackup } from './lib/raw-backup.js';
import { withLoopFs } from '../test/helpers/loop-fs.js';
import { CLI, GiB, MiB, sh, timed, usedBytes } from './lib/shell.js';

const DISK_BYTES = 200e9;
const RAW_HEADER = 524288;
const CHUNK = 512 * 1024;

async function writeRandom(path: string, bytes: number): Promise<void> {
  const handle = await open(path, 'w');
  try {
    const chunk = randomBytes(16 * MiB);
    for (let offset = 0; offset < bytes; offset += chunk.length) await handle.write(chunk, 0, chunk.length, offset);
  } finally {
    await handle.close();
  }
}

/** SHA-256 per 512 KiB chunk of `data` (urbackup.md §1.2 .raw.hash). */
function chunkHashes(data: Buffer): Buffer[] {
  const hashes: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += CHUNK) hashes.push(createHash('sha256').update(data.subarray(offset, offset + CHUNK)).digest());
  return hashes;
}

export async function runDiffBench(): Promise<void> {
  const dataGiB = Number(process.env.SYNTHVHD_BENCH_DATA_GIB ?? 100);
  await withLoopFs('btrfs', 1024 * GiB, async (mountDir) => {
    const root = join(mountDir, 'backups');
    const volumeLength = Math.floor((DISK_BYTES - 2 * MiB) / CHUNK) * CHUNK;
    const chunkCount = volumeLength / CHUNK;

    // Older backup: the seed cloned dataGiB times; .raw.hash = the seed's chunk hashes repeated.
    const older = await makeRawBackup(root, 'bench', '241201-0100', volumeLength);
    await writeFile(older.raw, '');
    await truncate(older.raw, RAW_HEADER + volumeLength);
    const seedPath = join(mountDir, 'seed.bin');
    await writeRandom(seedPath, GiB);
    const seed = await readFile(seedPath);
    const seedHashes = chunkHashes(seed);
    const zeroHash = createHash('sha256').update(Buffer.alloc(CHUNK)).digest();
    const hashes = Buffer.alloc(chunkCount * 32);
    for (let index = 0; index < chunkCount; index++) {
      const inData = index < dataGiB * (GiB / CHUNK);
      (inData ? (seedHashes[index % seedHashes.length] as Buffer) : zeroHash).copy(hashes, index * 32);
    }
    const source = await open(seedPath, 'r');
    const target = await open(older.raw, 'r+');
    try {
      for (let index = 0; index < dataGiB; index++) await cloneRange(source.fd, 0, target.fd, RAW_HEADER + index * GiB, GiB);
    } finally {
      await source.close();
      await target.close();
    }
    await writeFile(`${older.raw}.hash`, hashes);
    await rm(seedPath);

    // Newer backup: a reflink copy, then 1 % of the data chunks rewritten (spread evenly).
    const newer = await makeRawBackup(root, 'bench', '241208-0100', volumeLength);
    await sh('cp', ['--reflink=always', older.raw, newer.raw]);
    const dataChunks = dataGiB * (GiB / CHUNK);
    const changedCount = Math.floor(dataChunks / 100);
    const handle = await open(newer.raw, 'r+');
    try {
      for (let k = 0; k < changedCount; k++) {
        const index = Math.floor((k * dataChunks) / changedCount);
        const bytes = randomBytes(CHUNK);
        await handle.write(bytes, 0, CHUNK, RAW_HEADER + index * CHUNK);
        createHash('sha256').update(bytes).digest().copy(hashes, index * 32);
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await writeFile(`${newer.raw}.hash`, hashes);

    const parent = join(mountDir, 'older.vhdx');
    await sh(process.execPath, [CLI, 'materialize', older.folder, '-o', parent]);
    await sh('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
    const beforeDiff = await usedBytes(mountDir);
    const diff = await timed(() => sh(process.execPath, [CLI, 'diff', older.folder, newer.folder, '-o', join(mountDir, 'diff.vhdx'), '--parent', parent, '--json']));
    const report = JSON.parse(diff.value) as { changedBytes: number; volumes: { bytesRead: number; changedChunks: number; decidedBySharing: number; decidedByHashes: number }[] };
    const volume = report.volumes[0];
    const diffSpace = (await usedBytes(mountDir)) - beforeDiff;

    await sh('mkdir', ['-p', join(mountDir, 'bl'), join(mountDir, 'cache')]);
    await sh('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
    const create = await timed(() => sh(process.execPath, [CLI, 'blocklist', 'create', parent]));
    const copy = await timed(() => sh(process.execPath, [CLI, 'blocklist', 'copy', '--createmeta', '--cache-dir', join(mountDir, 'cache'), '--diffdir', join(mountDir, 'bl'), newer.folder, parent]));
    const blocklistSeconds = create.seconds + copy.seconds;
    const lines = [
      `disk ${(DISK_BYTES / 1e9).toFixed(0)} GB, ${dataGiB} GiB of data, ${changedCount} of ${dataChunks} data chunks (1 %) changed`,
      `synthvhd diff: ${diff.seconds.toFixed(2)} s, ${(report.changedBytes / MiB).toFixed(1)} MiB changed, ${((volume?.bytesRead ?? 0) / MiB).toFixed(1)} MiB read comparing, ${(diffSpace / MiB).toFixed(1)} MiB new space (chunks decided by shared extents ${volume?.decidedBySharing ?? 0}, by .raw.hash ${volume?.decidedByHashes ?? 0})`,
      `blocklist create (older) + copy --createmeta (newer): ${blocklistSeconds.toFixed(1)} s, reads both disks' data: ${(2 * dataGiB).toFixed(0)} GiB`,
      `ratio diff / blocklist: ${(diff.seconds / blocklistSeconds).toFixed(4)} (${(blocklistSeconds / diff.seconds).toFixed(0)}x faster)`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });
}
