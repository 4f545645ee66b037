// SPDX-License-Identifier: MIT
/**
 * A live backup root under `synthvhd mount`: backups that appear, complete, fail to place, change
 * or vanish while mounted. Works on copies of fixture backups in a temp root (the fixture tree
 * itself must stay untouched), and on a root of 1 000 backups that the mount must not scan.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { readUntilRefused, startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { synthvhd } from './helpers/run.js';
import { processIo, type KernelIo } from './helpers/io-witness.js';

const execFileAsync = promisify(execFile);
const fixtures = inject('fixtures');

function disk(name: string): FixtureDisk {
  const found = fixtures.disks.find((candidate) => candidate.name === name);
  if (found === undefined) throw new Error(`no fixture disk ${name}`);
  return found;
}

/** Copies a backup folder (sparse, keeping times) into `root/<client>/`. */
async function copyBackup(backupDir: string, root: string, client: string): Promise<string> {
  const target = join(root, client, basename(backupDir));
  await mkdir(join(root, client), { recursive: true });
  await execFileAsync('cp', ['-a', '--sparse=always', '--reflink=auto', backupDir, target]);
  return target;
}

/**
 * Polls `probe` until it returns true. The mount looks at its sources again at most once a second
 * and the kernel caches entries and attributes for 1 s, so a change shows within a few seconds;
 * the timeout is only there so a mount that never shows it fails with a message instead of
 * hanging (a loaded machine must not make the test flaky).
 */
async function eventually(what: string, probe: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await probe())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting until ${what}`);
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
  }
}

function childPid(mounted: MountedChild): number {
  const pid = mounted.child.pid;
  if (pid === undefined) throw new Error('the mount child has no pid');
  return pid;
}

/** The names in `path`; any error (EIO, ENOTCONN from a dead mount…) fails the test. */
async function names(path: string): Promise<string[]> {
  return readdir(path);
}

/** The names in `path`, or undefined while it does not exist (ENOENT); any other error fails the test. */
async function namesIfPresent(path: string): Promise<string[] | undefined> {
  try {
    return await readdir(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** stat of `path`, or undefined while it does not exist (ENOENT); any other error fails the test. */
async function statIfPresent(path: string): Promise<Awaited<ReturnType<typeof stat>> | undefined> {
  try {
    return await stat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * Drops the page cache of `path` (posix_fadvise DONTNEED through dd's iflag=nocache, count=0:
 * the whole file) and proves it with fincore: the next read of the file must reach the mount.
 */
async function dropPageCache(path: string): Promise<void> {
  await execFileAsync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
  const { stdout } = await execFileAsync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path]);
  expect(Number(stdout.trim()), `${path} still has pages in the page cache`).toBe(0);
}

let root: string;
let mountpoint: { path: string; cleanup: () => Promise<void> };
let mount: MountedChild | undefined;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'synthvhd-live-root-'));
  mountpoint = await tempMountpoint();
  mount = await startMount(root, mountpoint.path);
});

afterAll(async () => {
  try {
    await mount?.stop();
  } finally {
    await mountpoint.cleanup();
    await rm(root, { recursive: true, force: true });
  }
});

describe('a live backup root', () => {
  it('shows a new backup without remounting, and an incomplete one only once it completes', async () => {
    const run1 = disk('uefi-gpt-run1');
    for (const volume of run1.volumes) await copyBackup(volume.backupDir, root, run1.client);
    const folder = join(mountpoint.path, run1.client, basename(run1.anchor.backupDir));
    const vhdx = `Image_${run1.anchor.letter}_${run1.anchor.timestamp}.disk.vhdx`;
    await eventually('the new backup shows its virtual disk', async () => (await namesIfPresent(folder))?.includes(vhdx) === true);
    expect((await stat(join(folder, vhdx))).size).toBeGreaterThan(run1.diskSize / 2);

    const [incomplete] = fixtures.incomplete;
    if (incomplete === undefined) throw new Error('no incomplete fixture');
    const copied = await copyBackup(incomplete.backupDir, root, run1.client);
    const incompleteFolder = join(mountpoint.path, run1.client, basename(incomplete.backupDir));
    const incompleteName = `Image_${incomplete.letter}_${incomplete.timestamp}.disk.vhdx`;
    await eventually('the incomplete folder is visible', async () => ((await namesIfPresent(incompleteFolder))?.length ?? 0) > 0);
    expect(await names(incompleteFolder)).not.toContain(incompleteName);
    await expect(stat(join(incompleteFolder, incompleteName))).rejects.toMatchObject({ code: 'ENOENT' });
    await writeFile(join(copied, `Image_${incomplete.letter}_${incomplete.timestamp}.raw.sync`), '');
    await eventually('the completed backup shows its virtual disk', async () => (await names(incompleteFolder)).includes(incompleteName));
  });

  it('a changed source changes the virtual file (new mtime); a deleted one gives ENOENT, and EIO to a handle still open, never a crash', async () => {
    const run2 = disk('uefi-gpt-run2');
    for (const volume of run2.volumes) await copyBackup(volume.backupDir, root, run2.client);
    const anchorCopy = join(root, run2.client, basename(run2.anchor.backupDir));
    const vhdx = join(mountpoint.path, run2.client, basename(run2.anchor.backupDir), `Image_${run2.anchor.letter}_${run2.anchor.timestamp}.disk.vhdx`);
    await eventually('run 2 is served', async () => (await statIfPresent(vhdx)) !== undefined);
    const before = await stat(vhdx);

    const later = new Date(before.mtimeMs + 3_600_000);
    const rawCopy = join(anchorCopy, basename(run2.anchor.rawPath));
    await utimes(`${rawCopy}.mbr`, later, later);
    await eventually('the virtual mtime follows the source', async () => (await stat(vhdx)).mtimeMs === later.getTime());

    const handle = await open(vhdx, 'r');
    try {
      const chunk = Buffer.alloc(128 * 1024);
      expect((await handle.read(chunk, 0, chunk.length, 0)).bytesRead).toBe(chunk.length);
      await dropPageCache(vhdx);
      for (const volume of run2.volumes) await rm(join(root, run2.client, basename(volume.backupDir)), { recursive: true });
      // The mount notices at its next look at the sources (a read of an open handle looks at most
      // once a second); from then on a read the page cache cannot answer (dropped above) reaches
      // the mount, which answers EIO rather than bytes of sources that are gone.
      const refused = await readUntilRefused(handle, { from: 64 * 1024 * 1024, to: before.size, step: 128 * 1024, length: chunk.length });
      expect(refused.code).toBe('EIO');
      await eventually('the deleted backup is gone', async () => (await statIfPresent(vhdx)) === undefined);
    } finally {
      await handle.close();
    }
    expect(mount?.child.exitCode).toBeNull();
    const left = await names(join(mountpoint.path, run2.client));
    expect(left).not.toContain(basename(run2.anchor.backupDir));
  });

  it('a volume that cannot be placed shows no virtual file and is logged once with the reason', async () => {
    const bios = disk('bios-mbr');
    const copied = await copyBackup(bios.anchor.backupDir, root, 'broken-client');
    // .raw.mbr field #4 (docs/urbackup-formats.md §3.3): partition_number, int32 LE at byte 6. The MBR lists 2.
    const mbrPath = join(copied, `${basename(bios.anchor.rawPath)}.mbr`);
    const mbr = await readFile(mbrPath);
    mbr.writeInt32LE(3, 6);
    await writeFile(mbrPath, mbr);
    const folder = join(mountpoint.path, 'broken-client', basename(bios.anchor.backupDir));
    await eventually('the broken backup is visible', async () => ((await namesIfPresent(folder))?.length ?? 0) > 0);
    for (let attempt = 0; attempt < 3; attempt++) {
      expect((await names(folder)).filter((name) => name.includes('.disk.'))).toEqual([]);
      await expect(stat(join(folder, `Image_C_${bios.anchor.timestamp}.disk.vhdx`))).rejects.toMatchObject({ code: 'ENOENT' });
    }
    const lines = (mount?.stderr() ?? '').split('\n').filter((line) => line.includes(copied));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^synthvhd: .*no virtual disk: .*partition 3 is not in the saved MBR table/);
  });
});

describe('where a mount may go', () => {
  it('refuses a mount point inside the backup root (the mount would serve itself)', async () => {
    const inside = join(root, 'empty-dir');
    await mkdir(inside);
    try {
      const result = await synthvhd(['mount', root, inside]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/^synthvhd: .*must be outside the backup root.*\n$/);
    } finally {
      await rm(inside, { recursive: true, force: true });
    }
  });
});

describe('a root of 1 000 backups', () => {
  it('mounts without reading it (the kernel counts no .raw.mbr read) and composes only what is looked at', async () => {
    const many = await mkdtemp(join(tmpdir(), 'synthvhd-many-'));
    const manyMount = await tempMountpoint();
    let child: MountedChild | undefined;
    try {
      // 1 000 backup folders whose .raw.mbr is 16 KiB of garbage: a mount that looked at them
      // would read 16 MB more than a mount of an empty root, in 1 000 more read calls, and log 1 000 lines.
      for (let client = 0; client < 10; client++) {
        await Promise.all(
          Array.from({ length: 100 }, async (_, index) => {
            const minute = String(index % 60).padStart(2, '0');
            const hour = String(Math.floor(index / 60)).padStart(2, '0');
            const timestamp = `2401${String(1 + (index % 28)).padStart(2, '0')}-${hour}${minute}`;
            const folder = join(many, `client${client}`, `${timestamp}_Image_C`);
            await mkdir(folder, { recursive: true });
            await writeFile(join(folder, `Image_C_${timestamp}.raw`), 'not an image');
            await writeFile(join(folder, `Image_C_${timestamp}.raw.mbr`), Buffer.alloc(16 * 1024, 'garbage'));
            await writeFile(join(folder, `Image_C_${timestamp}.raw.sync`), '');
          }),
        );
      }
      const baselineMount = await tempMountpoint();
      const empty = await mkdtemp(join(tmpdir(), 'synthvhd-empty-'));
      let baseline: KernelIo;
      let emptyChild: MountedChild | undefined;
      try {
        emptyChild = await startMount(empty, baselineMount.path);
        baseline = await processIo(childPid(emptyChild));
      } finally {
        await emptyChild?.stop();
        await baselineMount.cleanup();
        await rm(empty, { recursive: true, force: true });
      }
      child = await startMount(many, manyMount.path);
      // The kernel's count once each mount is ready: start-up is the same for both, the 1 000
      // backups add no read.
      const io = await processIo(childPid(child));
      expect(io.rchar - baseline.rchar).toBeLessThan(1024 * 1024);
      expect(io.syscr - baseline.syscr).toBeLessThan(100);
      expect(child.stderr()).toBe('');
      expect(await readdir(join(manyMount.path, 'client3'))).toHaveLength(100);
      const listed = await readdir(join(manyMount.path, 'client3', '240101-0000_Image_C'));
      expect(listed.filter((name) => name.includes('.disk.'))).toEqual([]);
      expect(child.stderr().trim().split('\n')).toHaveLength(1);
      // Still no scan behind our back: the FUSE requests (small reads of /dev/fuse) and the one
      // folder looked at, not 16 MB of .raw.mbr files.
      expect((await processIo(childPid(child))).rchar - baseline.rchar).toBeLessThan(4 * 1024 * 1024);
    } finally {
      await child?.stop();
      await manyMount.cleanup();
      await rm(many, { recursive: true, force: true });
    }
  });
});
