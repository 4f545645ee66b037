// SPDX-License-Identifier: MIT
/**
 * A test hook, off unless the environment variable SYNTHVHD_TEST_HOLD_BACKGROUND names a file:
 * the mount's background work (composing the disk of an image backup, building a backup-run diff)
 * then waits, before it starts, until that file exists. A test can so assert what a lookup answers
 * while the work is pending (ENOENT at once, docs/architecture.md) without racing the work, and
 * release it by creating the file. Nothing sets it outside the tests; unset, it costs one
 * property read.
 */
import { access } from 'node:fs/promises';

const POLL_MS = 20;

/** Resolves at once, or (test hook set) once the file it names exists. */
export async function testHold(): Promise<void> {
  const gate = process.env.SYNTHVHD_TEST_HOLD_BACKGROUND;
  if (gate === undefined || gate === '') return;
  for (;;) {
    try {
      await access(gate);
      return;
    } catch {
      await new Promise((resolvePromise) => setTimeout(resolvePromise, POLL_MS));
    }
  }
}
