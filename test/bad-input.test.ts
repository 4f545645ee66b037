// SPDX-License-Identifier: MIT
/**
 * Bad input: every broken backup gives one line on stderr naming the file and the problem,
 * exit code 1, and no output file. Each case damages its own copy of a fixture backup.
 */
import { cp, mkdtemp, readFile, rm, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { synthvhd } from './helpers/run.js';
import { fixtureDisk } from './helpers/fixture-disk.js';

const fixtures = inject('fixtures');
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-bad-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function diskByName(name: string): FixtureDisk {
  return fixtureDisk(fixtures, name);
}

/** A private copy of the disk's client folder; returns the anchor's paths inside it. */
async function copyOf(disk: FixtureDisk, label: string): Promise<{ folder: string; raw: string; mbr: string }> {
  const clientDir = dirname(disk.anchor.backupDir);
  const target = join(work, label, basename(clientDir));
  await cp(clientDir, target, { recursive: true });
  const folder = join(target, basename(disk.anchor.backupDir));
  const raw = join(folder, basename(disk.anchor.rawPath));
  return { folder, raw, mbr: `${raw}.mbr` };
}

async function expectFailure(folder: string, label: string, path: string, problem: RegExp): Promise<void> {
  const output = join(work, `${label}.vhdx`);
  const result = await synthvhd(['materialize', folder, '-o', output]);
  expect(result.code).toBe(1);
  const lines = result.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain(path);
  expect(lines[0]).toMatch(problem);
  await expect(stat(output)).rejects.toThrow();
}

async function patch(path: string, edit: (bytes: Buffer) => Buffer): Promise<void> {
  await writeFile(path, edit(await readFile(path)));
}

// SMBRData field offsets (docs/urbackup-formats.md §3.3): status 0, version 1, device_number 2,
// partition_number 6, serial_number (u32 length + bytes) 10.
describe('materialize refuses broken backups', () => {
  it('a truncated .raw.mbr', async () => {
    const copy = await copyOf(diskByName('bios-mbr'), 'truncated');
    await patch(copy.mbr, (bytes) => bytes.subarray(0, 100));
    await expectFailure(copy.folder, 'truncated', copy.mbr, /truncated.*mbr_data.* past the end of the file \(100 bytes\)/);
  });

  it('an unknown version byte', async () => {
    const copy = await copyOf(diskByName('bios-mbr'), 'version');
    await patch(copy.mbr, (bytes) => Buffer.concat([bytes.subarray(0, 1), Buffer.from([7]), bytes.subarray(2)]));
    await expectFailure(copy.folder, 'version', copy.mbr, /unknown version byte 7/);
  });

  it('a string length past the end of the file', async () => {
    const copy = await copyOf(diskByName('bios-mbr'), 'strlen');
    await patch(copy.mbr, (bytes) => {
      const copyBytes = Buffer.from(bytes);
      copyBytes.writeUInt32LE(0x00100000, 10);
      return copyBytes;
    });
    await expectFailure(copy.folder, 'strlen', copy.mbr, /serial_number length 1048576 .* runs past the end/);
  });

  it('a .raw shorter than its volume', async () => {
    const copy = await copyOf(diskByName('bios-mbr'), 'short');
    await truncate(copy.raw, (await stat(copy.raw)).size - 1024 * 1024);
    await expectFailure(copy.folder, 'short', copy.raw, /shorter than its volume/);
  });

  it('a partition number that is not in the table', async () => {
    const copy = await copyOf(diskByName('bios-mbr'), 'partno');
    await patch(copy.mbr, (bytes) => {
      const copyBytes = Buffer.from(bytes);
      copyBytes.writeInt32LE(9, 6);
      return copyBytes;
    });
    await expectFailure(copy.folder, 'partno', copy.mbr, /partition 9 is not in the saved MBR table/);
  });

  it('a serial number that does not match the volume', async () => {
    const copy = await copyOf(diskByName('bios-mbr'), 'serial');
    await patch(copy.mbr, (bytes) => {
      const copyBytes = Buffer.from(bytes);
      const length = copyBytes.readUInt32LE(10);
      const serial = copyBytes.subarray(14, 14 + length).toString('latin1');
      const other = serial.replace(/\d$/, (digit) => String((Number(digit) + 1) % 10));
      copyBytes.write(other, 14, 'latin1');
      return copyBytes;
    });
    await expectFailure(copy.folder, 'serial', copy.raw, /serial mismatch/);
  });

  it('a GPT whose primary and backup CRCs are both bad', async () => {
    const copy = await copyOf(diskByName('uefi-gpt-run1'), 'gptcrc');
    await patch(copy.mbr, (bytes) => {
      const copyBytes = Buffer.from(bytes);
      // Flip a byte inside each saved "EFI PART" header's DiskGUID (header offset 56).
      for (let at = copyBytes.indexOf('EFI PART'); at >= 0; at = copyBytes.indexOf('EFI PART', at + 8)) {
        copyBytes[at + 60] = (copyBytes[at + 60] ?? 0) ^ 0xff;
      }
      return copyBytes;
    });
    await expectFailure(copy.folder, 'gptcrc', copy.mbr, /GPT unusable: primary header CRC32 mismatch; backup header CRC32 mismatch/);
  });

  it('a missing .raw', async () => {
    const copy = await copyOf(diskByName('bios-mbr'), 'missing');
    await unlink(copy.raw);
    await expectFailure(copy.folder, 'missing', copy.folder, /no Image_C_\d{6}-\d{4}\.raw in the folder/);
  });

  it('an incomplete backup (no .raw.sync)', async () => {
    const incomplete = fixtures.incomplete[0];
    if (incomplete === undefined) throw new Error('fixture has no incomplete backup');
    await expectFailure(incomplete.backupDir, 'incomplete', incomplete.backupDir, /incomplete backup: no .*\.raw\.sync/);
  });
});
