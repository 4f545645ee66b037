// SPDX-License-Identifier: MIT
/**
 * Backup-run diffs in the mount: the UEFI fixture's run 2 folder serves
 * `Image_C_<ts>.disk_diff.vhdx`, a differencing VHDX whose parent is run 1's served
 * `.disk.vhdx` (relative_path `..\<run 1 folder>\…`). Judged by libvhdi (vhdiinfo on the served
 * files; vhdimount on copies kept side by side, since vhdimount looks for the parent by file
 * name in the child's folder only) and by our own reader following relative_path inside the
 * mount, against the run-2 disk assembled by test/helpers/expected-disk.ts. Run 1, the first
 * backup of its disk, has no diff.
 */
import { copyFile, mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { openDiskImage } from '../src/container/open-image.js';
import { readAt } from '../src/extents/read-at.js';
import { SourceFiles } from '../src/extents/source-files.js';
import { withVhdiMount } from './helpers/blocklist.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { run, runOk, synthvhd } from './helpers/run.js';

const fixtures = inject('fixtures');
let work: string;
let expectedRun2: string;
let mount: MountedChild | undefined;
let mountpoint: { path: string; cleanup: () => Promise<void> };

function diskByName(name: string): FixtureDisk {
  return fixtureDisk(fixtures, name);
}

function servedFolder(disk: FixtureDisk): string {
  return join(mountpoint.path, relative(fixtures.backupRoot, disk.anchor.backupDir));
}

function served(disk: FixtureDisk, suffix: 'disk.vhdx' | 'disk_diff.vhdx'): string {
  return join(servedFolder(disk), `Image_${disk.anchor.letter}_${disk.anchor.timestamp}.${suffix}`);
}

function field(text: string, name: string): string | undefined {
  return new RegExp(`^\\s*${name}\\s*:\\s*(.+?)\\s*$`, 'm').exec(text)?.[1];
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-fuse-diffs-'));
  expectedRun2 = join(work, 'run2.img');
  await assembleExpectedDisk(diskByName('uefi-gpt-run2'), expectedRun2);
  mountpoint = await tempMountpoint();
  mount = await startMount(fixtures.backupRoot, mountpoint.path);
});

afterAll(async () => {
  try {
    await mount?.stop();
  } finally {
    await mountpoint.cleanup();
    await rm(work, { recursive: true, force: true });
  }
});

describe('synthvhd mount: .disk_diff.vhdx', () => {
  it('is served for a backup with an earlier run of its disk, never for the first one', async () => {
    const run1 = diskByName('uefi-gpt-run1');
    const run2 = diskByName('uefi-gpt-run2');
    // Planned in the background once the folder is looked at; listed when ready.
    for (let attempt = 0; !(await readdir(servedFolder(run2))).includes(basename(served(run2, 'disk_diff.vhdx'))); attempt++) {
      if (attempt === 600) throw new Error(`no diff listed after 60 s\n${mount?.stderr() ?? ''}`);
      await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
    }
    expect((await readdir(servedFolder(run1))).filter((name) => name.includes('_diff'))).toEqual([]);
    await expect(stat(served(run1, 'disk_diff.vhdx'))).rejects.toMatchObject({ code: 'ENOENT' });
    // Other clients' disks have a single run each: no diff anywhere else.
    for (const disk of fixtures.disks.filter((candidate) => candidate.client !== run2.client)) {
      await expect(stat(served(disk, 'disk_diff.vhdx'))).rejects.toMatchObject({ code: 'ENOENT' });
    }
    const info = await stat(served(run2, 'disk_diff.vhdx'));
    expect(info.mode & 0o777).toBe(0o444);
    expect(info.mtimeMs).toBeGreaterThanOrEqual((await stat(served(run2, 'disk.vhdx'))).mtimeMs);
    // Only the payload blocks holding changed chunks are in it: smaller than the whole disk's .vhdx.
    expect(info.size).toBeLessThan((await stat(served(run2, 'disk.vhdx'))).size);
    expect((await stat(served(run2, 'disk_diff.vhdx'))).size).toBe(info.size);
  });

  it('names the served run-1 .disk.vhdx as parent: vhdiinfo agrees, relative_path points into the mount', async () => {
    const run1 = diskByName('uefi-gpt-run1');
    const run2 = diskByName('uefi-gpt-run2');
    const parentInfo = (await runOk('vhdiinfo', [served(run1, 'disk.vhdx')])).stdout;
    const childInfo = (await runOk('vhdiinfo', [served(run2, 'disk_diff.vhdx')])).stdout;
    expect(field(childInfo, 'Disk type')).toBe('Differential');
    const parentId = field(parentInfo, 'Identifier');
    expect(parentId).toMatch(/^[0-9a-f-]{36}$/);
    expect(field(childInfo, 'Parent identifier')).toBe(parentId);

    const inspected = await synthvhd(['inspect', '--json', served(run2, 'disk_diff.vhdx')]);
    expect(inspected.code).toBe(0);
    const report = JSON.parse(inspected.stdout) as { parent?: { paths?: Record<string, string> } };
    expect(report.parent?.paths?.relative_path).toBe(`..\\${basename(run1.anchor.backupDir)}\\${basename(served(run1, 'disk.vhdx'))}`);
    // MS-VHDX 2.6.2.6.3: absolute_win32_path is a Win32 path; the mount's default names the mount
    // point as `\\<host>\<folder name>` (the shipped share), libvhdi reads it as the parent's name.
    const parentInMount = relative(mountpoint.path, served(run1, 'disk.vhdx')).split('/').join('\\');
    const expected = `\\\\?\\UNC\\${hostname()}\\${basename(mountpoint.path)}\\${parentInMount}`;
    expect(report.parent?.paths?.absolute_win32_path).toBe(expected);
    expect(field(childInfo, 'Parent filename')).toBe(expected);
    expect(Object.keys(report.parent?.paths ?? {}).sort()).toEqual(['absolute_win32_path', 'relative_path']);
  });

  it('reads as the run-2 disk: vhdimount over copies kept side by side, and our reader inside the mount', async () => {
    const run1 = diskByName('uefi-gpt-run1');
    const run2 = diskByName('uefi-gpt-run2');
    const side = join(work, 'side-by-side');
    await runOk('mkdir', ['-p', side]);
    const child = join(side, basename(served(run2, 'disk_diff.vhdx')));
    await copyFile(served(run2, 'disk_diff.vhdx'), child);
    await copyFile(served(run1, 'disk.vhdx'), join(side, basename(served(run1, 'disk.vhdx'))));
    await withVhdiMount(child, async (rawDisk) => {
      const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', rawDisk, expectedRun2]);
      expect(compare.stdout + compare.stderr).toContain('Images are identical');
    });

    // Our reader follows relative_path from the served diff to the served parent in the mount.
    const opened = await openDiskImage(served(run2, 'disk_diff.vhdx'));
    expect(opened.type).toBe('differencing');
    expect(opened.parent?.path).toBe(served(run1, 'disk.vhdx'));
    expect(opened.layout.size).toBe(run2.diskSize);
    const sources = new SourceFiles();
    const expected = await open(expectedRun2, 'r');
    try {
      const ours = Buffer.alloc(4 * 1024 * 1024);
      const theirs = Buffer.alloc(ours.length);
      for (let position = 0; position < opened.layout.size; position += ours.length) {
        const count = await readAt(opened.layout, sources, position, ours);
        await expected.read(theirs, 0, count, position);
        if (!ours.subarray(0, count).equals(theirs.subarray(0, count))) throw new Error(`our reader differs from the run-2 disk at ${position}`);
      }
    } finally {
      await expected.close();
      await sources.close();
    }
    expect(mount?.stderr()).toBe('');
  });
});
