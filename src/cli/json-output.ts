// SPDX-License-Identifier: MIT
/**
 * Pieces of `JSON.stringify(whole, null, 2)` written one at a time: `ls --json` and
 * `doctor --json` print 10 000 disks without holding the whole text.
 */

/** `JSON.stringify(value, null, 2)` as it reads nested `depth` levels deep in the whole. */
export function nestedJson(value: unknown, depth: number): string {
  return JSON.stringify(value, null, 2).replace(/\n/g, `\n${'  '.repeat(depth)}`);
}
