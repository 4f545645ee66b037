// SPDX-License-Identifier: MIT
/**
 * materialize with reflinks: on loop-mounted btrfs and XFS (reflink=1) the output shares the
 * partition data with the .raw files (a few MiB of new space for 100+ MiB of data), is
 * identical to the independently assembled disk, and survives deleting the source. On ext4 (no
 * reflink) `auto` copies and says why, `always` refuses before writing. SIGKILL mid-write (held
 * at a known point by a test hook) leaves no output.
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
    // The SYNTHVHD_TEST_HOLD_WRITE test hook (src/util/test-hold.ts) stops the writer at a known
    // point: every byte in its temporary file, not yet synced nor renamed. It says so by creating
    // `${gate}.held`; `gate` itself is never created, so it waits there until killed.
    const gate = join(work, `${basename(folder)}.gate`);
    const child = spawn(process.execPath, [CLI, 'materialize', disk.anchor.backupDir, '-o', output, '--reflink', 'never'], {
      stdio: 'ignore',
      env: { ...process.env, SYNTHVHD_TEST_HOLD_WRITE: gate },
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve(); }));
    try {
      for (let attempt = 0; ; attempt++) {
        if (await stat(`${gate}.held`).then(() => true, () => false)) break;
        if (attempt === 1200 || child.exitCode !== null) throw new Error(`materialize never reached the hold (exit ${child.exitCode})`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const partial = (await readdir(folder)).filter((name) => name.endsWith('.partial'));
      expect(partial).toHaveLength(1);
      // Its 110+ MiB of C: data are written (allocated), the output name is not taken yet.
      expect((await stat(join(folder, partial[0] ?? ''))).blocks * 512).toBeGreaterThan(100 * MiB);
      await expect(stat(output)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    expect(child.signalCode).toBe('SIGKILL');
    await expect(stat(output)).rejects.toMatchObject({ code: 'ENOENT' });
    // SIGKILL leaves no time to clean up: only the hidden temporary file can remain.
    expect((await readdir(folder)).filter((name) => !name.endsWith('.partial'))).toEqual([]);
    for (const name of await readdir(folder)) await unlink(join(folder, name));
  });
});
