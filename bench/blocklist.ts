// SPDX-License-Identifier: MIT
/**
 * Blocklist hashing (`npm run bench -- blocklist`):
 * 1. Data: a 2 GiB raw image of random bytes (in the page cache, so this measures hashing, not
 *    the disk), hashed by synthvhd with 1 thread and with one per core, beside `sha1sum` of the
 *    same file in the same run; printed as GB/s, GB/s per core and the ratio to sha1sum.
 * 2. Holes: a 1 TiB sparse raw image with 32 MiB of data in four places, hashed through the CLI
 *    (`blocklist create`, node start-up included): the zero blocks are never read, so it takes
 *    well under a second.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { hashDisk } from '../src/blocklist/hash.js';
import { openDiskImage } from '../src/container/open-image.js';
import { CLI, GiB, MiB, sh, timed } from './lib/shell.js';

const DATA_BYTES = 2 * GiB;
const SPARSE_BYTES = 1024 * GiB;

async function writeRandom(path: string, bytes: number, at = 0): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    const chunk = randomBytes(16 * MiB);
    for (let offset = 0; offset < bytes; offset += chunk.length) await handle.write(chunk, 0, Math.min(chunk.length, bytes - offset), at + offset);
  } finally {
    await handle.close();
  }
}

const gbps = (bytes: number, seconds: number): string => (bytes / 1e9 / seconds).toFixed(2);

export async function runBlocklistBench(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'synthvhd-bench-blocklist-'));
  try {
    const cores = availableParallelism();
    const data = join(work, 'data.img');
    await writeFile(data, '');
    await writeRandom(data, DATA_BYTES);
    const image = await openDiskImage(data);
    await hashDisk(image.layout, { workers: cores }); // warm-up: page cache, worker start-up, JIT

    const sha1sum = await timed(() => sh('sha1sum', [data]));
    const one = await hashDisk(image.layout, { workers: 1 });
    const all = await hashDisk(image.layout, { workers: cores });
    const sha1sumAgain = await timed(() => sh('sha1sum', [data]));
    const sha1sumSeconds = Math.min(sha1sum.seconds, sha1sumAgain.seconds);
    const lines = [
      `blocklist hashing of ${DATA_BYTES / GiB} GiB of data (page cache), ${cores} cores:`,
      `  sha1sum (1 core)             ${gbps(DATA_BYTES, sha1sumSeconds)} GB/s`,
      `  synthvhd, 1 thread           ${gbps(one.hashedBytes, one.seconds)} GB/s  = ${(sha1sumSeconds / one.seconds).toFixed(2)} x sha1sum per core`,
      `  synthvhd, ${cores} threads          ${gbps(all.hashedBytes, all.seconds)} GB/s  = ${gbps(all.hashedBytes / cores, all.seconds)} GB/s per core, ${(sha1sumSeconds / all.seconds).toFixed(2)} x sha1sum`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    await rm(data);

    const sparse = join(work, 'sparse.img');
    await writeFile(sparse, '');
    await truncate(sparse, SPARSE_BYTES);
    for (const at of [0, 300 * GiB, 700 * GiB, SPARSE_BYTES - 8 * MiB]) await writeRandom(sparse, 8 * MiB, at);
    const cli = await timed(() => sh(process.execPath, [CLI, 'blocklist', 'create', '--json', sparse]));
    const report = JSON.parse(cli.value) as { blocks: number; zeroBlocks: number; hashedBytes: number; seconds: number };
    process.stdout.write(
      `blocklist of a 1 TiB sparse raw image (${report.blocks} blocks, ${report.zeroBlocks} all-zero, ${report.hashedBytes / MiB} MiB of data): ` +
        `${report.seconds.toFixed(3)} s hashing, ${cli.seconds.toFixed(2)} s for the whole command\n`,
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
