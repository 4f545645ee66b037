// SPDX-License-Identifier: MIT
/**
 * Golden maps: every fixture disk's composed layout, described extent by extent, against a map
 * written by hand from the fixture's geometry (fixtures/build-fixtures.ts: sgdisk/sfdisk/fdisk
 * partition positions, NTFS one sector short of its partition, the MBR size rounded up to
 * 2 MiB; docs/architecture.md §4–§5). Holes of a `.raw` depend on what mkntfs and the files
 * put where, so a volume's holes (`zeros: hole in C: .raw`) are folded into its range; every
 * `file` range must read its own `.raw` at 512 KiB + its distance from the partition start.
 * Then the VHD and VHDX around one disk, the structure map a .vhdx's own tables give, and
 * `synthvhd inspect --map` on a backup folder, on a materialized file and on a served file.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { composeDiskFor, resolveSource } from '../src/catalog/catalog.js';
import { containerLayout } from '../src/catalog/virtual-files.js';
import { parseContainer } from '../src/container/inspect.js';
import { containerStructureMap } from '../src/container/structure-map.js';
import type { Layout } from '../src/extents/extent.js';
import { type MapRow, mapRowAt, mapRows } from '../src/extents/extent-map.js';
import { readAt } from '../src/extents/read-at.js';
import { SourceFiles } from '../src/extents/source-files.js';
import { mountArguments } from '../src/fuse/served-path.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { startMount, tempMountpoint } from './helpers/fuse-mount.js';
import { runOk, synthvhd } from './helpers/run.js';

const fixtures = inject('fixtures');
const KiB = 1024;
const MiB = 1024 * KiB;
const TiB = 1024 * 1024 * MiB;
/** docs/urbackup-formats.md §2.2: a volume starts 512 KiB into its `.raw`. */
const RAW_VOLUME_OFFSET = 512 * KiB;

type Region = readonly [start: number, end: number, what: string];

/** Rows with each source's holes folded into it, adjacent rows of one description merged. */
function regions(rows: readonly MapRow[]): Region[] {
  const out: [number, number, string][] = [];
  for (const row of rows) {
    const what = row.what.replace(/^zeros: hole in /, '');
    const last = out.at(-1);
    if (last !== undefined && last[2] === what && last[1] === row.start) last[1] = row.end;
    else out.push([row.start, row.end, what]);
  }
  return out;
}

async function composed(disk: FixtureDisk): Promise<Layout> {
  const { anchor, siblings } = await resolveSource(disk.anchor.backupDir);
  return (await composeDiskFor(anchor, siblings)).disk.image.layout;
}

/** Every `file` row of `label` reads its fixture `.raw` at 512 KiB + (position − partition start). */
function expectSources(rows: readonly MapRow[], disk: FixtureDisk, shift = 0): void {
  for (const volume of disk.volumes) {
    const label = volume.letter.length === 1 ? `${volume.letter}: .raw` : `${volume.letter} .raw`;
    const fileRows = rows.filter((row) => row.kind === 'file' && row.what === label);
    expect(fileRows.length, label).toBeGreaterThan(0);
    for (const row of fileRows) {
      expect(row.source?.path).toBe(volume.rawPath);
      expect(row.source?.offset).toBe(RAW_VOLUME_OFFSET + (row.start - shift - volume.partitionOffset));
    }
  }
}

// By hand, from each fixture's partitioning (fixtures/build-fixtures.ts).
const UEFI_GPT: Region[] = [
  [0, 512, 'protective MBR'],
  [512, 1024, 'primary GPT header'],
  [1024, 17 * KiB, 'primary GPT entries'], // 128 entries of 128 bytes at LBA 2
  [17 * KiB, 1 * MiB, 'zeros: outside partitions'],
  [1 * MiB, 35 * MiB, 'ESP .raw'], // -n 1:2048:+34M, FAT: imaged whole
  [35 * MiB, 51 * MiB, 'zeros: partition 2, MSR (not backed up)'], // -n 2:0:+16M
  [51 * MiB, 243 * MiB - 512, 'C: .raw'], // -n 3:0:+192M, NTFS one sector short
  [243 * MiB - 512, 243 * MiB, 'C: NTFS backup boot sector'],
  [243 * MiB, 256 * MiB - 33 * 512, 'zeros: partition 4, Windows recovery (not backed up)'], // -n 4:0:0
  [256 * MiB - 33 * 512, 256 * MiB - 512, 'backup GPT entries'],
  [256 * MiB - 512, 256 * MiB, 'backup GPT header'],
];

const GOLDEN: Readonly<Record<string, Region[]>> = {
  'uefi-gpt-run1': UEFI_GPT,
  'uefi-gpt-run2': UEFI_GPT,
  'bios-mbr': [
    [0, 512, 'MBR'],
    [512, 1 * MiB, 'zeros: outside partitions'],
    [1 * MiB, 17 * MiB - 512, 'SYSVOL .raw'], // start=2048, 16 MiB
    [17 * MiB - 512, 17 * MiB, 'SYSVOL NTFS backup boot sector'],
    [17 * MiB, 81 * MiB - 512, 'C: .raw'], // 64 MiB
    [81 * MiB - 512, 81 * MiB, 'C: NTFS backup boot sector'],
    [81 * MiB, 82 * MiB, 'zeros: outside partitions'], // 81 MiB rounded up to 2 MiB
  ],
  'legacy-mbr': [
    [0, 512, 'MBR'],
    [512, 63 * 512, 'boot loader sectors after the MBR'], // extra data: sectors 1..63, C: wins its last one
    [63 * 512, (63 + 81855 - 1) * 512, 'C: .raw'], // start=63, size=81855
    [(63 + 81855 - 1) * 512, (63 + 81855) * 512, 'C: NTFS backup boot sector'],
    [(63 + 81855) * 512, 40 * MiB, 'zeros: outside partitions'],
  ],
  'gpt-4kn': [
    [0, 512, 'protective MBR'],
    [512, 4096, 'zeros: outside partitions'],
    [4096, 8192, 'primary GPT header'], // one 4096-byte sector
    [8192, 24 * KiB, 'primary GPT entries'], // 16 KiB of entries at LBA 2
    [24 * KiB, 1 * MiB, 'zeros: outside partitions'],
    [1 * MiB, 261 * MiB, 'ESP .raw'], // 260 MiB
    [261 * MiB, 384 * MiB - 6 * 4096, 'C: .raw'], // to the last usable LBA, NTFS one sector short
    [384 * MiB - 6 * 4096, 384 * MiB - 5 * 4096, 'C: NTFS backup boot sector'],
    [384 * MiB - 5 * 4096, 384 * MiB - 4096, 'backup GPT entries'],
    [384 * MiB - 4096, 384 * MiB, 'backup GPT header'],
  ],
  'huge-gpt': [
    [0, 512, 'protective MBR'],
    [512, 1024, 'primary GPT header'],
    [1024, 17 * KiB, 'primary GPT entries'],
    [17 * KiB, 1 * MiB, 'zeros: outside partitions'],
    [1 * MiB, 3 * TiB - 34 * 512, 'D: .raw'], // -n 1:2048:0
    [3 * TiB - 34 * 512, 3 * TiB - 33 * 512, 'D: NTFS backup boot sector'],
    [3 * TiB - 33 * 512, 3 * TiB - 512, 'backup GPT entries'],
    [3 * TiB - 512, 3 * TiB, 'backup GPT header'],
  ],
};

describe('golden disk maps', () => {
  it('has a golden map for every fixture disk', () => {
    expect(fixtures.disks.map((disk) => disk.name).sort()).toEqual(Object.keys(GOLDEN).sort());
  });

  for (const [name, golden] of Object.entries(GOLDEN)) {
    it(`${name}: every extent is described as its geometry says`, async () => {
      const disk = fixtureDisk(fixtures, name);
      const rows = mapRows(await composed(disk));
      expect(regions(rows)).toEqual(golden);
      expectSources(rows, disk);
    });
  }
});

describe('container maps of uefi-gpt-run1', () => {
  const disk = (): FixtureDisk => fixtureDisk(fixtures, 'uefi-gpt-run1');

  it('the .vhd is the disk, then its footer', async () => {
    const { anchor, siblings } = await resolveSource(disk().anchor.backupDir);
    const image = (await composeDiskFor(anchor, siblings)).disk.image;
    const rows = mapRows(containerLayout(image, 'vhd'));
    expect(regions(rows)).toEqual([...UEFI_GPT, [256 * MiB, 256 * MiB + 512, 'VHD footer']]);
    expectSources(rows, disk());
  });

  it('the .vhdx: its tables, then 32 MiB payload blocks in disk order holding the disk map', async () => {
    const { anchor, siblings } = await resolveSource(disk().anchor.backupDir);
    const image = (await composeDiskFor(anchor, siblings)).disk.image;
    const layout = containerLayout(image, 'vhdx');
    const rows = mapRows(layout);
    const all = regions(rows);
    const reserved = 'zeros: VHDX header section (reserved)';
    // docs/containers.md §3.1; 256 MiB / 32 MiB = 8 BAT entries; 5 metadata items, 40 bytes of data.
    expect(all.filter(([start]) => start < 4 * MiB)).toEqual([
      [0, 520, 'VHDX file identifier'],
      [520, 64 * KiB, reserved],
      [64 * KiB, 68 * KiB, 'VHDX header 1'],
      [68 * KiB, 128 * KiB, reserved],
      [128 * KiB, 132 * KiB, 'VHDX header 2'],
      [132 * KiB, 192 * KiB, reserved],
      [192 * KiB, 192 * KiB + 80, 'VHDX region table 1'],
      [192 * KiB + 80, 256 * KiB, reserved],
      [256 * KiB, 256 * KiB + 80, 'VHDX region table 2'],
      [256 * KiB + 80, 1 * MiB, reserved],
      [1 * MiB, 2 * MiB, 'zeros: VHDX log (empty)'],
      [2 * MiB, 2 * MiB + 64, 'VHDX BAT'],
      [2 * MiB + 64, 3 * MiB, 'zeros: rest of the VHDX BAT region'],
      [3 * MiB, 3 * MiB + 192, 'VHDX metadata table'],
      [3 * MiB + 192, 3 * MiB + 64 * KiB, 'zeros: rest of the VHDX metadata table'],
      [3 * MiB + 64 * KiB, 3 * MiB + 64 * KiB + 40, 'VHDX metadata items'],
      [3 * MiB + 64 * KiB + 40, 4 * MiB, 'zeros: rest of the VHDX metadata region'],
    ]);
    // Blocks 0 and 1 (disk [0, 64 MiB)) hold table bytes and volume starts: both present, at 4 and 36 MiB.
    const shift = 4 * MiB;
    const head = all.filter(([start]) => start >= 4 * MiB && start < 68 * MiB);
    expect(head.slice(0, 6)).toEqual([
      [shift, shift + 512, 'protective MBR'],
      [shift + 512, shift + 1024, 'primary GPT header'],
      [shift + 1024, shift + 17 * KiB, 'primary GPT entries'],
      [shift + 17 * KiB, shift + 1 * MiB, 'zeros: outside partitions'],
      [shift + 1 * MiB, shift + 35 * MiB, 'ESP .raw'],
      [shift + 35 * MiB, shift + 51 * MiB, 'zeros: partition 2, MSR (not backed up)'],
    ]);
    expect(head[6]?.[0]).toBe(shift + 51 * MiB);
    expect(head[6]?.[2]).toBe('C: .raw');
    expectSources(rows.filter((row) => row.start >= shift && row.start < shift + 64 * MiB), disk(), shift);
    // Block 7 (disk [224, 256) MiB) holds the backup GPT, so it is present and last.
    const end = layout.size;
    expect((end - 4 * MiB) % (32 * MiB)).toBe(0);
    const last = end - 32 * MiB;
    expect(all.slice(-4)).toEqual([
      [last + 19 * MiB - 512, last + 19 * MiB, 'C: NTFS backup boot sector'],
      [last + 19 * MiB, last + 32 * MiB - 33 * 512, 'zeros: partition 4, Windows recovery (not backed up)'],
      [last + 32 * MiB - 33 * 512, last + 32 * MiB - 512, 'backup GPT entries'],
      [last + 32 * MiB - 512, last + 32 * MiB, 'backup GPT header'],
    ]);
  });

  it("the .vhdx's own tables describe the same file: headers, regions, items, payload blocks", async () => {
    const { anchor, siblings } = await resolveSource(disk().anchor.backupDir);
    const layout = containerLayout((await composeDiskFor(anchor, siblings)).disk.image, 'vhdx');
    const sources = new SourceFiles();
    try {
      const read = async (position: number, length: number): Promise<Uint8Array> => {
        const buffer = new Uint8Array(length);
        return buffer.subarray(0, await readAt(layout, sources, position, buffer));
      };
      const structure = containerStructureMap(await parseContainer(read, layout.size), '/served.vhdx');
      expect(structure.size).toBe(layout.size);
      const rows = regions(mapRows(structure));
      const unused = 'not referenced by the VHDX structures';
      expect(rows.slice(0, 17)).toEqual([
        [0, 520, 'VHDX file identifier'],
        [520, 64 * KiB, unused],
        [64 * KiB, 68 * KiB, 'VHDX header 1'],
        [68 * KiB, 128 * KiB, unused],
        [128 * KiB, 132 * KiB, 'VHDX header 2, current'], // SequenceNumber 2
        [132 * KiB, 192 * KiB, unused],
        [192 * KiB, 256 * KiB, 'VHDX region table 1'],
        [256 * KiB, 320 * KiB, 'VHDX region table 2'],
        [320 * KiB, 1 * MiB, unused],
        [1 * MiB, 2 * MiB, 'VHDX log (empty: LogGuid is zero)'],
        [2 * MiB, 3 * MiB, 'VHDX BAT region (8 entries)'],
        [3 * MiB, 3 * MiB + 64 * KiB, 'VHDX metadata table'],
        [3 * MiB + 64 * KiB, 3 * MiB + 64 * KiB + 8, 'VHDX metadata item: File Parameters'],
        [3 * MiB + 64 * KiB + 8, 3 * MiB + 64 * KiB + 16, 'VHDX metadata item: Virtual Disk Size'],
        [3 * MiB + 64 * KiB + 16, 3 * MiB + 64 * KiB + 32, 'VHDX metadata item: Page 83 Data'],
        [3 * MiB + 64 * KiB + 32, 3 * MiB + 64 * KiB + 36, 'VHDX metadata item: Logical Sector Size'],
        [3 * MiB + 64 * KiB + 36, 3 * MiB + 64 * KiB + 40, 'VHDX metadata item: Physical Sector Size'],
      ]);
      expect(rows[17]).toEqual([3 * MiB + 64 * KiB + 40, 4 * MiB, unused]);
      expect(rows[18]).toEqual([4 * MiB, 36 * MiB, 'VHDX payload block 0 (disk 0..33554432), fully present']);
      expect(rows[19]).toEqual([36 * MiB, 68 * MiB, 'VHDX payload block 1 (disk 33554432..67108864), fully present']);
      expect(rows.at(-1)).toEqual([layout.size - 32 * MiB, layout.size, 'VHDX payload block 7 (disk 234881024..268435456), fully present']);
      // Every structure row is a `file` range of the file itself, at its own offset.
      for (const row of mapRows(structure)) expect(row.source).toEqual({ path: '/served.vhdx', offset: row.start });
    } finally {
      await sources.close();
    }
  });
});

describe('map helpers', () => {
  it('finds the row holding an offset, and none outside the layout', async () => {
    const layout = await composed(fixtureDisk(fixtures, 'bios-mbr'));
    expect(mapRowAt(layout, 511)).toEqual({ start: 0, end: 512, kind: 'bytes', what: 'MBR' });
    expect(mapRowAt(layout, 81 * MiB - 1)).toEqual({ start: 81 * MiB - 512, end: 81 * MiB, kind: 'bytes', what: 'C: NTFS backup boot sector' });
    expect(mapRowAt(layout, 82 * MiB)).toBeUndefined();
    expect(mapRowAt(layout, -1)).toBeUndefined();
  });

  it("reads ROOT and MOUNTPOINT from a mount process's arguments, options and their values skipped", () => {
    expect(mountArguments(['node', '/opt/synthvhd/dist/src/cli/main.js', 'mount', '/srv/urbackup', '/srv/vdisks'])).toEqual({ root: '/srv/urbackup', mountPoint: '/srv/vdisks' });
    expect(mountArguments(['node', 'main.js', '--quiet', 'mount', '--allow-other', '--blocklist-cache', '/var/cache/lists', 'backups', 'mnt', '--windows-path', '\\\\srv\\vdisks'])).toEqual({ root: 'backups', mountPoint: 'mnt' });
    expect(mountArguments(['mount', '/dev/sda1', '/mnt'])).toBeUndefined(); // the system's mount(8)
    expect(mountArguments(['node', 'main.js', 'ls', '/srv/urbackup'])).toBeUndefined();
  });
});

describe('synthvhd inspect --map', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'synthvhd-map-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  interface OffsetReport {
    offset: number;
    maps: { name: string; size: number; extent: (MapRow & { kind: string }) | null }[];
  }

  it('a backup folder: the disk and both containers at one offset', async () => {
    const disk = fixtureDisk(fixtures, 'uefi-gpt-run1');
    // Disk byte 40 MiB is in the MSR; so is .vhdx byte 40 MiB: block 1 starts at file 36 MiB = disk 32 MiB.
    const result = await synthvhd(['inspect', '--map', disk.anchor.backupDir, '--offset', String(40 * MiB), '--json']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout) as OffsetReport;
    expect(report.offset).toBe(40 * MiB);
    expect(report.maps.map((map) => [map.name, map.size])).toEqual([['disk', 256 * MiB], ['vhdx', expect.any(Number)], ['vhd', 256 * MiB + 512]]);
    const [diskRow, vhdxRow, vhdRow] = report.maps.map((map) => map.extent);
    const msr = 'zeros: partition 2, MSR (not backed up)';
    expect(diskRow).toEqual({ start: 35 * MiB, end: 51 * MiB, kind: 'zero', what: msr });
    expect(vhdRow).toEqual({ start: 35 * MiB, end: 51 * MiB, kind: 'zero', what: msr });
    expect(vhdxRow).toEqual({ start: 39 * MiB, end: 55 * MiB, kind: 'zero', what: msr });

    const text = await synthvhd(['inspect', '--map', disk.anchor.backupDir]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^disk: the whole disk composed from the C: backup 241101-0100_Image_C \(268435456 bytes, \d+ extents\)$/m);
    expect(text.stdout).toMatch(/^\s+36700160\s+53477376\s+zero\s+zeros: partition 2, MSR \(not backed up\)$/m);
    expect(text.stdout).toMatch(/^vhd: the \.vhd served for the C: backup 241101-0100_Image_C \(268435968 bytes/m);
  });

  it("a materialized .vhdx: its own structure, as text and for one offset", async () => {
    const disk = fixtureDisk(fixtures, 'bios-mbr');
    const output = join(work, 'bios.vhdx');
    expect((await synthvhd(['materialize', disk.anchor.backupDir, '-o', output])).code).toBe(0);
    const text = await synthvhd(['inspect', '--map', output]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^file: what bios\.vhdx says about its own bytes/m);
    expect(text.stdout).toMatch(/^\s+131072\s+135168\s+file\s+VHDX header 2, current$/m);
    const atBat = await synthvhd(['inspect', '--map', output, '--offset', '0x200000', '--json']);
    const report = JSON.parse(atBat.stdout) as OffsetReport;
    expect(report.maps).toHaveLength(1);
    // 82 MiB / 32 MiB = 3 payload entries.
    expect(report.maps[0]?.extent).toEqual({ start: 2 * MiB, end: 3 * MiB, kind: 'file', what: 'VHDX BAT region (3 entries)', source: { path: output, offset: 2 * MiB } });
  });

  it("a dynamic VHD qemu-img wrote: footer copy, header, BAT, each block's bitmap and data, footer", async () => {
    // 3 MiB of data at disk offset 4 MiB: qemu-img allocates 2 MiB blocks 2 and 3 only, in order.
    const raw = join(work, 'data.img');
    const handle = await open(raw, 'w');
    try {
      await handle.write(randomBytes(3 * MiB), 0, 3 * MiB, 4 * MiB);
      await handle.truncate(10 * MiB);
    } finally {
      await handle.close();
    }
    const vhd = join(work, 'dynamic.vhd');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic', raw, vhd]);
    const result = await synthvhd(['inspect', '--map', vhd, '--json']);
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout) as { maps: { name: string; size: number; extents: MapRow[] }[] };
    const [map] = report.maps;
    const rows = (map?.extents ?? []).map((row): Region => [row.start, row.end, row.what]);
    const bat = rows[2]?.[2] ?? '';
    expect(bat).toMatch(/^VHD block allocation table \(\d+ entries\)$/);
    const end = map?.size ?? 0;
    // "Dynamic Disk Header Format": footer copy, header at 512, BAT at 1536 (one sector for a few
    // entries); each block a 512-byte sector bitmap then 2 MiB of data; the footer last.
    expect(rows).toEqual([
      [0, 512, 'VHD footer copy'],
      [512, 1536, 'VHD dynamic disk header'],
      [1536, 2048, bat],
      [2048, 2560, 'VHD block 2 sector bitmap'],
      [2560, 2560 + 2 * MiB, 'VHD block 2 data (disk 4194304..6291456)'],
      [2560 + 2 * MiB, 3072 + 2 * MiB, 'VHD block 3 sector bitmap'],
      [3072 + 2 * MiB, 3072 + 4 * MiB, 'VHD block 3 data (disk 6291456..8388608)'],
      [3072 + 4 * MiB, end, 'VHD footer'],
    ]);
    expect(end).toBe(3072 + 4 * MiB + 512);
  });

  it('a served .vhdx: its structure, the layout the mount composes, and the disk', async () => {
    const disk = fixtureDisk(fixtures, 'bios-mbr');
    const mountpoint = await tempMountpoint();
    const mounted = await startMount(fixtures.backupRoot, mountpoint.path);
    try {
      const folder = disk.anchor.backupDir.slice(fixtures.backupRoot.length);
      const served = join(mountpoint.path, folder, `Image_C_${disk.anchor.timestamp}.disk.vhdx`);
      // File byte 21 MiB is in block 0 (file 4 MiB = disk 0): disk byte 17 MiB, C:'s boot sector.
      const result = await synthvhd(['inspect', '--map', served, '--offset', String(21 * MiB), '--json']);
      expect(result.stderr).toBe('');
      const report = JSON.parse(result.stdout) as OffsetReport;
      expect(report.maps.map((map) => map.name)).toEqual(['file', 'disk', 'vhdx']);
      const [fileRow, diskRow, vhdxRow] = report.maps.map((map) => map.extent);
      expect(fileRow?.what).toBe('VHDX payload block 0 (disk 0..33554432), fully present');
      const c = disk.volumes.find((volume) => volume.letter === 'C');
      // Disk byte 21 MiB is 4 MiB into C: (data or a hole of its .raw).
      expect(diskRow?.what).toMatch(/^(zeros: hole in )?C: \.raw$/);
      expect(vhdxRow).toMatchObject({ kind: 'file', what: 'C: .raw', source: { path: c?.rawPath } });
      expect((vhdxRow?.source?.offset ?? 0) + 21 * MiB - (vhdxRow?.start ?? 0)).toBe(RAW_VOLUME_OFFSET);
    } finally {
      await mounted.stop();
      await mountpoint.cleanup();
    }
  });
});
