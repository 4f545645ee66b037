// SPDX-License-Identifier: MIT
/**
 * End to end, for every fixture disk: materialize .vhdx and .vhd with the CLI, then let
 * independent tools judge them against a raw disk assembled with dd from the fixture's own
 * truth image: qemu-img info/check/compare, vhdiinfo, sgdisk -v on the disk inside, and the
 * NTFS file system inside read by fsntfsinfo.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { NTFS_FILES, type FixtureDisk } from '../fixtures/build-fixtures.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { run, runOk, sha256File, synthvhd } from './helpers/run.js';
import { fixtureDisk } from './helpers/fixture-disk.js';

const fixtures = inject('fixtures');
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-core-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function qemuVirtualSize(path: string, format: 'vpc' | 'vhdx'): Promise<number> {
  const { stdout } = await runOk('qemu-img', ['info', '--output=json', '-f', format, path]);
  return (JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'];
}

async function materialize(disk: FixtureDisk, extension: 'vhdx' | 'vhd', name = disk.name): Promise<string> {
  const output = join(work, `${name}.${extension}`);
  const result = await synthvhd(['materialize', disk.anchor.backupDir, '-o', output]);
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  return output;
}

/** Runs `check` on a loop device over `image` (read-only, 4 KiB sectors when asked); always detached. */
async function withLoop<T>(image: string, sectorSize: number, check: (device: string) => Promise<T>): Promise<T> {
  const { stdout } = await runOk('losetup', ['--find', '--show', '--read-only', '-b', String(sectorSize), image]);
  const device = stdout.trim();
  try {
    return await check(device);
  } finally {
    await run('losetup', ['-d', device]);
  }
}

/** Mounts `image` with libvhdi's vhdimount (FUSE) and runs `check` on the raw disk it shows; always unmounted. */
async function withVhdiMount<T>(image: string, check: (rawDisk: string) => Promise<T>): Promise<T> {
  const mountpoint = await mkdtemp(join(tmpdir(), 'synthvhd-vhdimount-'));
  try {
    await runOk('vhdimount', [image, mountpoint]);
    try {
      return await check(join(mountpoint, 'vhdi1'));
    } finally {
      await run('fusermount', ['-u', mountpoint]);
    }
  } finally {
    await rm(mountpoint, { recursive: true, force: true });
  }
}

/** Compares [offset, offset + length) of two raw disks with dd and cmp. */
async function expectSameRange(actual: string, expectedDisk: string, offset: number, length: number): Promise<void> {
  const slice = async (path: string): Promise<Buffer> => {
    const { stdout } = await runOk('sh', ['-c', `dd if="$0" iflag=skip_bytes,count_bytes skip=${offset} count=${length} bs=1M status=none | sha256sum`, path]);
    return Buffer.from(stdout.split(' ')[0] ?? '', 'hex');
  };
  expect(await slice(actual), `bytes ${offset}+${length}`).toEqual(await slice(expectedDisk));
}

/** fsntfsinfo (libfsntfs) lists the anchor volume's root inside the disk: the files the fixture put there. */
async function expectNtfsFiles(disk: FixtureDisk, rawDisk: string): Promise<void> {
  const hierarchy = await runOk('fsntfsinfo', ['-o', String(disk.anchor.partitionOffset), '-H', rawDisk]);
  const files = NTFS_FILES[`${disk.name}:${disk.anchor.letter}`] ?? [];
  expect(files.length).toBeGreaterThan(0);
  for (const file of files) expect(hierarchy.stdout).toContain(`\\${file}`);
}

function diskByName(name: string): FixtureDisk {
  return fixtureDisk(fixtures, name);
}

const ALL_DISKS = ['uefi-gpt-run1', 'uefi-gpt-run2', 'bios-mbr', 'legacy-mbr', 'gpt-4kn', 'huge-gpt'];
const VHD_DISKS = ['uefi-gpt-run1', 'uefi-gpt-run2', 'bios-mbr', 'legacy-mbr'];
const QEMU_VHDX_DISKS = ['uefi-gpt-run1', 'uefi-gpt-run2', 'bios-mbr', 'legacy-mbr'];

describe.each(ALL_DISKS)('disk %s', (name) => {
  const disk = diskByName(name);
  const expected = (): string => join(work, `${name}.expected.img`);

  beforeAll(async () => {
    await assembleExpectedDisk(disk, expected());
  });

  if (QEMU_VHDX_DISKS.includes(name)) {
    it('as .vhdx: exact size, clean check, identical to the independently assembled disk', async () => {
      const vhdx = await materialize(disk, 'vhdx');
      expect(await qemuVirtualSize(vhdx, 'vhdx')).toBe(disk.diskSize);
      const check = await run('qemu-img', ['check', '-f', 'vhdx', vhdx]);
      expect(check.stdout + check.stderr).toContain('No errors were found');
      expect(check.code).toBe(0);
      const compare = await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', vhdx, expected()]);
      expect(compare.stdout + compare.stderr).toContain('Images are identical');
      const info = await runOk('vhdiinfo', [vhdx]);
      expect(info.stdout).toMatch(new RegExp(`Media size\\s*:.*\\(${disk.diskSize} bytes\\)`));
    });
  } else if (name === 'gpt-4kn') {
    it('as 4Kn .vhdx: libvhdi reads it with 4096-byte sectors and its bytes are the disk', async () => {
      const vhdx = await materialize(disk, 'vhdx');
      const info = await runOk('vhdiinfo', [vhdx]);
      expect(info.stdout).toMatch(/Bytes per sector\s*:\s*4096/);
      expect(info.stdout).toMatch(new RegExp(`Media size\\s*:.*\\(${disk.diskSize} bytes\\)`));
      await withVhdiMount(vhdx, async (rawDisk) => {
        const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', rawDisk, expected()]);
        expect(compare.stdout + compare.stderr).toContain('Images are identical');
        // The GPT inside, seen by sgdisk through a 4 KiB-sector loop device.
        const verify = await withLoop(rawDisk, 4096, (device) => run('sgdisk', ['-v', device]));
        expect(verify.stdout).toContain('No problems found');
        await expectNtfsFiles(disk, rawDisk);
      });
    });
  } else {
    // 3 TiB: qemu's vhdx driver reports no block status, so a full qemu-img compare would read
    // 3 TiB. libvhdi (vhdimount) serves the disk instead: sgdisk and fsntfsinfo read what they
    // need, and dd+cmp compares the head, the tail and windows spread over the disk.
    it('as a 3 TiB .vhdx: exact size, clean check, a small file, and libvhdi reads the disk', async () => {
      const vhdx = await materialize(disk, 'vhdx');
      expect(await qemuVirtualSize(vhdx, 'vhdx')).toBe(disk.diskSize);
      const check = await run('qemu-img', ['check', '-f', 'vhdx', vhdx]);
      expect(check.stdout + check.stderr).toContain('No errors were found');
      expect((await stat(vhdx)).size).toBeLessThan(512 * 1024 * 1024);
      await withVhdiMount(vhdx, async (rawDisk) => {
        expect((await stat(rawDisk)).size).toBe(disk.diskSize);
        await expectSameRange(rawDisk, expected(), 0, 300 * 1024 * 1024);
        await expectSameRange(rawDisk, expected(), disk.diskSize - 64 * 1024 * 1024, 64 * 1024 * 1024);
        for (let window = 1; window < 16; window++) {
          const offset = Math.floor((disk.diskSize / 16) * window / 4096) * 4096;
          await expectSameRange(rawDisk, expected(), offset, 1024 * 1024);
        }
        const verify = await run('sgdisk', ['-v', rawDisk]);
        expect(verify.stdout).toContain('No problems found');
        await expectNtfsFiles(disk, rawDisk);
      });
    });
  }

  if (VHD_DISKS.includes(name)) {
    it('as .vhd: exact size and identical to the independently assembled disk', async () => {
      const vhd = await materialize(disk, 'vhd');
      expect(await qemuVirtualSize(vhd, 'vpc')).toBe(disk.diskSize);
      expect((await stat(vhd)).size).toBe(disk.diskSize + 512);
      const compare = await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', vhd, expected()]);
      expect(compare.stdout + compare.stderr).toContain('Images are identical');
      const info = await runOk('vhdiinfo', [vhd]);
      expect(info.stdout).toContain('Fixed');
    });
  } else {
    it('is refused as .vhd with a clear one-line reason and no output file', async () => {
      const output = join(work, `${name}.vhd`);
      const result = await synthvhd(['materialize', disk.anchor.backupDir, '-o', output]);
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toMatch(name === 'gpt-4kn' ? /512-byte sectors/ : /2040 GiB/);
      await expect(stat(output)).rejects.toThrow();
    });
  }

  // The 4Kn and 3 TiB disks get these checks through vhdimount above.
  if (QEMU_VHDX_DISKS.includes(name)) {
    it('holds a partition table sgdisk finds clean and a readable C: file system', async () => {
      const raw = join(work, `${name}.inside.img`);
      await runOk('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', join(work, `${name}.vhdx`), raw]);
      try {
        if (disk.tableType === 'gpt') {
          const verify = await run('sgdisk', ['-v', raw]);
          expect(verify.stdout).toContain('No problems found');
        } else {
          const listing = await runOk('sfdisk', ['--dump', raw]);
          expect(listing.stdout).toContain(`start=${String(disk.anchor.partitionOffset / 512).padStart(12)}`);
        }
        await expectNtfsFiles(disk, raw);
      } finally {
        await rm(raw, { force: true });
      }
    });
  }
});

describe('determinism', () => {
  it('two materializations of one backup are byte-identical, for .vhdx and .vhd', async () => {
    const disk = diskByName('bios-mbr');
    for (const extension of ['vhdx', 'vhd'] as const) {
      const first = await materialize(disk, extension, 'det-a');
      const second = await materialize(disk, extension, 'det-b');
      expect(await sha256File(first)).toBe(await sha256File(second));
    }
  });
});
