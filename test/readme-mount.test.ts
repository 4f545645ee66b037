// SPDX-License-Identifier: MIT
/**
 * `synthvhd mount` behaviour the README promises that no other test exercised:
 * - SIGINT unmounts and the process exits 0 ("Commands", "Unmount");
 * - `--windows-path`: a served `.disk_diff.vhdx` names its parent below it (read by libvhdi's
 *   vhdiinfo, not by our parser);
 * - "Who may read what": a source swapped for a symlink after its disk was composed serves no
 *   byte of the symlink's target, and the disk answers EIO.
 * Each mount is a child process on its own temp mount point, over copies of fixture backups.
 */
import { execFile } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { runOk } from './helpers/run.js';

const execFileAsync = promisify(execFile);
const fixtures = inject('fixtures');
const MiB = 1024 * 1024;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-readme-mount-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Copies every backup folder of `disks` into `root/<client>/` (sparse, times kept). */
async function copyDisks(root: string, disks: readonly FixtureDisk[]): Promise<void> {
  for (const disk of disks) {
    await mkdir(join(root, disk.client), { recursive: true });
    for (const volume of disk.volumes) {
      await execFileAsync('cp', ['-a', '--sparse=always', '--reflink=auto', volume.backupDir, join(root, disk.client, basename(volume.backupDir))]);
    }
  }
}

/** A mount of `root` for the length of `body`; always stopped and its mount point removed. */
async function withMount<T>(root: string, extra: readonly string[], body: (mounted: MountedChild) => Promise<T>): Promise<T> {
  const mountpoint = await tempMountpoint('synthvhd-readme-mnt-');
  const mounted = await startMount(root, mountpoint.path, extra);
  try {
    return await body(mounted);
  } finally {
    await mounted.stop();
    await mountpoint.cleanup();
  }
}

/** Mount points in /proc/self/mountinfo (proc(5): field 5, with \ooo escapes), read here. */
async function mountPoints(): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => (line.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))));
}

/** Polls until `probe` holds (the mount plans diffs in the background). */
async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await probe())) {
    if (performance.now() > deadline) throw new Error(`never happened: ${what}`);
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

describe('README: SIGINT', () => {
  it('unmounts: the mount point leaves /proc/self/mountinfo and the process exits 0', async () => {
    const root = join(work, 'sigint-root');
    await mkdir(root);
    const mountpoint = await tempMountpoint('synthvhd-readme-sigint-');
    try {
      const mounted = await startMount(root, mountpoint.path);
      expect(await mountPoints()).toContain(mountpoint.path);
      const exited = new Promise<number | null>((resolvePromise) => mounted.child.once('exit', (code) => { resolvePromise(code); }));
      mounted.child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(mounted.child.signalCode).toBeNull();
      expect(await mountPoints()).not.toContain(mountpoint.path);
      expect(mounted.stdout()).toContain(`synthvhd: unmounted ${mountpoint.path} (SIGINT)`);
    } finally {
      await mountpoint.cleanup();
    }
  });
});

describe('README: mount --windows-path', () => {
  it("a served .disk_diff.vhdx's absolute_win32_path is its parent's served .disk.vhdx below the given share (vhdiinfo)", async () => {
    const run1 = fixtureDisk(fixtures, 'uefi-gpt-run1');
    const run2 = fixtureDisk(fixtures, 'uefi-gpt-run2');
    const root = join(work, 'windows-path-root');
    await copyDisks(root, [run1, run2]);
    await withMount(root, ['--windows-path', '\\\\backupsrv\\vdisks'], async (mounted) => {
      const olderFolder = basename(run1.anchor.backupDir);
      const newerFolder = join(mounted.mountpoint, run2.client, basename(run2.anchor.backupDir));
      const diff = join(newerFolder, `Image_C_${run2.anchor.timestamp}.disk_diff.vhdx`);
      const parent = join(mounted.mountpoint, run2.client, olderFolder, `Image_C_${run1.anchor.timestamp}.disk.vhdx`);
      await readdir(newerFolder); // its first look starts the plan
      await until(`${diff} appears`, () => exists(diff));
      const info = (await runOk('vhdiinfo', [diff])).stdout;
      expect(info).toMatch(/Disk type\s*:\s*Differential/);
      // MS-VHDX 2.6.2.6.3: a UNC path as \\?\UNC\server\share\...; the share is the mount point.
      const expected = `\\\\?\\UNC\\backupsrv\\vdisks\\${run2.client}\\${olderFolder}\\Image_C_${run1.anchor.timestamp}.disk.vhdx`;
      expect(/Parent filename\s*:\s*(.*)$/m.exec(info)?.[1]).toBe(expected);
      // And the parent it names is the served older disk (its identifier, also by vhdiinfo).
      const parentId = /Identifier\s*:\s*(\S+)/.exec((await runOk('vhdiinfo', [parent])).stdout)?.[1];
      expect(parentId).toMatch(/^[0-9a-f-]{36}$/);
      expect(/Parent identifier\s*:\s*(\S+)/.exec(info)?.[1]).toBe(parentId);
    });
  });

  it('without it, the default share is \\\\<host name>\\<mount point folder name>', async () => {
    const run1 = fixtureDisk(fixtures, 'uefi-gpt-run1');
    const run2 = fixtureDisk(fixtures, 'uefi-gpt-run2');
    const root = join(work, 'windows-path-default-root');
    await copyDisks(root, [run1, run2]);
    await withMount(root, [], async (mounted) => {
      const newerFolder = join(mounted.mountpoint, run2.client, basename(run2.anchor.backupDir));
      const diff = join(newerFolder, `Image_C_${run2.anchor.timestamp}.disk_diff.vhdx`);
      await readdir(newerFolder);
      await until(`${diff} appears`, () => exists(diff));
      const info = (await runOk('vhdiinfo', [diff])).stdout;
      const expected = `\\\\?\\UNC\\${hostname()}\\${basename(mounted.mountpoint)}\\${run2.client}\\${basename(run1.anchor.backupDir)}\\Image_C_${run1.anchor.timestamp}.disk.vhdx`;
      expect(/Parent filename\s*:\s*(.*)$/m.exec(info)?.[1]).toBe(expected);
    });
  });
});

describe('README "Who may read what": a source swapped for a symlink after its disk was composed', () => {
  it('serves no byte of the link target: the open disk answers EIO, a new open finds no disk', async () => {
    const disk = fixtureDisk(fixtures, 'bios-mbr');
    const root = join(work, 'swap-root');
    await copyDisks(root, [disk]);
    const expected = join(work, 'swap-expected.raw');
    await assembleExpectedDisk(disk, expected);
    const truth = await readFile(expected);
    // A secret outside the root, shaped like the .raw it replaces: same size, owner, mode and
    // times, so nothing but the symlink itself tells them apart.
    const raw = join(root, disk.client, basename(disk.anchor.backupDir), basename(disk.anchor.rawPath));
    const rawInfo = await stat(raw);
    const marker = Buffer.from('OUTSIDE-THE-ROOT');
    const secret = join(work, 'secret.bin');
    await writeFile(secret, Buffer.alloc(rawInfo.size, marker));
    await chmod(secret, rawInfo.mode & 0o7777);
    await utimes(secret, rawInfo.atime, rawInfo.mtime);

    await withMount(root, [], async (mounted) => {
      const served = join(mounted.mountpoint, disk.client, basename(disk.anchor.backupDir), `Image_C_${disk.anchor.timestamp}.disk.vhd`);
      const handle = await open(served, 'r');
      try {
        // A fixed VHD is the disk, then its footer: the start reads as the truth.
        const first = Buffer.alloc(MiB);
        await handle.read(first, 0, first.length, 0);
        expect(first.equals(truth.subarray(0, MiB))).toBe(true);

        // The folder's times put back too: whoever can swap files can set times.
        const folder = join(root, disk.client, basename(disk.anchor.backupDir));
        const folderInfo = await stat(folder);
        await rename(raw, join(work, 'swapped-out.raw')); // the daemon's descriptors keep it alive
        await symlink(secret, raw);
        await utimes(folder, folderInfo.atime, folderInfo.mtime);
        expect((await lstat(raw)).isSymbolicLink()).toBe(true);

        // Read places never read before (2 MiB apart, from the end backwards: no readahead
        // covers them), until the mount has noticed; every byte served is never the secret's.
        const piece = Buffer.alloc(64 * 1024);
        let sawEio = false;
        for (let round = 0; round < 16 && !sawEio; round++) {
          for (let position = truth.length - 2 * MiB + round * 64 * 1024; position >= MiB && !sawEio; position -= 2 * MiB) {
            try {
              const { bytesRead } = await handle.read(piece, 0, piece.length, position);
              expect(piece.subarray(0, bytesRead).includes(marker)).toBe(false);
              expect(piece.subarray(0, bytesRead).equals(truth.subarray(position, position + bytesRead))).toBe(true);
            } catch (error) {
              expect((error as NodeJS.ErrnoException).code).toBe('EIO');
              sawEio = true;
            }
            await new Promise((resolvePromise) => setTimeout(resolvePromise, 50));
          }
        }
        expect(sawEio).toBe(true);
      } finally {
        await handle.close();
      }
      // A new open: the disk is gone (its .raw is a symlink now) or refused; never the secret.
      let reopened: Buffer | undefined;
      try {
        reopened = await readFile(served);
      } catch (error) {
        expect(['ENOENT', 'EIO', 'EACCES']).toContain((error as NodeJS.ErrnoException).code);
      }
      expect(reopened).toBeUndefined();
      // The log names the symlink once the folder is composed again.
      await readdir(join(mounted.mountpoint, disk.client, basename(disk.anchor.backupDir)));
      await until('the mount logs the symlinked .raw', () => Promise.resolve(mounted.stderr().includes(`${raw}: is a symbolic link`)));
    });
  });
});

describe('README "How the mount serves reads": reads never reach JavaScript', () => {
  // Once the open file's attributes are older than attr_timeout (1 s), the kernel sends a getattr
  // before each read (auto_inval_data, fs/fuse/file.c fuse_cache_read_iter): the addon answers it
  // for an open virtual disk (native/src/session.cc GetattrOfOpenFile), or the reads below would
  // wait for the blocked thread.
  it('reads of an open disk complete while the Node thread is blocked; a lookup waits for it', async () => {
    const disk = fixtureDisk(fixtures, 'bios-mbr');
    const root = join(work, 'blocked-js-root');
    await copyDisks(root, [disk]);
    const expected = join(work, 'blocked-js-expected.raw');
    await assembleExpectedDisk(disk, expected);
    const truth = await readFile(expected);
    // The mount's test-only switch (src/cli/commands/mount.ts): SIGUSR2 blocks its Node thread
    // until this file exists.
    const release = join(work, 'release-js-thread');
    process.env.SYNTHVHD_TEST_BLOCK_JS = release;
    const started = withMount(root, [], async (mounted) => {
      delete process.env.SYNTHVHD_TEST_BLOCK_JS;
      const served = join(mounted.mountpoint, disk.client, basename(disk.anchor.backupDir), `Image_C_${disk.anchor.timestamp}.disk.vhd`);
      const handle = await open(served, 'r');
      try {
        const piece = Buffer.alloc(256 * 1024);
        await handle.read(piece, 0, piece.length, 0);
        expect(piece.equals(truth.subarray(0, piece.length))).toBe(true);

        mounted.child.kill('SIGUSR2');
        await until('the mount says its JavaScript thread is blocked', () => Promise.resolve(mounted.stderr().includes('synthvhd: test: JavaScript thread blocked')));
        // From here until `release` exists the daemon's Node thread runs nothing else.
        let lookupDone = false;
        const lookup = stat(join(mounted.mountpoint, `never-looked-up-${process.pid}`)).then(
          () => { lookupDone = true; return 'found'; },
          (error: unknown) => { lookupDone = true; return (error as NodeJS.ErrnoException).code ?? 'error'; },
        );
        // Past the mount's attr_timeout (1 s): the kernel now asks for the open file's attributes
        // before reading it (auto_inval_data), which must not wait for JavaScript either.
        await new Promise((resolvePromise) => setTimeout(resolvePromise, 1500));
        // Places never read before (no readahead reached them): each read goes to the daemon.
        for (const position of [4 * MiB, 20 * MiB, 40 * MiB, 60 * MiB, 78 * MiB]) {
          const { bytesRead } = await handle.read(piece, 0, piece.length, position);
          expect(bytesRead).toBe(piece.length);
          expect(piece.equals(truth.subarray(position, position + piece.length))).toBe(true);
        }
        // The reads are answered, the lookup (which JavaScript answers) is not, and the thread
        // has not been released: the reads did not need it.
        expect(lookupDone).toBe(false);
        expect(mounted.stderr()).not.toContain('JavaScript thread released');
        await writeFile(release, '');
        expect(await lookup).toBe('ENOENT');
        await until('the mount says its JavaScript thread is released', () => Promise.resolve(mounted.stderr().includes('synthvhd: test: JavaScript thread released\n')));
      } finally {
        await writeFile(release, '');
        await handle.close();
      }
    });
    await started;
  });

  // READDIRPLUS (native/src/session.cc Readdirplus): a listing hands the kernel each real file's
  // attributes, as a lookup would, so `ls -l` needs no lookup per file. Shown by causality: right
  // after the listing the Node thread is blocked; the real files still stat (the kernel has their
  // attributes), while a virtual disk, listed without attributes, waits for JavaScript.
  it('a listing gives real files their attributes: they stat while the Node thread is blocked', async (context) => {
    const disk = fixtureDisk(fixtures, 'bios-mbr');
    const root = join(work, 'readdirplus-root');
    await copyDisks(root, [disk]);
    const release = join(work, 'release-js-thread-readdirplus');
    process.env.SYNTHVHD_TEST_BLOCK_JS = release;
    await withMount(root, [], async (mounted) => {
      delete process.env.SYNTHVHD_TEST_BLOCK_JS;
      const folder = join(mounted.mountpoint, disk.client, basename(disk.anchor.backupDir));
      const source = join(root, disk.client, basename(disk.anchor.backupDir));
      const names = await readdir(folder);
      const listedAt = performance.now();
      const real = names.filter((name) => !name.includes('.disk'));
      const virtualDisk = names.find((name) => name.endsWith('.disk.vhdx'));
      expect(real.length).toBeGreaterThanOrEqual(4); // .raw, .raw.mbr, .raw.hash, .raw.sync
      expect(virtualDisk).toBeDefined();
      try {
        mounted.child.kill('SIGUSR2');
        await until('the mount says its JavaScript thread is blocked', () => Promise.resolve(mounted.stderr().includes('synthvhd: test: JavaScript thread blocked')));
        // The kernel keeps listed attributes for entry_timeout (1 s): a machine that took most of
        // it to block the thread cannot show anything.
        const blockedAfterMs = performance.now() - listedAt;
        if (blockedAfterMs > 600) {
          context.skip(`blocking the Node thread took ${Math.round(blockedAfterMs)} ms after the listing, too close to the 1 s the kernel keeps its attributes`);
          return;
        }
        let virtualDone = false;
        const virtualStat = lstat(join(folder, virtualDisk ?? '')).finally(() => { virtualDone = true; });
        const pending = Promise.all(real.map((name) => lstat(join(folder, name))));
        const stats = await Promise.race([pending, new Promise<undefined>((resolvePromise) => setTimeout(() => { resolvePromise(undefined); }, 300))]);
        expect(stats, 'the real files did not stat within 300 ms: their lookups waited for the blocked Node thread').toBeDefined();
        for (const [index, name] of real.entries()) {
          const truth = await lstat(join(source, name));
          const served = stats?.[index];
          expect(served?.size, name).toBe(truth.size);
          expect(served?.mtimeMs, name).toBe(truth.mtimeMs);
          expect(served?.mode, name).toBe(truth.mode & ~0o222); // the source's mode minus write
        }
        // The control: the thread really is blocked, so a lookup that needs it waits.
        await new Promise((resolvePromise) => setTimeout(resolvePromise, 200));
        expect(virtualDone).toBe(false);
        await writeFile(release, '');
        expect((await virtualStat).size).toBeGreaterThan(0);
      } finally {
        await writeFile(release, '');
      }
    });
  });
});
