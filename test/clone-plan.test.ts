// SPDX-License-Identifier: MIT
import { describe, expect, it } from 'vitest';
import { planClone } from '../src/materialize/clone-plan.js';

describe('planClone', () => {
  it('clones the aligned middle and copies an unaligned head and tail', () => {
    expect(planClone(4608, 512, 10_000, 4096)).toEqual([
      { action: 'copy', destination: 4608, source: 512, length: 3584 },
      { action: 'clone', destination: 8192, source: 4096, length: 4096 },
      { action: 'copy', destination: 12288, source: 8192, length: 2320 },
    ]);
  });

  it('clones an aligned extent whole, and copies one whose offsets are aligned differently', () => {
    expect(planClone(1048576, 524288, 8192, 4096)).toEqual([{ action: 'clone', destination: 1048576, source: 524288, length: 8192 }]);
    // A volume at sector 63: disk offset 32256, .raw offset 524288.
    expect(planClone(32256, 524288, 8192, 4096)).toEqual([{ action: 'copy', destination: 32256, source: 524288, length: 8192 }]);
  });

  it('keeps an NTFS volume (a multiple of 4 KiB minus one sector) cloneable but for its last partial block', () => {
    const pieces = planClone(2097152, 524288, 100 * 4096 - 512, 4096);
    expect(pieces.map((piece) => [piece.action, piece.length])).toEqual([['clone', 99 * 4096], ['copy', 3584]]);
  });
});
