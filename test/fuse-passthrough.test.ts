// SPDX-License-Identifier: MIT
/**
 * FUSE passthrough (docs/fuse-passthrough.md): a mirrored file, and with `--clone-cache` on btrfs
 * and XFS a whole served disk, is read by the kernel from a real file with no request to the
 * daemon. Proven by the kernel's count of what the daemon read (/proc/<pid>/io) against the bytes
 * the reader got, and by qemu-img comparing the served disks with the independently assembled
 * ones. A backup deleted under an open clone reads as end-of-file, never as its old bytes; the
 * clone folder is private and gone after unmount; unsuitable cache folders are refused or fall
 * back to the daemon with one line saying why.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, stat, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { processIo } from './helpers/io-witness.js';
import { withLoopFs, type LoopFsKind } from './helpers/loop-fs.js';
import { runAs } from './helpers/permission-tree.js';
import { run, runOk, synthvhd } from './helpers/run.js';

const fixtures = inject('fixtures');
const NOBODY = { name: 'nobody', uid: 65534, gid: 65534 };
let work: string;
let expectedImage: string;
let disk: FixtureDisk;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-passthrough-'));
  disk = fixtureDisk(fixtures, 'uefi-gpt-run1');
  expectedImage = join(work, 'expected.img');
  await assembleExpectedDisk(disk, expectedImage);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function sha256(path: string): Promise<{ digest: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { digest: hash.digest('hex'), bytes };
}

/** Reads `path` whole while the kernel counts what the daemon `mount` reads; the reader's bytes and the daemon's. */
async function readCounted(mount: MountedChild, path: string): Promise<{ digest: string; bytes: number; daemonRead: number }> {
  const pid = mount.child.pid ?? 0;
  const before = await processIo(pid);
  const { digest, bytes } = await sha256(path);
  const after = await processIo(pid);
  return { digest, bytes, daemonRead: after.rchar - before.rchar };
}

/** Copies the backup folders of `source` into `target/backups/<client>`; the anchor's copy. */
async function copyClient(source: FixtureDisk, target: string): Promise<string> {
  const clientDir = join(target, 'backups', source.client);
  await mkdir(clientDir, { recursive: true });
  for (const volume of source.volumes) await runOk('cp', ['-a', '--sparse=always', volume.backupDir, clientDir]);
  return join(clientDir, basename(source.anchor.backupDir));
}

function servedDisk(mountpoint: string, extension: 'vhd' | 'vhdx'): string {
  return join(mountpoint, disk.client, basename(disk.anchor.backupDir), `Image_${disk.anchor.letter}_${disk.anchor.timestamp}.disk.${extension}`);
}

async function expectIdentical(image: string, format: 'vhdx' | 'vpc'): Promise<void> {
  const compare = await run('qemu-img', ['compare', '-f', format, '-F', 'raw', image, expectedImage]);
  expect(compare.stdout + compare.stderr).toContain('Images are identical');
}

describe('passthrough of mirrored files', () => {
  it('a mirrored .raw is read by the kernel from the backup file: same bytes, and the daemon reads (kernel-counted) almost none of them', async () => {
    const mountpoint = await tempMountpoint();
    let mount: MountedChild | undefined;
    try {
      mount = await startMount(fixtures.backupRoot, mountpoint.path);
      const raw = join(mountpoint.path, disk.client, basename(disk.anchor.backupDir), basename(disk.anchor.rawPath));
      const served = await readCounted(mount, raw);
      const source = await sha256(disk.anchor.rawPath);
      expect(served.bytes).toBe(source.bytes);
      expect(served.digest).toBe(source.digest);
      expect(served.bytes).toBeGreaterThan(16 * 1024 * 1024);
      // Read by the daemon, every byte would pass through its pread (rchar >= the file's size).
      expect(served.daemonRead).toBeLessThan(served.bytes / 16);
    } finally {
      await mount?.stop();
      await mountpoint.cleanup();
    }
  });
});

/**
 * The fixture disk's backups copied onto a fresh `kind` file system and mounted with `extra`:
 * clones beside the backups (the default), or with `folder` in a `--clone-cache` folder on that
 * file system; `body` gets the mount and the file system's folder, `afterUnmount` the clone
 * folder once the mount has ended (the file system is still there). Unmounted and removed
 * whatever happens.
 */
async function withCloneMount(
  kind: LoopFsKind,
  where: 'beside' | 'folder',
  extra: readonly string[],
  body: (mount: MountedChild, fsDir: string) => Promise<void>,
  afterUnmount?: (cloneDir: string) => Promise<void>,
): Promise<void> {
  await withLoopFs(kind, 1024 * 1024 * 1024, async (fsDir) => {
    await copyClient(disk, fsDir);
    const cloneDir = join(fsDir, 'clones');
    await mkdir(cloneDir);
    const mountpoint = await tempMountpoint();
    let mount: MountedChild | undefined;
    try {
      mount = await startMount(join(fsDir, 'backups'), mountpoint.path, [...(where === 'folder' ? ['--clone-cache', cloneDir] : []), ...extra]);
      await body(mount, fsDir);
    } finally {
      await mount?.stop();
      await mountpoint.cleanup();
    }
    await afterUnmount?.(cloneDir);
  });
}

/**
 * The served .vhd read whole while the kernel counts the daemon's reads: under 1/16 of it (read
 * by the daemon, every partition byte would pass through its pread); both served disks identical
 * to the assembled one. Returns the .vhd's path.
 */
async function expectServedByKernel(mount: MountedChild): Promise<string> {
  const vhd = servedDisk(mount.mountpoint, 'vhd');
  const size = (await stat(vhd)).size;
  const served = await readCounted(mount, vhd);
  expect(served.bytes).toBe(size);
  expect(served.daemonRead).toBeLessThan(size / 16);
  await expectIdentical(vhd, 'vpc');
  await expectIdentical(servedDisk(mount.mountpoint, 'vhdx'), 'vhdx');
  return vhd;
}

/** Every name under `dir` with its size and times (ns): what writing anything there would change. */
async function treeState(dir: string): Promise<string[]> {
  const state: string[] = [];
  for (const name of await readdir(dir, { recursive: true })) {
    const entry = await stat(join(dir, name), { bigint: true });
    state.push(`${name} ${entry.size} ${entry.mtimeNs} ${entry.ctimeNs} ${entry.mode}`);
  }
  const top = await stat(dir, { bigint: true });
  return [...state.sort(), `. ${top.mtimeNs} ${top.ctimeNs}`];
}

describe.each<LoopFsKind>(['btrfs', 'xfs'])('clones beside the backups (the default) on %s', (kind) => {
  it('serves whole disks from unnamed clones the kernel reads: identical to the assembled disk, the daemon reads almost nothing, the backup tree untouched', async () => {
    let before: string[] = [];
    let backups = '';
    let checked = false;
    await withCloneMount(kind, 'beside', [], async (mount, fsDir) => {
      backups = join(fsDir, 'backups');
      before = await treeState(backups);
      await expectServedByKernel(mount);
      // Nothing named, changed or touched in the backup tree (nor the clone folder made).
      expect(await treeState(backups)).toEqual(before);
      expect(await readdir(fsDir)).toEqual(['backups', 'clones']);
      expect(mount.stderr()).toBe('');
    }, async () => {
      expect(await treeState(backups)).toEqual(before);
      checked = true;
    });
    expect(checked).toBe(true);
  });

  it('--no-clones: the same disk read through the daemon (the kernel counts its reads)', async () => {
    await withCloneMount(kind, 'beside', ['--no-clones'], async (mount) => {
      const vhd = servedDisk(mount.mountpoint, 'vhd');
      const served = await readCounted(mount, vhd);
      await expectIdentical(vhd, 'vpc');
      // The partitions' bytes pass through the daemon's pread: at least the C: volume.
      expect(served.daemonRead).toBeGreaterThan((await stat(disk.anchor.rawPath)).size / 2);
    });
  });

  it('a backup deleted under an open clone reads as end-of-file, never as its old bytes', async () => {
    await expectEmptiedAfterDelete(kind, 'beside');
  });
});

/** Opens the served .vhd, deletes its backups, and waits for the open file to read end of file. */
async function expectEmptiedAfterDelete(kind: LoopFsKind, where: 'beside' | 'folder'): Promise<void> {
  await withCloneMount(kind, where, [], async (mount, fsDir) => {
    const handle = await open(servedDisk(mount.mountpoint, 'vhd'), 'r');
    try {
      // A range inside the C: partition, read once while the backup is there.
      const at = disk.anchor.partitionOffset + 4 * 1024 * 1024;
      const before = Buffer.alloc(64 * 1024);
      expect((await handle.read(before, 0, before.length, at)).bytesRead).toBe(before.length);
      for (const volume of disk.volumes) await rm(join(fsDir, 'backups', disk.client, basename(volume.backupDir)), { recursive: true });
      const deadline = Date.now() + 20_000;
      let emptied = false;
      while (!emptied && Date.now() < deadline) {
        const now = Buffer.alloc(before.length);
        const { bytesRead } = await handle.read(now, 0, now.length, at);
        if (bytesRead === 0) emptied = true;
        else expect(now.subarray(0, bytesRead).equals(before.subarray(0, bytesRead))).toBe(true);
        await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
      }
      expect(emptied, 'the open clone still read bytes 20 s after its backup was deleted').toBe(true);
    } finally {
      await handle.close();
    }
    expect(mount.child.exitCode).toBeNull();
  });
}

describe.each<LoopFsKind>(['btrfs', 'xfs'])('--clone-cache on %s', (kind) => {
  it('serves whole disks from reflinked clones the kernel reads: identical to the assembled disk, the daemon reads almost nothing, the clone folder is private and removed at unmount', async () => {
    let checkedFolder = false;
    await withCloneMount(
      kind,
      'folder',
      ['--allow-other'],
      async (mount, fsDir) => {
        const vhd = await expectServedByKernel(mount);
        // One private folder for this mount, holding the two clones.
        const cloneDir = join(fsDir, 'clones');
        const folders = await readdir(cloneDir);
        expect(folders).toHaveLength(1);
        const folder = join(cloneDir, folders[0] ?? '');
        expect((await stat(folder)).mode & 0o777).toBe(0o700);
        expect(await readdir(folder)).toHaveLength(2);
        // Who may read is decided at open, as without clones: a folder nobody cannot enter keeps
        // nobody out of the disk it holds.
        expect((await runAs(NOBODY, 'head', ['-c', '4096', vhd])).code).toBe(0);
        await chmod(join(fsDir, 'backups', disk.client), 0o700);
        // The kernel trusts the attributes it was given for a second (attr_timeout); meanwhile
        // the changed folder retires the disk (its opens answer EIO until it is composed again).
        let refused = await runAs(NOBODY, 'head', ['-c', '4096', vhd]);
        for (let tries = 0; tries < 50 && !/Permission denied/.test(refused.stderr); tries++) {
          await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
          refused = await runAs(NOBODY, 'head', ['-c', '4096', vhd]);
        }
        expect(refused.code).not.toBe(0);
        expect(refused.stderr).toMatch(/Permission denied/);
        expect(mount.stderr()).toBe('');
      },
      async (cloneDir) => {
        expect(await readdir(cloneDir)).toEqual([]);
        checkedFolder = true;
      },
    );
    expect(checkedFolder).toBe(true);
  });

  it('a backup deleted under an open clone reads as end-of-file, never as its old bytes', async () => {
    await expectEmptiedAfterDelete(kind, 'folder');
  });
});

describe('unsuitable clone caches', () => {
  it('refuses a --clone-cache inside the backup root with one line; on a file system without reflink the daemon serves the disk and says why once', async () => {
    const never = await mkdtemp(join(work, 'never-mounted-'));
    const inside = await synthvhd(['mount', '--clone-cache', join(fixtures.backupRoot, disk.client), fixtures.backupRoot, never]);
    expect(inside.code).toBe(2);
    expect(inside.stderr.trim().split('\n')).toHaveLength(1);
    expect(inside.stderr).toContain('--clone-cache');
    expect(inside.stderr).toContain('is inside the backup root');

    await withLoopFs('ext4', 512 * 1024 * 1024, async (fsDir) => {
      const cloneDir = join(fsDir, 'clones');
      await mkdir(cloneDir);
      const mountpoint = await tempMountpoint();
      let mount: MountedChild | undefined;
      try {
        // The backups on this machine's disk, the cache on another file system: nothing can be shared.
        mount = await startMount(fixtures.backupRoot, mountpoint.path, ['--clone-cache', cloneDir]);
        const vhdx = servedDisk(mountpoint.path, 'vhdx');
        await expectIdentical(vhdx, 'vhdx');
        await sha256(vhdx);
        const lines = mount.stderr().trim().split('\n').filter((line) => line.includes(basename(vhdx)));
        expect(lines).toHaveLength(1);
        expect(lines[0]).toContain('served by the daemon, not from a clone');
        expect(lines[0]).toMatch(/cannot share blocks|Invalid cross-device|EXDEV|cross-device/i);
      } finally {
        await mount?.stop();
        await mountpoint.cleanup();
      }
    });
  });
});
