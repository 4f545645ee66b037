// SPDX-License-Identifier: MIT
/**
 * The one-job source calls of the native addon (native/src/source_files.cc) against the kernel:
 * lstatPaths must say what Node's lstat/stat say, and the confined open (openSourceNative) must
 * refuse what the promise-per-call open refuses, with the same one-line errors, before reading a
 * byte, and leave no descriptor behind.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSourceFileWithStat, openSourceNative } from '../src/extents/confined-open.js';
import { lstatPaths } from '../src/native/native.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;

describe('native source calls', () => {
  let base: string;
  let root: string;

  beforeAll(() => {
    base = mkdtempSync(join(tmpdir(), 'synthvhd-source-native-'));
    root = join(base, 'root');
    mkdirSync(join(root, 'client'), { recursive: true });
    writeFileSync(join(root, 'client', 'small.raw.mbr'), Buffer.from('0123456789'));
    writeFileSync(join(root, 'client', 'big'), Buffer.alloc(5000, 7));
    writeFileSync(join(base, 'outside'), 'secret');
    symlinkSync(join(base, 'outside'), join(root, 'client', 'link-out'));
    symlinkSync('small.raw.mbr', join(root, 'client', 'link-in'));
    symlinkSync(base, join(root, 'folder-out'));
    execFileSync('mkfifo', [join(root, 'client', 'fifo')]);
  });

  afterAll(() => {
    rmSync(base, { recursive: true, force: true });
  });

  it('lstatPaths gives what Node gives, for files, folders, symlinks (followed or not) and missing paths', async () => {
    const names = ['client/small.raw.mbr', 'client', 'client/link-out', 'client/link-in', 'client/fifo', 'missing', 'folder-out'];
    const paths = names.map((name) => join(root, name));
    for (const follow of [false, true]) {
      const got = await lstatPaths(paths, follow);
      paths.forEach((path, index) => {
        let expected;
        try {
          expected = follow ? statSync(path) : lstatSync(path);
        } catch {
          expected = undefined;
        }
        if (expected === undefined) {
          expect(got[index], `${names[index]} (follow ${follow})`).toBeUndefined();
          return;
        }
        expect(got[index], `${names[index]} (follow ${follow})`).toEqual({
          dev: expected.dev,
          ino: expected.ino,
          mode: expected.mode,
          nlink: expected.nlink,
          uid: expected.uid,
          gid: expected.gid,
          size: expected.size,
          blksize: expected.blksize,
          blocks: expected.blocks,
          atimeMs: expected.atimeMs,
          mtimeMs: expected.mtimeMs,
          ctimeMs: expected.ctimeMs,
        });
      });
    }
    expect((await lstatPaths([join(root, 'missing')]))[0]).toBeUndefined();
  });

  it('reads a small file whole and closes it, or hands the open descriptor over', async () => {
    const before = openFds();
    const read = await openSourceNative(join(root, 'client', 'small.raw.mbr'), { root }, { maxSize: 1024, readLength: 1024 });
    expect(read.bytes.toString()).toBe('0123456789');
    expect(read.fd).toBe(-1);
    expect(read.size).toBe(10);
    expect(read.mtimeMs).toBe(statSync(join(root, 'client', 'small.raw.mbr')).mtimeMs);
    expect(openFds()).toBe(before);
    const opened = await openSourceNative(join(root, 'client', 'big'), { root }, {});
    expect(opened.fd).toBeGreaterThanOrEqual(0);
    expect(opened.bytes.length).toBe(0);
    expect(opened.size).toBe(5000);
    expect(openFds()).toBe(before + 1);
    closeSync(opened.fd);
    // Partial read: the first bytes only.
    const head = await openSourceNative(join(root, 'client', 'big'), { root }, { readLength: 100 });
    expect(head.bytes).toEqual(Buffer.alloc(100, 7));
    expect(openFds()).toBe(before);
  });

  it.each([
    ['a final symlink, even to a file inside the root', 'client/link-in', {}, /client\/link-in: is a symbolic link: a source file must be a regular file inside the backup root/],
    ['a symlink leading outside', 'client/link-out', {}, /is a symbolic link/],
    ['a FIFO (without blocking)', 'client/fifo', {}, /client\/fifo: is not a regular file: a source file must be one, so it is not used/],
    ['a folder', 'client', {}, /client: is not a regular file/],
    ['a file over its size limit', 'client/big', { maxSize: 4096 }, /client\/big: is 5000 bytes, more than a source file can be \(4096\): refused without reading it/],
    ['a file reached through a symlinked folder that leaves the root', 'folder-out/outside', {}, /folder-out\/outside: resolves to .*\/outside, outside the backup root .*: not used/],
    ['a missing file', 'client/none', {}, /client\/none: cannot open: ENOENT/],
  ])('refuses %s with the same error as the promise-per-call open, leaving no descriptor', async (_what, name, options, message) => {
    const before = openFds();
    const path = join(root, name);
    const native = await openSourceNative(path, { root }, { ...options, readLength: 64 }).then(
      () => new Error('opened'),
      (error: unknown) => error,
    );
    const previous = await openSourceFileWithStat(path, { root }, options).then(
      async ({ handle }) => {
        await handle.close();
        return new Error('opened');
      },
      (error: unknown) => error,
    );
    expect(native).toMatchObject({ code: (previous as { code: string }).code });
    expect((native as Error).message).toMatch(message);
    expect((native as Error).message).toBe((previous as Error).message);
    expect(openFds()).toBe(before);
  });
});
