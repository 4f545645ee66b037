// SPDX-License-Identifier: MIT
/**
 * `synthvhd diff` on loop btrfs with ≥ 10 GiB of data, made as urBackup makes a RAW incremental
 * (a reflink copy of the older `.raw`, then 1 % of its chunks rewritten, `.raw.hash` updated):
 * the volumes are not read, the changed chunks are exactly the rewritten ones, and the diff takes
 * a few MiB of new space because its payload is cloned. (Its speed is measured by `bench diff`.)
 */
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeRawBackup } from '../bench/lib/raw-backup.js';
import { cloneRange } from '../src/native/native.js';
import { usedBytes, withLoopFs } from './helpers/loop-fs.js';
import { runOk, synthvhd } from './helpers/run.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const CHUNK = 512 * 1024;
const RAW_HEADER = 524288;
const SEED = 256 * MiB;
const DATA = 10 * GiB;

describe('synthvhd diff of a 10 GiB incremental on btrfs', () => {
  it('reads nothing, finds exactly the rewritten chunks, and costs a few MiB', async () => {
    await withLoopFs('btrfs', 64 * GiB, async (mountDir) => {
      const root = join(mountDir, 'backups');
      const volumeLength = 12 * GiB;
      const older = await makeRawBackup(root, 'big', '241201-0100', volumeLength);
      await writeFile(older.raw, '');
      await truncate(older.raw, RAW_HEADER + volumeLength);
      const seedPath = join(mountDir, 'seed');
      await writeFile(seedPath, randomBytes(SEED));
      const seed = await readFile(seedPath);
      const hashes = Buffer.alloc((volumeLength / CHUNK) * 32);
      const zero = createHash('sha256').update(Buffer.alloc(CHUNK)).digest();
      for (let index = 0; index < volumeLength / CHUNK; index++) {
        const offset = index * CHUNK;
        const hash = offset < DATA ? createHash('sha256').update(seed.subarray(offset % SEED, (offset % SEED) + CHUNK)).digest() : zero;
        hash.copy(hashes, index * 32);
      }
      const source = await open(seedPath, 'r');
      const target = await open(older.raw, 'r+');
      try {
        for (let offset = 0; offset < DATA; offset += SEED) await cloneRange(source.fd, 0, target.fd, RAW_HEADER + offset, SEED);
      } finally {
        await source.close();
        await target.close();
      }
      await writeFile(`${older.raw}.hash`, hashes);

      const newer = await makeRawBackup(root, 'big', '241208-0100', volumeLength);
      await runOk('cp', ['--reflink=always', older.raw, newer.raw]);
      const dataChunks = DATA / CHUNK;
      const rewritten = Math.floor(dataChunks / 100);
      const handle = await open(newer.raw, 'r+');
      try {
        for (let k = 0; k < rewritten; k++) {
          const index = Math.floor((k * dataChunks) / rewritten);
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
      expect((await synthvhd(['materialize', older.folder, '-o', parent])).code).toBe(0);
      const before = await usedBytes(mountDir);
      const result = await synthvhd(['diff', older.folder, newer.folder, '-o', join(mountDir, 'diff.vhdx'), '--parent', parent, '--json']);
      expect(result.stderr).toBe('');
      const report = JSON.parse(result.stdout) as { clonedBytes: number; volumes: { changedChunks: number; bytesRead: number; decidedBySharing: number }[] };
      const newSpace = (await usedBytes(mountDir)) - before;
      const volume = report.volumes[0];
      expect(volume?.changedChunks).toBe(rewritten);
      expect(volume?.bytesRead).toBe(0);
      expect(volume?.decidedBySharing).toBeGreaterThan(dataChunks - 2 * rewritten);
      expect(report.clonedBytes).toBeGreaterThanOrEqual(rewritten * CHUNK * 0.9);
      expect(newSpace).toBeLessThanOrEqual(8 * MiB);
    });
  });
});
