// SPDX-License-Identifier: MIT
/**
 * `synthvhd diff` on loop btrfs with ≥ 10 GiB of data, made as urBackup makes a RAW incremental
 * (a reflink copy of the older `.raw`, then 1 % of its chunks rewritten, `.raw.hash` updated):
 * the volumes are not read, the changed chunks are exactly the rewritten ones, and the diff takes
 * a few MiB of new space because its payload is cloned. (Its speed is measured by `bench diff`.)
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeIncrementalPair } from '../bench/lib/incremental.js';
import { usedBytes, withLoopFs } from './helpers/loop-fs.js';
import { synthvhd } from './helpers/run.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const CHUNK = 512 * 1024;

describe('synthvhd diff of a 10 GiB incremental on btrfs', () => {
  it('reads nothing, finds exactly the rewritten chunks, and costs a few MiB', async () => {
    await withLoopFs('btrfs', 64 * GiB, async (mountDir) => {
      const { older, newer, dataChunks, rewritten } = await makeIncrementalPair(join(mountDir, 'backups'), { volumeLength: 12 * GiB, dataBytes: 10 * GiB, seedBytes: 256 * MiB });

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
