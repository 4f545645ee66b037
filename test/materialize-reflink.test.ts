// SPDX-License-Identifier: MIT
/**
 * materialize with reflinks: on loop-mounted btrfs and XFS (reflink=1) the output shares the
 * partition data with the .raw files (a few MiB of new space for 100+ MiB of data), is
 * identical to the independently assembled disk, and survives deleting the source. On ext4 (no
 * reflink) `auto` copies and says why, `always` refuses before writing. SIGKILL mid-write
 * leaves no output.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { usedBytes, withLoopFs, type LoopFsKind } from './helpers/loop-fs.js';
import { CLI, run, runOk, synthvhd } from './helpers/run.js';
import { fixtureDisk } from './helpers/fixture-disk.js';

const fixtures = inject('fixtures');
const MiB = 1024 * 1024;
let work: string;

function diskByName(name: string): FixtureDisk {
  return fixtureDisk(fixtures, name);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-reflink-'));
  for (const name of ['uefi-gpt-run1', 'legacy-mbr']) await assembleExpectedDisk(diskByName(name), join(work, `${name}.img`));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

interface Report {
  clonedBytes: number;
  copiedBytes: number;
  copyReasons: string[];
}

async function materializeJson(source: string, output: string, extra: readonly string[] = []): Promise<Report> {
  const result = await synthvhd(['materialize', source, '-o', output, '--json', ...extra]);
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout) as Report;
}

async function expectIdentical(image: string, format: 'vhdx' | 'vpc', expected: string): Promise<void> {
  const compare = await run('qemu-img', ['compare', '-f', format, '-F', 'raw', image, expected]);
  expect(compare.stdout + compare.stderr).toContain('Images are identical');
}

/** Copies the backup folders of one run of a disk onto `target` (sparse; another file system). */
async function copyClient(disk: FixtureDisk, target: string): Promise<string> {
  const clientDir = join(target, 'backups', disk.client);
  await run('mkdir', ['-p', clientDir]);
  for (const volume of disk.volumes) await runOk('cp', ['-a', '--sparse=always', volume.backupDir, clientDir]);
  return join(clientDir, basename(disk.anchor.backupDir));
}

describe.each<LoopFsKind>(['btrfs', 'xfs'])('on %s', (kind) => {
  it('shares the partition data: seconds, a few MiB of new space, identical bytes, independent of the source', async () => {
    const disk = diskByName('uefi-gpt-run1');
    await withLoopFs(kind, 1024 * MiB, async (mountDir) => {
      const source = await copyClient(disk, mountDir);
      const before = await usedBytes(mountDir);
      const vhdx = join(mountDir, 'out', 'disk.vhdx');
      const vhd = join(mountDir, 'out', 'disk.vhd');
      await run('mkdir', ['-p', dirname(vhdx)]);
      const vhdxReport = await materializeJson(source, vhdx);
      const vhdReport = await materializeJson(source, vhd);
      const newSpace = (await usedBytes(mountDir)) - before;
      // The C: .raw holds 110+ MiB of data; cloned into two images it costs (almost) nothing.
      expect(vhdxReport.clonedBytes).toBeGreaterThanOrEqual(100 * MiB);
      expect(vhdReport.clonedBytes).toBeGreaterThanOrEqual(100 * MiB);
      expect(vhdxReport.copiedBytes).toBeLessThan(MiB);
      expect(newSpace).toBeLessThanOrEqual(8 * MiB);
      await expectIdentical(vhdx, 'vhdx', join(work, 'uefi-gpt-run1.img'));
      await expectIdentical(vhd, 'vpc', join(work, 'uefi-gpt-run1.img'));
      // urBackup deletes old backups: the images must not depend on the .raw files.
      await rm(dirname(source), { recursive: true });
      await expectIdentical(vhdx, 'vhdx', join(work, 'uefi-gpt-run1.img'));
      await expectIdentical(vhd, 'vpc', join(work, 'uefi-gpt-run1.img'));
    });
  });
});

describe('alignment and fallbacks', () => {
  it('copies a volume at sector 63 (not 4 KiB-aligned) and says so', async () => {
    const disk = diskByName('legacy-mbr');
    await withLoopFs('btrfs', 512 * MiB, async (mountDir) => {
      const source = await copyClient(disk, mountDir);
      const output = join(mountDir, 'legacy.vhdx');
      const report = await materializeJson(source, output);
      expect(report.clonedBytes).toBe(0);
      expect(report.copiedBytes).toBeGreaterThan(0);
      expect(report.copyReasons.join('\n')).toMatch(/Image_C_.*\.raw: \d+ bytes not aligned to the 4096-byte file system block/);
      await expectIdentical(output, 'vhdx', join(work, 'legacy-mbr.img'));
    });
  });

  it('on ext4, auto copies and reports why; always fails before writing anything', async () => {
    const disk = diskByName('uefi-gpt-run1');
    await withLoopFs('ext4', 512 * MiB, async (mountDir) => {
      const source = await copyClient(disk, mountDir);
      const auto = join(mountDir, 'auto.vhdx');
      const report = await materializeJson(source, auto);
      expect(report.clonedBytes).toBe(0);
      expect(report.copyReasons.join('\n')).toContain('cannot share blocks (EOPNOTSUPP');
      await expectIdentical(auto, 'vhdx', join(work, 'uefi-gpt-run1.img'));
      const always = join(mountDir, 'always.vhdx');
      const result = await synthvhd(['materialize', source, '-o', always, '--reflink', 'always']);
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toContain(`${always}: --reflink always: cannot share blocks with`);
      expect((await readdir(mountDir)).filter((name) => name.includes('always'))).toEqual([]);
    });
  });

  it('from another file system, always refuses with EXDEV', async () => {
    const disk = diskByName('uefi-gpt-run1');
    await withLoopFs('btrfs', 512 * MiB, async (mountDir) => {
      const output = join(mountDir, 'x.vhdx');
      const result = await synthvhd(['materialize', disk.anchor.backupDir, '-o', output, '--reflink', 'always']);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('different file systems (EXDEV)');
      await expect(stat(output)).rejects.toThrow();
    });
  });

  it('SIGKILL in the middle of a materialize leaves no output file', async () => {
    const disk = diskByName('uefi-gpt-run1');
    const folder = await mkdtemp(join(work, 'kill-'));
    const output = join(folder, 'killed.vhdx');
    const child = spawn(process.execPath, [CLI, 'materialize', disk.anchor.backupDir, '-o', output, '--reflink', 'never'], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve(); }));
    // Kill as soon as the temp file exists: the copy of 110 MiB is then under way.
    for (let attempt = 0; attempt < 2000; attempt++) {
      if ((await readdir(folder)).some((name) => name.endsWith('.partial'))) break;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect((await readdir(folder)).some((name) => name.endsWith('.partial'))).toBe(true);
    child.kill('SIGKILL');
    await exited;
    await expect(stat(output)).rejects.toThrow();
    for (const name of await readdir(folder)) await unlink(join(folder, name));
  });
});
