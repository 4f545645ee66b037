// SPDX-License-Identifier: MIT
/**
 * The benchmark's backup root: one urBackup-style RAW image backup of a C: volume holding
 * `volumeBytes` of random (non-zero, incompressible) data, on an MBR disk with one partition at
 * 1 MiB. Written from the format notes (docs/urbackup-formats.md §1.1 paths, §2.2 the 512 KiB .raw header,
 * §3.3 the SMBRData fields), like fixtures/build-fixtures.ts but without file systems: the
 * volume's content does not matter for throughput. Reused when it already exists.
 */
import { randomFillSync } from 'node:crypto';
import { mkdir, open, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const KiB = 1024;
const MiB = 1024 * KiB;
/** docs/urbackup-formats.md §2.2 */
const RAW_VOLUME_OFFSET = 512 * KiB;
const PARTITION_OFFSET = MiB;

export interface BenchFixture {
  readonly backupRoot: string;
  readonly folder: string;
  readonly rawPath: string;
  readonly volumeBytes: number;
  /** The mount-relative path of the virtual .vhdx. */
  readonly vhdxRelative: string;
}

function int32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeInt32LE(value);
  return out;
}

/** docs/urbackup-formats.md §3.2 CWData::addString: u32 LE length, then the bytes. */
function string(value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  return Buffer.concat([int32(bytes.length), bytes]);
}

/** LBA0 with one NTFS-type primary partition (MBR entry: status, CHS, type, CHS, LBA, count). */
function masterBootRecord(volumeBytes: number): Buffer {
  const mbr = Buffer.alloc(512);
  mbr.fill(0x90, 0, 440); // stand-in boot code
  mbr.writeUInt32LE(0x5eedbe4c, 440); // disk signature
  Buffer.from([0x80, 0xfe, 0xff, 0xff, 0x07, 0xfe, 0xff, 0xff]).copy(mbr, 446);
  mbr.writeUInt32LE(PARTITION_OFFSET / 512, 454);
  mbr.writeUInt32LE(volumeBytes / 512, 458);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  return mbr;
}

export async function buildBenchFixture(directory: string, volumeBytes = 1024 * MiB): Promise<BenchFixture> {
  const client = 'benchpc';
  const timestamp = '250101-0100';
  const backupRoot = join(directory, 'backups');
  const folder = join(backupRoot, client, `${timestamp}_Image_C`);
  const base = `Image_C_${timestamp}`;
  const rawPath = join(folder, `${base}.raw`);
  const fixture: BenchFixture = { backupRoot, folder, rawPath, volumeBytes, vhdxRelative: `${client}/${timestamp}_Image_C/${base}.disk.vhdx` };
  const done = join(directory, `complete-${volumeBytes}`);
  if (await stat(done).then(() => true, () => false)) return fixture;

  await mkdir(folder, { recursive: true });
  const mbrData = Buffer.concat([
    Buffer.from([1, 0]), // #1 status, #2 version 0 = MBR disk
    int32(0), // #3 device_number
    int32(1), // #4 partition_number
    string(''), // #5 serial (not a decimal: nothing to check against the boot sector)
    string('Bench'), // #6 volume_name
    string('NTFS'), // #7 fsn
    string(masterBootRecord(volumeBytes)), // #8 LBA0
    string(''), // #17 errmsg
  ]);
  await writeFile(`${rawPath}.mbr`, mbrData);
  const raw = await open(rawPath, 'w');
  try {
    await raw.truncate(RAW_VOLUME_OFFSET + volumeBytes);
    const chunk = Buffer.alloc(4 * MiB);
    for (let written = 0; written < volumeBytes; written += chunk.length) {
      randomFillSync(chunk);
      await raw.write(chunk, 0, Math.min(chunk.length, volumeBytes - written), RAW_VOLUME_OFFSET + written);
    }
    await raw.sync();
  } finally {
    await raw.close();
  }
  await writeFile(`${rawPath}.sync`, '');
  await writeFile(done, '');
  return fixture;
}
