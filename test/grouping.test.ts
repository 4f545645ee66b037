// SPDX-License-Identifier: MIT
/**
 * The grouping rule (README "Which backups form a disk"), on backup trees held in memory (the
 * scan's file system injected) and described by hand (helpers/urbackup-tree.ts): the nearest
 * companion within 24 hours, before-or-at preferred at equal distance, one from another backup
 * run chosen and noted, a companion whose own saved table disagrees refused and reported, and a
 * logical partition of an extended MBR partition reported. Then the same note on a real tree, as
 * `ls`, `doctor` and the mount's log show it.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCatalog, type Catalog, type CatalogDisk } from '../src/catalog/catalog.js';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { MemoryBackupFs } from './helpers/memory-backup-fs.js';
import { synthvhd } from './helpers/run.js';
import { addToMemory, mbrSector, MiB, writeToDisk, type VolumeSpec } from './helpers/urbackup-tree.js';

const ROOT = '/backups';
const SIGNATURE = 0x5eed0001;
const SYSVOL = { type: 0x07, firstLba: 2048, sectors: (100 * MiB) / 512 };
const C = { type: 0x07, firstLba: 2048 + (100 * MiB) / 512, sectors: (200 * MiB) / 512 };
/** An extended partition after C: Windows numbers its logical partitions 3, 4, … after the primaries. */
const EXTENDED = { type: 0x0f, firstLba: C.firstLba + C.sectors, sectors: (60 * MiB) / 512 };
const TABLE = mbrSector([SYSVOL, C], SIGNATURE);

function sysvol(client: string, timestamp: string, lba0 = TABLE): VolumeSpec {
  return { client, timestamp, letter: 'SYSVOL', partitionNumber: 1, lba0, volumeLength: 100 * MiB };
}
function driveC(client: string, timestamp: string, lba0 = TABLE): VolumeSpec {
  return { client, timestamp, letter: 'C', partitionNumber: 2, lba0, volumeLength: 200 * MiB };
}

async function catalogOf(specs: readonly VolumeSpec[]): Promise<Catalog> {
  const fs = new MemoryBackupFs();
  addToMemory(fs, ROOT, specs);
  return buildCatalog(ROOT, { fs });
}

function diskOf(catalog: Catalog, client: string, timestamp: string): CatalogDisk {
  const found = catalog.disks.find((disk) => disk.client === client && disk.anchor.timestamp === timestamp);
  if (found === undefined) throw new Error(`no disk for ${client} ${timestamp}: ${JSON.stringify(catalog.problems)}`);
  return found;
}

/** Partition number → `<letter>@<timestamp>` of the backup placed there. */
function placed(disk: CatalogDisk): Record<number, string> {
  return Object.fromEntries(disk.disk.placed.map(({ partition, volume }) => [partition.number, `${volume.backup.letter}@${volume.backup.timestamp}`]));
}

function problemsAbout(catalog: Catalog, folderName: string): { code: string; reason: string }[] {
  return catalog.problems.filter((problem) => problem.path.includes(`/${folderName}`)).map(({ code, reason }) => ({ code, reason }));
}

describe('the grouping rule, on trees in memory', () => {
  it('takes the companion of the same run and says nothing more', async () => {
    const catalog = await catalogOf([sysvol('pc', '241101-0058'), driveC('pc', '241101-0100')]);
    const disk = diskOf(catalog, 'pc', '241101-0100');
    expect(placed(disk)).toEqual({ 1: 'SYSVOL@241101-0058', 2: 'C@241101-0100' });
    expect(disk.disk.notes).toEqual([]);
    expect(catalog.problems).toEqual([]);
    expect(catalog.disks).toHaveLength(1);
  });

  it('prefers the one taken before at equal distance, and reports the one nobody took', async () => {
    const catalog = await catalogOf([sysvol('pc', '241101-0050'), driveC('pc', '241101-0100'), sysvol('pc', '241101-0110')]);
    expect(placed(diskOf(catalog, 'pc', '241101-0100'))).toEqual({ 1: 'SYSVOL@241101-0050', 2: 'C@241101-0100' });
    expect(problemsAbout(catalog, '241101-0110_Image_SYSVOL')).toEqual([
      { code: 'E_PLACEMENT', reason: `${ROOT}/pc/241101-0110_Image_SYSVOL: no drive-letter backup of the same disk within 24 hours to attach it to` },
    ]);
  });

  it('takes the nearest even when it was taken after, and notes that it comes from another run', async () => {
    const catalog = await catalogOf([sysvol('pc', '241101-0055'), driveC('pc', '241101-0100'), sysvol('pc', '241101-0101')]);
    const disk = diskOf(catalog, 'pc', '241101-0100');
    expect(placed(disk)).toEqual({ 1: 'SYSVOL@241101-0101', 2: 'C@241101-0100' });
    expect(disk.disk.notes).toEqual([
      'partition 1 (SYSVOL) is from 241101-0101_Image_SYSVOL, taken 1 min after this backup: another backup run (urBackup images SYSVOL before the drive letters of a run)',
    ]);
  });

  it('takes a companion exactly 24 hours away, not one a minute further', async () => {
    const catalog = await catalogOf([sysvol('edge', '241031-0100'), driveC('edge', '241101-0100'), sysvol('far', '241031-0059'), driveC('far', '241101-0100')]);
    expect(placed(diskOf(catalog, 'edge', '241101-0100'))).toEqual({ 1: 'SYSVOL@241031-0100', 2: 'C@241101-0100' });
    const far = diskOf(catalog, 'far', '241101-0100');
    expect(placed(far)).toEqual({ 2: 'C@241101-0100' });
    expect(far.disk.table?.partitions.map((partition) => partition.number)).toEqual([1, 2]); // partition 1 reads as zeros
    expect(problemsAbout(catalog, '241031-0059_Image_SYSVOL').map(({ reason }) => reason)).toEqual([
      `${ROOT}/far/241031-0059_Image_SYSVOL: no drive-letter backup of the same disk within 24 hours to attach it to`,
    ]);
  });

  it('takes a companion from another backup run when this run has none, and notes it on that disk only', async () => {
    const catalog = await catalogOf([sysvol('pc', '241101-0058'), driveC('pc', '241101-0100'), driveC('pc', '241101-2300')]);
    const rerun = diskOf(catalog, 'pc', '241101-2300');
    expect(placed(rerun)).toEqual({ 1: 'SYSVOL@241101-0058', 2: 'C@241101-2300' });
    expect(rerun.disk.notes).toEqual([
      'partition 1 (SYSVOL) is from 241101-0058_Image_SYSVOL, taken 22 h 2 min before this backup: another backup run (C was backed up again at 241101-0100); this run has no complete SYSVOL backup',
    ]);
    expect(diskOf(catalog, 'pc', '241101-0100').disk.notes).toEqual([]);
    expect(catalog.problems).toEqual([]);
  });

  it('refuses a companion whose own saved table disagrees about its partition, and reports it once', async () => {
    const moved = mbrSector([{ ...SYSVOL, firstLba: 4096 }, C], SIGNATURE);
    const catalog = await catalogOf([sysvol('pc', '241101-0058', moved), driveC('pc', '241101-0100')]);
    expect(placed(diskOf(catalog, 'pc', '241101-0100'))).toEqual({ 2: 'C@241101-0100' });
    const reported = problemsAbout(catalog, '241101-0058_Image_SYSVOL');
    expect(reported).toHaveLength(1);
    expect(reported[0]?.code).toBe('E_PLACEMENT');
    expect(reported[0]?.reason).toMatch(/Image_SYSVOL_241101-0058\.raw\.mbr: partition 1 differs from the table saved with the drive-letter backup: the disk was repartitioned/);
  });

  it('does not group backups of another disk (another MBR signature) or another device', async () => {
    const otherDisk = mbrSector([SYSVOL, C], SIGNATURE + 1);
    const catalog = await catalogOf([sysvol('pc', '241101-0058', otherDisk), { ...sysvol('pc', '241101-0059'), deviceNumber: 1 }, driveC('pc', '241101-0100')]);
    expect(placed(diskOf(catalog, 'pc', '241101-0100'))).toEqual({ 2: 'C@241101-0100' });
    for (const folder of ['241101-0058_Image_SYSVOL', '241101-0059_Image_SYSVOL']) {
      expect(problemsAbout(catalog, folder).map(({ reason }) => reason)).toEqual([`${ROOT}/pc/${folder}: no drive-letter backup of the same disk within 24 hours to attach it to`]);
    }
  });

  it('reports a logical partition of an extended MBR partition, as an anchor and as a companion', async () => {
    const table = mbrSector([SYSVOL, C, EXTENDED], SIGNATURE);
    const logicalD: VolumeSpec = { client: 'pc', timestamp: '241101-0105', letter: 'D', partitionNumber: 3, lba0: table, volumeLength: 50 * MiB };
    const catalog = await catalogOf([sysvol('pc', '241101-0058', table), driveC('pc', '241101-0100', table), logicalD]);
    expect(catalog.disks.map((disk) => disk.anchor.letter)).toEqual(['C']);
    expect(placed(diskOf(catalog, 'pc', '241101-0100'))).toEqual({ 1: 'SYSVOL@241101-0058', 2: 'C@241101-0100' });
    const reasons = problemsAbout(catalog, '241101-0105_Image_D').map(({ reason }) => reason);
    expect(reasons).toHaveLength(2); // D's own disk, and D left out of C's disk
    for (const reason of reasons) {
      expect(reason).toContain('partition 3 is a logical partition inside an extended partition: urBackup saves only LBA0, not the EBRs, so it cannot be placed');
    }
  });
});

describe('a companion from another run, on a real tree', () => {
  let base: string;
  const note =
    'partition 1 (SYSVOL) is from 241101-0058_Image_SYSVOL, taken 22 h 2 min before this backup: another backup run (C was backed up again at 241101-0100); this run has no complete SYSVOL backup';

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'synthvhd-grouping-'));
    await writeToDisk(join(base, 'backups'), [sysvol('pc', '241101-0058'), driveC('pc', '241101-0100'), driveC('pc', '241101-2300')]);
  });
  afterAll(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it('is shown the same way by ls, doctor and the mount log', async () => {
    const root = join(base, 'backups');
    const ls = await synthvhd(['ls', '--json', root]);
    expect(ls.code).toBe(0);
    const disks = (JSON.parse(ls.stdout) as { disks: { timestamp: string; notes: string[] }[] }).disks;
    expect(disks.map((disk) => [disk.timestamp, disk.notes])).toEqual([
      ['241101-0100', []],
      ['241101-2300', [note]],
    ]);
    expect((await synthvhd(['ls', root])).stdout).toContain(`    note: ${note}\n`);

    const doctor = await synthvhd(['doctor', '--json', root]);
    const backups = (JSON.parse(doctor.stdout) as { backups: { folder: string; state: string; notes?: string[] }[] }).backups;
    expect(backups.map((entry) => [entry.folder.slice(root.length + 1), entry.state, entry.notes ?? []])).toEqual([
      ['pc/241101-0058_Image_SYSVOL', 'served', []],
      ['pc/241101-0100_Image_C', 'served', []],
      ['pc/241101-2300_Image_C', 'served', [note]],
    ]);

    const mountpoint = await tempMountpoint();
    let mount: MountedChild | undefined;
    try {
      mount = await startMount(root, mountpoint.path);
      expect(await readdir(join(mountpoint.path, 'pc', '241101-2300_Image_C'))).toContain('Image_C_241101-2300.disk.vhdx');
      const logged = mount.stderr();
      expect(logged).toContain(`${root}/pc/241101-2300_Image_C: note: ${note}\n`);
    } finally {
      await mount?.stop();
      await mountpoint.cleanup();
    }
  });
});
