// SPDX-License-Identifier: MIT
/**
 * Test hooks, off unless their environment variable names a file (nothing sets them outside the
 * tests; unset, a hook costs one property read):
 *
 * - SYNTHVHD_TEST_HOLD_BACKGROUND: the mount's background work (composing the disk of an image
 *   backup, building a backup-run diff) waits before it starts. A test can so assert what a
 *   lookup answers while the work is pending (ENOENT at once, docs/architecture.md) without
 *   racing the work.
 * - SYNTHVHD_TEST_HOLD_WRITE: `materialize` waits once every byte is in its hidden temporary
 *   file, before it is synced and renamed to the output: a test kills it at that known point.
 *
 * A held process first creates `<file>.held` (so the test knows it got there), then waits until
 * `<file>` exists.
 */
import { access, writeFile } from 'node:fs/promises';

const POLL_MS = 20;

export type TestHold = 'SYNTHVHD_TEST_HOLD_BACKGROUND' | 'SYNTHVHD_TEST_HOLD_WRITE';

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Resolves at once, or (hook set) once the file it names exists. */
export async function testHold(hook: TestHold): Promise<void> {
  const gate = process.env[hook];
  if (gate === undefined || gate === '') return;
  await writeFile(`${gate}.held`, '').catch(() => undefined);
  while (!(await exists(gate))) await new Promise((resolvePromise) => setTimeout(resolvePromise, POLL_MS));
}
