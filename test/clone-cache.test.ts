// SPDX-License-Identifier: MIT
/**
 * The clone cache's bookkeeping (src/fuse/clone-cache.ts) on a btrfs loop file system: a clone is
 * made once per disk state and shares its bytes with the source; a new disk state gets a new
 * clone and the old one is emptied and removed; over the limit the oldest clone nobody has open
 * goes, never one that is open nor the one being made; a compressed layout is refused once, with
 * its reason; close() removes the mount's folder.
 */
import { randomBytes } from 'node:crypto';
import { fstatSync, readSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Layout } from '../src/extents/extent.js';
import { CloneCache } from '../src/fuse/clone-cache.js';
import { usedBytes, withLoopFs } from './helpers/loop-fs.js';
import { runOk } from './helpers/run.js';

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
      const folder = cache.folder ?? '';
      try {
        const stateA = [{}];
        const fd = await cache.backingFor('/a.vhd', layoutOf(source, 1), stateA);
        expect(fd).toBeDefined();
        if (fd === undefined) return;
        expect(bytesOf(fd, 16, 0).every((byte) => byte === 1)).toBe(true);
        expect(bytesOf(fd, 4096, MIB).equals(data.subarray(0, 4096))).toBe(true);
        // The same state: the same clone.
        expect(await cache.backingFor('/a.vhd', layoutOf(source, 1), stateA)).toBe(fd);
        expect(await readdir(folder)).toHaveLength(1);

        // A new state of /a.vhd: a new clone; the old one is emptied (an open passthrough file
        // of it reads end of file) and removed.
        const [oldFile] = await readdir(folder);
        const oldPath = join(folder, oldFile ?? '');
        const oldHandle = await open(oldPath, 'r');
        const fdB = await cache.backingFor('/a.vhd', layoutOf(source, 2), [{}]);
        expect(fdB).toBeDefined();
        for (let tries = 0; tries < 100 && (await oldHandle.stat()).size !== 0; tries++) await new Promise((resolvePromise) => setTimeout(resolvePromise, 20));
        expect((await oldHandle.stat()).size).toBe(0);
        await oldHandle.close();
        expect(await readdir(folder)).toHaveLength(1);

        // Limit 2: /a.vhd is open, /b.vhd is not; a third disk evicts /b.vhd, not /a.vhd nor itself.
        cache.opened('/a.vhd');
        await cache.backingFor('/b.vhd', layoutOf(source, 3), [{}]);
        expect(await readdir(folder)).toHaveLength(2);
        await cache.backingFor('/c.vhd', layoutOf(source, 4), [{}]);
        for (let tries = 0; tries < 100 && (await readdir(folder)).length !== 2; tries++) await new Promise((resolvePromise) => setTimeout(resolvePromise, 20));
        const kept = await Promise.all((await readdir(folder)).map(async (name) => (await readFile(join(folder, name))).subarray(0, 1)[0]));
        expect(kept.sort()).toEqual([2, 4]);
        // Every copy open: the next one is kept too (over the limit), and its clone is usable.
        cache.opened('/c.vhd');
        const fdD = await cache.backingFor('/d.vhd', layoutOf(source, 5), [{}]);
        expect(fdD).toBeDefined();
        if (fdD === undefined) return;
        expect(bytesOf(fdD, 16, 0).every((byte) => byte === 5)).toBe(true);
        expect(await readdir(folder)).toHaveLength(3);

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

  it('beside the backups: an unnamed file on the backup\'s file system; the backup folder, its files and their times unchanged; emptied when retired', async () => {
    for (const kind of ['btrfs', 'xfs'] as const) {
      await withLoopFs(kind, 512 * MIB, async (fsDir) => {
        const root = join(fsDir, 'backups');
        const client = join(root, 'client', '231203-1200_Image_C');
        await mkdir(client, { recursive: true });
        const source = join(client, 'Image_C.raw');
        const data = Buffer.alloc(MIB, 0x3c);
        await writeFile(source, data);
        const before = await Promise.all([stat(client), stat(source)]);
        const names = await readdir(client);
        const lines: string[] = [];
        const cache = CloneCache.besideBackups(root, (line) => lines.push(line));
        let reopened: Awaited<ReturnType<typeof open>> | undefined;
        try {
          const disk = {};
          const fd = await cache.backingFor('/client/disk.vhd', layoutOf(source, 7), [disk]);
          expect(fd, `${kind}: ${lines.join('; ')}`).toBeDefined();
          if (fd === undefined) return;
          expect(bytesOf(fd, 16, 0).every((byte) => byte === 7)).toBe(true);
          expect(bytesOf(fd, MIB, MIB).equals(data)).toBe(true);
          // Unnamed (O_TMPFILE: no link), on the backup's file system, writable only by us.
          const clone = fstatSync(fd);
          expect(clone.nlink).toBe(0);
          expect(clone.dev).toBe(before[1].dev);
          expect(clone.mode & 0o777).toBe(0o600);
          const after = await Promise.all([stat(client), stat(source)]);
          expect(await readdir(client)).toEqual(names);
          for (const [index, entry] of after.entries()) {
            expect(entry.mtimeMs).toBe(before[index]?.mtimeMs);
            expect(entry.ctimeMs).toBe(before[index]?.ctimeMs);
          }
          // A second descriptor on the clone, as an open passthrough file holds: it reads end of
          // file once the disk is retired.
          reopened = await open(`/proc/self/fd/${fd}`, 'r');
          cache.retire(disk);
          for (let tries = 0; tries < 100 && (await reopened.stat()).size !== 0; tries++) await new Promise((resolvePromise) => setTimeout(resolvePromise, 20));
          expect((await reopened.stat()).size).toBe(0);
          expect(lines).toEqual([]);
        } finally {
          await reopened?.close();
          await cache.close();
        }
        expect(await readFile(source)).toEqual(data);
      });
    }
  });

  // ext4 cannot share blocks (FICLONERANGE: EOPNOTSUPP); a btrfs remounted read-only (a snapshot)
  // cannot hold the unnamed file (O_TMPFILE: EROFS). Either way no clone, no line, no name left,
  // and the second disk is not tried on that file system.
  it.each([
    { kind: 'ext4' as const, readOnly: false, why: 'cannot share blocks' },
    { kind: 'btrfs' as const, readOnly: true, why: 'is mounted read-only' },
  ])('beside the backups on a $kind that $why: served by the daemon, silently, nothing left in the folder', async ({ kind, readOnly }) => {
    await withLoopFs(kind, 256 * MIB, async (fsDir) => {
      const root = join(fsDir, 'backups');
      await mkdir(root);
      const source = join(root, 'volume.raw');
      await writeFile(source, Buffer.alloc(MIB, 0x11));
      if (readOnly) await runOk('mount', ['-o', 'remount,ro', fsDir]);
      const lines: string[] = [];
      const cache = CloneCache.besideBackups(root, (line) => lines.push(line));
      try {
        expect(await cache.backingFor('/a.vhd', layoutOf(source, 1), [{}])).toBeUndefined();
        expect(await cache.backingFor('/b.vhd', layoutOf(source, 2), [{}])).toBeUndefined();
        expect(lines).toEqual([]);
      } finally {
        await cache.close();
      }
      expect(await readdir(root)).toEqual(['volume.raw']);
    });
  });

  it('drops a clone no file has open once it is idle, so a deleted backup frees its space; an open clone stays', async () => {
    await withLoopFs('btrfs', 1024 * MIB, async (fsDir) => {
      const root = join(fsDir, 'backups');
      await mkdir(root);
      const size = 256 * MIB;
      const kept = join(root, 'kept.raw');
      const deleted = join(root, 'deleted.raw');
      for (const path of [kept, deleted]) await writeFile(path, randomBytes(size));
      const layout = (source: string): Layout => ({ size, extents: [{ kind: 'file', start: 0, length: size, path: source, offset: 0, what: 'volume' }] });
      const cache = CloneCache.besideBackups(root, () => undefined, 256, 300);
      try {
        expect(await cache.backingFor('/kept.vhd', layout(kept), [{}])).toBeDefined();
        cache.opened('/kept.vhd');
        const fd = await cache.backingFor('/deleted.vhd', layout(deleted), [{}]);
        expect(fd).toBeDefined();
        cache.opened('/deleted.vhd');
        cache.released('/deleted.vhd');
        const before = await usedBytes(fsDir);
        await rm(deleted);
        await new Promise((resolvePromise) => setTimeout(resolvePromise, 1000));
        // The idle clone is gone (its descriptor closed), and with it the last reference to the
        // deleted backup's blocks: the file system has them back. btrfs frees them at commit.
        let freed = before - (await usedBytes(fsDir));
        for (let tries = 0; tries < 50 && freed < size * 0.9; tries++) {
          await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
          freed = before - (await usedBytes(fsDir));
        }
        expect(freed).toBeGreaterThan(size * 0.9);
        // The open one is still there, readable.
        const keptFd = await cache.backingFor('/kept.vhd', layout(kept), [{}]);
        expect(keptFd).toBeDefined();
        expect(bytesOf(keptFd ?? -1, 4096, size - 4096).equals((await readFile(kept)).subarray(size - 4096))).toBe(true);
      } finally {
        await cache.close();
      }
    });
  });
});
