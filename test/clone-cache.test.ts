// SPDX-License-Identifier: MIT
/**
 * The clone cache's bookkeeping (src/fuse/clone-cache.ts) on a btrfs loop file system: a clone is
 * made once per disk state and shares its bytes with the source; a new disk state gets a new
 * clone and the old one is emptied and removed; over the limit the oldest clone nobody has open
 * goes, never one that is open nor the one being made; a compressed layout is refused once, with
 * its reason; close() removes the mount's folder.
 */
import { readSync } from 'node:fs';
import { mkdir, open, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Layout } from '../src/extents/extent.js';
import { CloneCache } from '../src/fuse/clone-cache.js';
import { withLoopFs } from './helpers/loop-fs.js';

const MIB = 1024 * 1024;

/** A disk of 4 KiB of generated header and `source` at 1 MiB, as a served disk's layout would say. */
function layoutOf(source: string, header: number): Layout {
  return {
    size: 2 * MIB,
    extents: [
      { kind: 'bytes', start: 0, length: 4096, data: new Uint8Array(4096).fill(header), what: 'header' },
      { kind: 'zero', start: 4096, length: MIB - 4096, what: 'gap' },
      { kind: 'file', start: MIB, length: MIB, path: source, offset: 0, what: 'partition' },
    ],
  };
}

function bytesOf(fd: number, length: number, position: number): Buffer {
  const buffer = Buffer.alloc(length);
  expect(readSync(fd, buffer, 0, length, position)).toBe(length);
  return buffer;
}

describe('the clone cache', () => {
  it('makes one clone per disk state, replaces and empties a stale one, evicts the oldest unopened one, refuses compressed layouts once', async () => {
    await withLoopFs('btrfs', 512 * MIB, async (fsDir) => {
      const root = join(fsDir, 'backups');
      await mkdir(root);
      const source = join(root, 'volume.raw');
      const data = Buffer.alloc(MIB, 0x5a);
      await writeFile(source, data);
      const lines: string[] = [];
      const cache = await CloneCache.create(fsDir, root, (line) => lines.push(line), 2);
      try {
        const stateA = [{}];
        const fd = await cache.backingFor('/a.vhd', layoutOf(source, 1), stateA);
        expect(fd).toBeDefined();
        if (fd === undefined) return;
        expect(bytesOf(fd, 16, 0).every((byte) => byte === 1)).toBe(true);
        expect(bytesOf(fd, 4096, MIB).equals(data.subarray(0, 4096))).toBe(true);
        // The same state: the same clone.
        expect(await cache.backingFor('/a.vhd', layoutOf(source, 1), stateA)).toBe(fd);
        expect(await readdir(cache.folder)).toHaveLength(1);

        // A new state of /a.vhd: a new clone; the old one is emptied (an open passthrough file
        // of it reads end of file) and removed.
        const [oldFile] = await readdir(cache.folder);
        const oldPath = join(cache.folder, oldFile ?? '');
        const oldHandle = await open(oldPath, 'r');
        const fdB = await cache.backingFor('/a.vhd', layoutOf(source, 2), [{}]);
        expect(fdB).toBeDefined();
        for (let tries = 0; tries < 100 && (await oldHandle.stat()).size !== 0; tries++) await new Promise((resolvePromise) => setTimeout(resolvePromise, 20));
        expect((await oldHandle.stat()).size).toBe(0);
        await oldHandle.close();
        expect(await readdir(cache.folder)).toHaveLength(1);

        // Limit 2: /a.vhd is open, /b.vhd is not; a third disk evicts /b.vhd, not /a.vhd nor itself.
        cache.opened('/a.vhd');
        await cache.backingFor('/b.vhd', layoutOf(source, 3), [{}]);
        expect(await readdir(cache.folder)).toHaveLength(2);
        await cache.backingFor('/c.vhd', layoutOf(source, 4), [{}]);
        for (let tries = 0; tries < 100 && (await readdir(cache.folder)).length !== 2; tries++) await new Promise((resolvePromise) => setTimeout(resolvePromise, 20));
        const kept = await Promise.all((await readdir(cache.folder)).map(async (name) => (await readFile(join(cache.folder, name))).subarray(0, 1)[0]));
        expect(kept.sort()).toEqual([2, 4]);
        // Every copy open: the next one is kept too (over the limit), and its clone is usable.
        cache.opened('/c.vhd');
        const fdD = await cache.backingFor('/d.vhd', layoutOf(source, 5), [{}]);
        expect(fdD).toBeDefined();
        if (fdD === undefined) return;
        expect(bytesOf(fdD, 16, 0).every((byte) => byte === 5)).toBe(true);
        expect(await readdir(cache.folder)).toHaveLength(3);

        // A compressed layout is not cloned, and said once.
        const compressed: Layout = {
          size: MIB,
          extents: [{ kind: 'compressed', start: 0, length: MIB, path: source, record: 0, blockLength: 2 * MIB, skip: 0, what: 'block' }],
        };
        const state = [{}];
        expect(await cache.backingFor('/z.vhd', compressed, state)).toBeUndefined();
        expect(await cache.backingFor('/z.vhd', compressed, state)).toBeUndefined();
        expect(lines.filter((line) => line.startsWith('/z.vhd'))).toHaveLength(1);
        expect(lines[0]).toContain('compressed');
        expect((await stat(source)).size).toBe(MIB);
      } finally {
        await cache.close();
      }
      expect((await readdir(fsDir)).filter((name) => name.startsWith('synthvhd-clones-'))).toEqual([]);
    });
  });
});
