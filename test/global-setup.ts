// SPDX-License-Identifier: MIT
/**
 * Makes sure `dist/` is built from the current sources (helpers/fresh-build.ts: tests that spawn
 * the CLI run dist/, in-process tests import src/), then builds the fixture backups once for the
 * whole suite (in a unique temp dir), and proves at the end that nothing in the suite wrote to
 * them: the backup tree's fingerprint (helpers/run.ts treeFingerprint, which says what it cannot
 * see) must be the same after every test ran. Tests that need to damage a backup work on their
 * own copy.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { buildFixtures, type FixtureSet } from '../fixtures/build-fixtures.js';
import { ensureFreshBuild } from './helpers/fresh-build.js';
import { manifestChanges, treeManifest } from './helpers/run.js';

declare module 'vitest' {
  export interface ProvidedContext {
    fixtures: FixtureSet;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  await ensureFreshBuild();
  const root = await mkdtemp(join(tmpdir(), 'synthvhd-fixtures-'));
  const fixtures = await buildFixtures(root);
  const before = await treeManifest(fixtures.backupRoot);
  project.provide('fixtures', fixtures);
  return async () => {
    try {
      const changes = manifestChanges(before, await treeManifest(fixtures.backupRoot));
      if (changes.length > 0) {
        throw new Error(`the fixture backup tree ${fixtures.backupRoot} changed during the test run: ${changes.slice(0, 20).join('; ')}`);
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  };
}
