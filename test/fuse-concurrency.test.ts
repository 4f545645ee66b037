// SPDX-License-Identifier: MIT
/**
 * One virtual disk hammered by 16 reader processes through `synthvhd mount` (reads served by the
 * native session's threads) while its backup is deleted, and while the mount is unmounted: no
 * crash, no wrong byte: every read gives the right bytes or an error (EIO once the mount has
 * noticed the deletion, and always EIO for an uncached read once it has; after the unmount,
 * whatever the kernel says once the daemon is gone).
 * The right bytes are `synthvhd materialize`'s .vhd of the same backup, made before mounting.
 * Works on a copy of a fixture backup (the fixture tree itself must stay untouched).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { isMounted, readUntilRefused, startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { startReaders, type ReaderResult } from './helpers/range-readers.js';
import { synthvhd } from './helpers/run.js';

const execFileAsync = promisify(execFile);
const fixtures = inject('fixtures');
const READERS = 16;

let work: string;
let expectedVhd: string;

/** A copy of every volume of `disk` under `root/<client>/`. */
async function copyDisk(disk: FixtureDisk, root: string): Promise<string> {
  await mkdir(join(root, disk.client), { recursive: true });
  for (const volume of disk.volumes) {
    await execFileAsync('cp', ['-a', '--sparse=always', '--reflink=auto', volume.backupDir, join(root, disk.client, basename(volume.backupDir))]);
  }
  return join(root, disk.client, basename(disk.anchor.backupDir));
}

function servedVhd(mountpoint: string, disk: FixtureDisk): string {
  return join(mountpoint, disk.client, basename(disk.anchor.backupDir), `Image_${disk.anchor.letter}_${disk.anchor.timestamp}.disk.vhd`);
}

function fixtureDisk(): FixtureDisk {
  const disk = fixtures.disks.find((candidate) => candidate.name === 'uefi-gpt-run1');
  if (disk === undefined) throw new Error('no fixture disk uefi-gpt-run1');
  return disk;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-concurrency-'));
  const reference = await copyDisk(fixtureDisk(), join(work, 'reference'));
  expectedVhd = join(work, 'expected.vhd');
  const made = await synthvhd(['materialize', reference, '-o', expectedVhd, '--reflink', 'never']);
  expect(made.code, made.stderr).toBe(0);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Mounts a fresh copy of the disk's backups, runs `body`, and always stops and unmounts. */
async function withMountedCopy(name: string, body: (mount: MountedChild, root: string) => Promise<void>): Promise<void> {
  const root = join(work, name);
  await copyDisk(fixtureDisk(), root);
  const mountpoint = await tempMountpoint();
  let mount: MountedChild | undefined;
  try {
    mount = await startMount(root, mountpoint.path);
    await body(mount, root);
  } finally {
    await mount?.stop();
    await mountpoint.cleanup();
  }
}

function expectNoWrongByte(results: readonly ReaderResult[], allowed: readonly string[]): void {
  for (const result of results) {
    expect(result.mismatches).toBe(0);
    expect(result.reads).toBeGreaterThan(0);
    for (const code of result.errorCodes) expect(allowed).toContain(code);
  }
}

describe('16 readers of one virtual disk', () => {
  it('read the right bytes or EIO while its backup is deleted; once the mount noticed, reads answer EIO; the mount lives on', async () => {
    await withMountedCopy('deleted', async (mount, root) => {
      const disk = fixtureDisk();
      const served = servedVhd(mount.mountpoint, disk);
      const size = (await stat(expectedVhd)).size;
      // The readers stay in the first half of the disk: nothing reads the second half, so no
      // page of it is cached and a read there must be answered by the mount.
      const readers = startReaders(served, expectedVhd, READERS, 3000, 1024 * 1024, Math.floor(size / 2));
      const witness = await open(served, 'r');
      try {
        await readers.opened;
        await new Promise((resolvePromise) => setTimeout(resolvePromise, 300));
        for (const volume of disk.volumes) await rm(join(root, disk.client, basename(volume.backupDir)), { recursive: true });
        const results = await readers.done;
        expectNoWrongByte(results, ['EIO']);
        // The mount notices the deletion at its next look at the sources (a read of an open handle
        // looks at most once a second); from then on, a read the page cache cannot answer is
        // refused with EIO, never served from sources that are gone.
        const expected = await open(expectedVhd, 'r');
        try {
          const refused = await readUntilRefused(witness, { from: Math.floor(size / 2) + 4 * 1024 * 1024, to: size, step: 256 * 1024, length: 64 * 1024 }, expected);
          expect(refused.code).toBe('EIO');
        } finally {
          await expected.close();
        }
      } finally {
        await witness.close();
      }
      // The daemon is alive and serves the rest of the tree.
      expect(mount.child.exitCode).toBeNull();
      expect(await readdir(join(mount.mountpoint, disk.client))).toEqual([]);
    });
  });

  it('read the right bytes or fail while the mount is unmounted (SIGTERM); the daemon exits 0', async () => {
    await withMountedCopy('unmounted', async (mount) => {
      const readers = startReaders(servedVhd(mount.mountpoint, fixtureDisk()), expectedVhd, READERS, 2500);
      await readers.opened;
      await new Promise((resolvePromise) => setTimeout(resolvePromise, 300));
      const stopped = mount.stop();
      const results = await readers.done;
      expect(await stopped).toBe(0);
      expect(await isMounted(mount.mountpoint)).toBe(false);
      // Until the daemon exits, open files are still served; then the kernel answers ENOTCONN
      // (the connection is gone) or EIO.
      expectNoWrongByte(results, ['EIO', 'ENOTCONN', 'ECONNABORTED']);
    });
  });
});
