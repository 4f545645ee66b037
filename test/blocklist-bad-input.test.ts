// SPDX-License-Identifier: MIT
/**
 * Blocklist commands refuse bad input with one line on stderr that names the file, a non-zero
 * exit code, and nothing written: a list of the wrong length, a stale list, disks of different
 * sizes, a truncated image, a parent whose identity does not match, a missing parent, a cache
 * directory inside the backup tree.
 */
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { synthvhd } from './helpers/run.js';
import { fixtureDisk } from './helpers/fixture-disk.js';

const fixtures = inject('fixtures');
let work: string;
let run1: string;
let run2: string;
let diffDir: string;

function diskByName(name: string): FixtureDisk {
  return fixtureDisk(fixtures, name);
}

async function ok(args: readonly string[]): Promise<void> {
  const result = await synthvhd(args);
  if (result.code !== 0) throw new Error(`synthvhd ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
}

async function missing(path: string): Promise<boolean> {
  return stat(path).then(
    () => false,
    () => true,
  );
}

/** Runs synthvhd, expects a failure with one stderr line naming `path`, and that `absent` files do not exist. */
async function expectRefused(args: readonly string[], path: string, problem: RegExp, absent: readonly string[], code = 1): Promise<void> {
  const result = await synthvhd(args);
  expect(result.code, result.stderr).toBe(code);
  const lines = result.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain(path);
  expect(lines[0]).toMatch(problem);
  for (const file of absent) expect(await missing(file), `${file} must not exist`).toBe(true);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-blocklist-bad-'));
  run1 = join(work, 'run1.vhdx');
  run2 = join(work, 'run2.vhdx');
  await ok(['materialize', diskByName('uefi-gpt-run1').anchor.backupDir, '-o', run1]);
  await ok(['materialize', diskByName('uefi-gpt-run2').anchor.backupDir, '-o', run2]);
  await ok(['blocklist', 'create', run1, run2]);
  // A diff made beside its parent in a folder that is then renamed away: its locator's paths
  // (relative and absolute) lead nowhere unless a parent is put beside the moved diff.
  const made = join(work, 'made');
  await mkdir(made);
  await copyFile(run1, join(made, 'disk0.vhdx'));
  await copyFile(`${run1}.blocklist.bin`, join(made, 'disk0.vhdx.blocklist.bin'));
  await ok(['blocklist', 'copy', run2, join(made, 'disk0.vhdx')]);
  diffDir = join(work, 'made-gone');
  await rename(made, diffDir);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('blocklist check and copy refuse bad lists', () => {
  it('a list of the wrong length', async () => {
    const dir = join(work, 'short');
    await mkdir(dir);
    const image = join(dir, 'new.vhdx');
    await copyFile(run2, image);
    await ok(['blocklist', 'create', image]);
    const list = `${image}.blocklist.bin`;
    await writeFile(list, (await readFile(list)).subarray(16));
    await expectRefused(['blocklist', 'check', image, run1], list, /is 2032 bytes, but .* whose list has 2048 bytes/, []);
    await expectRefused(['blocklist', 'copy', '--diffdir', dir, image, run1], list, /wrong or damaged list/, [join(dir, 'run1_diff.vhdx')]);
  });

  it('a list older than its image', async () => {
    const dir = join(work, 'stale');
    await mkdir(dir);
    const image = join(dir, 'new.vhdx');
    await copyFile(run2, image);
    await ok(['blocklist', 'create', image]);
    const later = new Date(Date.now() + 60_000);
    await utimes(image, later, later);
    const list = `${image}.blocklist.bin`;
    await expectRefused(['blocklist', 'check', image, run1], list, /is older than .*new\.vhdx/, []);
    await expectRefused(['blocklist', 'copy', '--diffdir', dir, image, run1], list, /is older than/, [join(dir, 'run1_diff.vhdx')]);
  });

  it('a missing list, and disks of different sizes', async () => {
    const dir = join(work, 'sizes');
    await mkdir(dir);
    const bios = join(dir, 'bios.vhdx');
    await ok(['materialize', diskByName('bios-mbr').anchor.backupDir, '-o', bios]);
    const unlisted = join(dir, 'unlisted.vhdx');
    await copyFile(run2, unlisted);
    await expectRefused(['blocklist', 'check', unlisted, run1], `${unlisted}.blocklist.bin`, /no blocklist: run `synthvhd blocklist create/, []);
    await ok(['blocklist', 'create', bios]);
    await expectRefused(['blocklist', 'check', bios, run1], bios, /disk is \d+ bytes but .*run1\.vhdx is \d+ bytes: the disks differ in size/, []);
    await expectRefused(['blocklist', 'copy', '--diffdir', dir, bios, run1], bios, /differ in size/, [join(dir, 'run1_diff.vhdx')]);
  });

  it('a target that is not a .vhdx', async () => {
    const dir = join(work, 'vhd-target');
    await mkdir(dir);
    const vhd = join(dir, 'old.vhd');
    await ok(['materialize', diskByName('uefi-gpt-run1').anchor.backupDir, '-o', vhd]);
    await ok(['blocklist', 'create', vhd]);
    await expectRefused(['blocklist', 'copy', run2, vhd], vhd, /the target must be a \.vhdx/, [join(dir, 'old_diff.vhd')], 2);
  });
});

describe('blocklist create refuses broken images', () => {
  it('a truncated .vhdx and a truncated .vhd', async () => {
    const dir = join(work, 'truncated');
    await mkdir(dir);
    const vhdx = join(dir, 'cut.vhdx');
    await copyFile(run1, vhdx);
    await truncate(vhdx, (await stat(vhdx)).size - 40 * 1024 * 1024);
    await expectRefused(['blocklist', 'create', vhdx], vhdx, /ends beyond the file/, [`${vhdx}.blocklist.bin`]);
    const vhd = join(dir, 'cut.vhd');
    await ok(['materialize', diskByName('bios-mbr').anchor.backupDir, '-o', vhd]);
    await truncate(vhd, (await stat(vhd)).size - 4096);
    await expectRefused(['blocklist', 'create', vhd], vhd, /not a VHD or VHDX file.*no "conectix" footer at the end/, [`${vhd}.blocklist.bin`]);
  });

  it('a differencing disk whose parent has another identity', async () => {
    const dir = join(work, 'wrong-parent');
    await mkdir(dir);
    const diff = join(dir, 'disk0_diff.vhdx');
    await copyFile(join(diffDir, 'disk0_diff.vhdx'), diff);
    await copyFile(run2, join(dir, 'disk0.vhdx')); // right name, wrong disk
    await expectRefused(['blocklist', 'create', diff], diff, /wrong parent: .*disk0\.vhdx \(found by relative_path\) has DataWriteGuid \{[0-9a-f-]+\}, the child links to \{[0-9a-f-]+\}/, [`${diff}.blocklist.bin`]);
    await expectRefused(['merge', diff], diff, /wrong parent/, [join(dir, 'disk0.merged.vhdx')]);
  });

  it('a differencing disk whose parent is missing', async () => {
    const dir = join(work, 'no-parent');
    await mkdir(dir);
    const diff = join(dir, 'disk0_diff.vhdx');
    await copyFile(join(diffDir, 'disk0_diff.vhdx'), diff);
    await expectRefused(['blocklist', 'create', diff], diff, /parent not found: tried .*disk0\.vhdx \(relative_path\)/, [`${diff}.blocklist.bin`]);
    await expectRefused(['merge', diff, '-o', join(dir, 'out.vhdx')], diff, /parent not found/, [join(dir, 'out.vhdx')]);
    // Put back beside it, the right parent makes the same diff readable.
    await copyFile(join(diffDir, 'disk0.vhdx'), join(dir, 'disk0.vhdx'));
    await ok(['blocklist', 'create', diff]);
    expect(await readFile(`${diff}.blocklist.bin`)).toEqual(await readFile(`${run2}.blocklist.bin`));
  });
});

describe('lists of urBackup backups stay out of the backup tree', () => {
  it('a cache directory inside the backup root is refused, and a backup without --cache-dir', async () => {
    const disk = diskByName('bios-mbr');
    const inside = join(dirname(dirname(disk.anchor.backupDir)), 'blocklist-cache');
    await expectRefused(['blocklist', 'create', '--cache-dir', inside, disk.anchor.backupDir], inside, /is inside the backup root/, [inside], 2);
    await expectRefused(['blocklist', 'create', disk.anchor.backupDir], disk.anchor.backupDir, /give --cache-dir/, [], 2);
  });
});
