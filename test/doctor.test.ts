// SPDX-License-Identifier: MIT
/**
 * `synthvhd doctor`: on a loop-mounted btrfs holding a copy of a fixture client the reflink
 * probe says yes, on tmpfs it says no (and with ROOT as the tmpfs mount itself it does not probe
 * the other file system above it); it lists the RAW backups as served, a damaged `.vhdz` backup as
 * not served and the incomplete fixture backup as incomplete; the backup tree stays byte-identical
 * and no probe file is left anywhere; a failed check exits 1.
 */
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { withLoopFs } from './helpers/loop-fs.js';
import { run, runOk, synthvhd, treeFingerprint } from './helpers/run.js';

const fixtures = inject('fixtures');
const MiB = 1024 * 1024;

interface Check {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
}

interface Report {
  root: string | null;
  checks: Check[];
  fileSystem: { statType: string; mountType?: string; mountPoint?: string } | null;
  reflink: (Check & { probeDir: string; canReflink: boolean | null; errno?: string }) | null;
  backups: { client: string; folder: string; format: string; state: 'served' | 'incomplete' | 'not-served'; detail: string }[];
  failed: string[];
}

async function doctorJson(args: readonly string[]): Promise<{ code: number; report: Report; stderr: string }> {
  const result = await synthvhd(['doctor', ...args, '--json']);
  if (!result.stdout.startsWith('{')) throw new Error(`doctor ${args.join(' ')} --json exited ${result.code} without a report: ${result.stderr}`);
  return { code: result.code, report: JSON.parse(result.stdout) as Report, stderr: result.stderr };
}

function check(report: Report, name: string): Check {
  const found = report.checks.find((entry) => entry.name === name);
  if (found === undefined) throw new Error(`no ${name} check in ${JSON.stringify(report.checks)}`);
  return found;
}

/**
 * A damaged VHDZ image backup (docs/urbackup-image-formats.md §1: side files named after the
 * image): complete (`.vhdz.sync`), with a valid `.vhdz.mbr`, but its image is 15 bytes of text,
 * so it is listed as not served, with the reason.
 */
async function addVhdzBackup(clientDir: string): Promise<string> {
  const folder = join(clientDir, '241120-0100_Image_D');
  await mkdir(folder, { recursive: true });
  const image = join(folder, 'Image_D_241120-0100.vhdz');
  await writeFile(image, 'not a real vhdz');
  await copyFile(`${incompleteVolume().rawPath}.mbr`, `${image}.mbr`);
  await writeFile(`${image}.sync`, '');
  return folder;
}

/** Every file and directory under `dir` whose name says it is a doctor probe. */
async function probeLeftovers(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.filter((name) => basename(name).startsWith('.synthvhd-doctor-'));
}

const incomplete = fixtures.incomplete[0];
if (incomplete === undefined) throw new Error('the fixtures have no incomplete backup');
function incompleteVolume(): NonNullable<typeof incomplete> {
  if (incomplete === undefined) throw new Error('the fixtures have no incomplete backup');
  return incomplete;
}
const clientName = basename(dirname(incomplete.backupDir));

describe('synthvhd doctor', () => {
  it('on btrfs: reflink yes (probed beside ROOT), RAW served, VHDZ not served, incomplete listed, tree untouched', { timeout: 300_000 }, async () => {
    await withLoopFs('btrfs', 1024 * MiB, async (mountDir) => {
      const root = join(mountDir, 'backups');
      await mkdir(root);
      await runOk('cp', ['-a', '--sparse=always', dirname(incomplete.backupDir), root]);
      const vhdz = await addVhdzBackup(join(root, clientName));
      const before = await treeFingerprint(root);

      const { code, report, stderr } = await doctorJson([root]);
      expect(stderr).toBe('');
      expect(code).toBe(0);
      expect(report.failed).toEqual([]);
      expect(report.root).toBe(root);
      expect(report.fileSystem?.statType).toBe('btrfs');
      expect(report.reflink).toMatchObject({ status: 'ok', canReflink: true, probeDir: mountDir });
      expect(report.reflink?.detail).toMatch(/^yes: btrfs shares blocks/);
      expect(report.reflink?.detail).toContain(`probed in ${mountDir}`);
      expect(check(report, 'free-space').detail).toMatch(/free of/);

      const byFolder = new Map(report.backups.map((entry) => [entry.folder, entry]));
      const served = fixtures.disks.filter((disk) => disk.client === clientName).map((disk) => join(root, clientName, basename(disk.anchor.backupDir)));
      expect(served.length).toBeGreaterThan(0);
      for (const folder of served) {
        expect(byFolder.get(folder)).toMatchObject({ format: 'raw', state: 'served' });
        expect(byFolder.get(folder)?.detail).toMatch(/^served as Image_C_\d{6}-\d{4}\.disk\.vhdx/);
      }
      expect(byFolder.get(vhdz)).toMatchObject({ format: 'vhdz', state: 'not-served' });
      expect(byFolder.get(vhdz)?.detail).toMatch(/Image_D_241120-0100\.vhdz: VHD: only 15 bytes/);
      expect(byFolder.get(join(root, clientName, basename(incomplete.backupDir)))).toMatchObject({ format: 'raw', state: 'incomplete' });
      expect(check(report, 'backups').status).toBe('warn');

      // The human-readable form says the same.
      const text = await synthvhd(['doctor', root]);
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(/^ok {4}reflink +yes: btrfs/m);
      expect(text.stdout).toMatch(/not served +\S+_Image_D \(VHDZ\): .*VHD: only 15 bytes/);
      expect(text.stdout).toMatch(/incomplete +\S+_Image_C \(RAW\): no Image_C_\S+\.raw\.sync/);

      expect(await treeFingerprint(root)).toBe(before);
      expect(await probeLeftovers(mountDir)).toEqual([]);
    });
  });

  it('on tmpfs: reflink no; with ROOT as the mount point itself it refuses to probe the file system above', async () => {
    const work = await mkdtemp(join(tmpdir(), 'synthvhd-doctor-tmpfs-'));
    const mountDir = join(work, 'mnt');
    let mounted = false;
    try {
      await mkdir(mountDir);
      await runOk('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mountDir]);
      mounted = true;
      const root = join(mountDir, 'backups');
      await addVhdzBackup(join(root, 'pc1'));
      const before = await treeFingerprint(mountDir);

      const { code, report } = await doctorJson([root]);
      expect(code).toBe(0);
      expect(report.fileSystem?.statType).toBe('tmpfs');
      expect(report.reflink).toMatchObject({ status: 'warn', canReflink: false, probeDir: mountDir });
      expect(report.reflink?.detail).toMatch(/^no: tmpfs cannot share blocks \(E\w+; probed in /);
      expect(report.backups).toEqual([expect.objectContaining({ format: 'vhdz', state: 'not-served' })]);
      expect(check(report, 'backups')).toMatchObject({ status: 'warn' });

      // ROOT = the tmpfs mount: its parent is on another file system, which says nothing about
      // ROOT's, so doctor does not probe there and says why.
      const atMount = await doctorJson([mountDir]);
      expect(atMount.report.reflink).toMatchObject({ status: 'warn', canReflink: null, probeDir: work });
      expect(atMount.report.reflink?.detail).toMatch(/^not probed: .* is on another file system/);

      // A --probe-dir inside the backup tree is refused: doctor never writes there.
      const inside = await doctorJson([root, '--probe-dir', join(root, 'pc1')]);
      expect(inside.code).toBe(1);
      expect(inside.report.failed).toEqual(['reflink']);
      expect(inside.stderr).toBe('synthvhd: doctor: a check failed: reflink\n');

      expect(await treeFingerprint(mountDir)).toBe(before);
      expect(await probeLeftovers(work)).toEqual([]);
    } finally {
      if (mounted) await run('umount', [mountDir]);
      await rm(work, { recursive: true, force: true });
    }
  });

  it('exits 1 and names the failed check when ROOT does not exist; without ROOT checks only the machine', async () => {
    const missing = await doctorJson(['/nonexistent/synthvhd-backups']);
    expect(missing.code).toBe(1);
    expect(check(missing.report, 'backup-root')).toMatchObject({ status: 'fail', detail: '/nonexistent/synthvhd-backups: does not exist' });
    expect(missing.report.failed).toEqual(['backup-root']);
    expect(missing.stderr).toBe('synthvhd: doctor: a check failed: backup-root\n');

    const machine = await doctorJson([]);
    expect(machine.code).toBe(0);
    expect(machine.report.checks.map(({ name }) => name)).toEqual(['fuse-device', 'libfuse', 'fusermount', 'mount-permission', 'allow-other', 'native-addon']);
    for (const entry of machine.report.checks) expect(entry.status, `${entry.name}: ${entry.detail}`).toBe('ok');
  });

  it('on the shared fixture tree (ext4 or whatever /tmp is): every complete RAW backup is served', async () => {
    const { code, report } = await doctorJson([fixtures.backupRoot]);
    expect(code).toBe(0);
    const anchors = fixtures.disks.map((disk) => disk.anchor.backupDir);
    for (const folder of anchors) expect(report.backups.find((entry) => entry.folder === folder)?.state, folder).toBe('served');
    expect(report.backups.filter(({ state }) => state === 'incomplete').map(({ folder }) => folder)).toEqual(fixtures.incomplete.map(({ backupDir }) => backupDir));
    expect(report.backups.filter(({ state }) => state === 'not-served')).toEqual([]);
    expect(report.reflink?.probeDir).toBe(dirname(fixtures.backupRoot));
    expect(await probeLeftovers(dirname(fixtures.backupRoot))).toEqual([]);
  });
});
