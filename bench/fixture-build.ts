// SPDX-License-Identifier: MIT
/**
 * `npm run bench -- fixtures`: how long the test suite's fixture backups take to build (real
 * NTFS/FAT file systems, six disks, an incomplete backup), in a temp dir removed afterwards.
 * The suite builds them once (test/global-setup.ts); this is the number to watch, not a test.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFixtures } from '../fixtures/build-fixtures.js';

export async function runFixturesBench(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'synthvhd-bench-fixtures-'));
  try {
    const started = performance.now();
    const fixtures = await buildFixtures(root);
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`fixtures: ${fixtures.disks.length} disks built in ${seconds.toFixed(1)} s (peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB)\n`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
