// SPDX-License-Identifier: MIT
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findExtentIndex, makeLayout, sliceLayout } from '../src/extents/extent.js';
import { LayoutBuilder } from '../src/extents/layout-builder.js';
import { readAt } from '../src/extents/read-at.js';
import { SourceFiles } from '../src/extents/source-files.js';

describe('layout invariant', () => {
  it('rejects gaps, overlaps and a wrong size', () => {
    expect(() => makeLayout([{ kind: 'zero', start: 1, length: 1, what: 'zeros: z' }], 2)).toThrow(/does not follow 0/);
    expect(() => makeLayout([{ kind: 'zero', start: 0, length: 2, what: 'zeros: z' }, { kind: 'zero', start: 1, length: 1, what: 'zeros: z' }], 2)).toThrow(/does not follow 2/);
    expect(() => makeLayout([{ kind: 'zero', start: 0, length: 2, what: 'zeros: z' }], 3)).toThrow(/cover 2 bytes, layout size is 3/);
    expect(() => makeLayout([{ kind: 'bytes', start: 0, length: 2, data: new Uint8Array(1), what: 'b' }], 2)).toThrow(/1 bytes for length 2/);
  });

  it('the builder fills gaps with zeros and merges what continues under the same description', () => {
    const layout = new LayoutBuilder()
      .bytes(new Uint8Array([1]), 'header')
      .zeroTo(10, 'zeros: gap')
      .zero(5, 'zeros: gap')
      .file('/a', 0, 4, 'A')
      .file('/a', 4, 4, 'A')
      .build(30, 'zeros: tail');
    expect(layout.extents.map((extent) => [extent.kind, extent.start, extent.length, extent.what])).toEqual([
      ['bytes', 0, 1, 'header'],
      ['zero', 1, 14, 'zeros: gap'],
      ['file', 15, 8, 'A'],
      ['zero', 23, 7, 'zeros: tail'],
    ]);
    expect(findExtentIndex(layout, 0)).toBe(0);
    expect(findExtentIndex(layout, 14)).toBe(1);
    expect(findExtentIndex(layout, 15)).toBe(2);
    expect(findExtentIndex(layout, 29)).toBe(3);
    expect(sliceLayout(layout, 20, 5, 100)).toEqual([
      { kind: 'file', start: 100, length: 3, path: '/a', offset: 5, what: 'A' },
      { kind: 'zero', start: 103, length: 2, what: 'zeros: tail' },
    ]);
  });

  it('the builder keeps neighbours with different descriptions apart, and needs one for padding', () => {
    const layout = new LayoutBuilder().zero(4, 'zeros: one').zero(4, 'zeros: two').file('/a', 0, 4, 'A').file('/a', 4, 4, 'B').build();
    expect(layout.extents.map((extent) => [extent.kind, extent.start, extent.length, extent.what])).toEqual([
      ['zero', 0, 4, 'zeros: one'],
      ['zero', 4, 4, 'zeros: two'],
      ['file', 8, 4, 'A'],
      ['file', 12, 4, 'B'],
    ]);
    expect(() => new LayoutBuilder().zero(4, 'zeros: z').build(8)).toThrow(/padding has no description/);
  });
});

describe('readAt', () => {
  it('fills the buffer across bytes, zero and file extents, and stops at the end', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'synthvhd-extents-'));
    const sources = new SourceFiles();
    try {
      const path = join(directory, 'source');
      await writeFile(path, Buffer.from('0123456789abcdef'));
      const layout = new LayoutBuilder().bytes(Buffer.from('HDR'), 'H').zero(2, 'zeros: Z').file(path, 10, 6, 'F').build(13, 'zeros: T');
      const expected = Buffer.concat([Buffer.from('HDR'), Buffer.alloc(2), Buffer.from('abcdef'), Buffer.alloc(2)]);
      for (let start = 0; start < 13; start++) {
        for (let length = 1; start + length <= 15; length++) {
          const into = Buffer.alloc(length, 0xee);
          const count = await readAt(layout, sources, start, into);
          expect(count).toBe(Math.min(length, 13 - start));
          expect(into.subarray(0, count)).toEqual(expected.subarray(start, start + count));
        }
      }
    } finally {
      await sources.close();
      await rm(directory, { recursive: true, force: true });
    }
  });

  it('names the file when a source is shorter than its extent', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'synthvhd-extents-'));
    const sources = new SourceFiles();
    try {
      const path = join(directory, 'short');
      await writeFile(path, Buffer.from('abc'));
      const layout = new LayoutBuilder().file(path, 0, 8, 'F').build();
      await expect(readAt(layout, sources, 0, Buffer.alloc(8))).rejects.toThrow(`${path}: unexpected end of file at offset 3`);
    } finally {
      await sources.close();
      await rm(directory, { recursive: true, force: true });
    }
  });
});
