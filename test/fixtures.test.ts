// SPDX-License-Identifier: MIT
/**
 * Checks the fixture builder itself against independent tools, so product tests can trust it:
 * sgdisk/fdisk verify the truth partition tables, fsntfsinfo and mtools read the file systems
 * both in the truth disks and in each .raw (volume at 524288, docs/urbackup-formats.md §2.2), and the
 * urBackup side files follow docs/urbackup-formats.md §1.2 and §3.3. It checks the very fixture
 * set the other test files read (provided by test/global-setup.ts).
 */
import { execFile as execFileCallback } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  ESP_BOOTMGR, NTFS_FILES, type FixtureDisk, type FixtureSet, type FixtureVolume,
} from '../fixtures/build-fixtures.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { treeFingerprint } from './helpers/run.js';

const execFile = promisify(execFileCallback);
const RAW_VOLUME_OFFSET = 524288;
const HASH_CHUNK = 512 * 1024;

interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function tool(cmd: string, args: readonly string[], input?: string): Promise<ToolResult> {
  const env = { ...process.env, LC_ALL: 'C', MTOOLS_SKIP_CHECK: '1' };
  try {
    const pending = execFile(cmd, args, { env, maxBuffer: 64 * 1024 * 1024 });
    if (input !== undefined) pending.child.stdin?.end(input);
    const { stdout, stderr } = await pending;
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: unknown; stderr?: unknown };
    return {
      code: typeof e.code === 'number' ? e.code : -1,
      stdout: typeof e.stdout === 'string' ? e.stdout : '',
      stderr: typeof e.stderr === 'string' ? e.stderr : String(err),
    };
  }
}

async function readRange(file: string, position: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, position);
    return buf;
  } finally {
    await fh.close();
  }
}

/** SHA-256 of file[position, +length), read in 4 MiB pieces. */
async function hashRange(file: string, position: number, length: number): Promise<string> {
  const hash = createHash('sha256');
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(4 * 1024 * 1024);
    for (let done = 0; done < length;) {
      const want = Math.min(buf.length, length - done);
      const { bytesRead } = await fh.read(buf, 0, want, position + done);
      if (bytesRead !== want) throw new Error(`short read in ${file} at ${position + done}`);
      hash.update(buf.subarray(0, want));
      done += want;
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}

/** The leading SMBRData fields (docs/urbackup-formats.md §3.3 #1–#8), parsed here independently. */
function parseMbrHead(data: Buffer): { status: number; version: number; deviceNumber: number; partitionNumber: number; serial: string; fsName: string; mbr: Buffer; end: number } {
  let at = 2;
  const int32 = (): number => {
    const v = data.readInt32LE(at);
    at += 4;
    return v;
  };
  const string = (): Buffer => {
    const length = data.readUInt32LE(at);
    const v = data.subarray(at + 4, at + 4 + length);
    at += 4 + length;
    return v;
  };
  const deviceNumber = int32();
  const partitionNumber = int32();
  const serial = string().toString('utf8');
  string(); // volume name
  const fsName = string().toString('utf8');
  const mbr = string();
  return { status: data[0] ?? -1, version: data[1] ?? -1, deviceNumber, partitionNumber, serial, fsName, mbr, end: at };
}

// The fixture set every other test file uses (built once by test/global-setup.ts): checking a
// second build of our own would prove nothing about the disks the product tests read.
const fixtures: FixtureSet = inject('fixtures');
/** Scratch space for the expected disks assembled here (the fixture folder is only read). */
let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'synthvhd-fixture-check-'));
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

function disk(name: string): FixtureDisk {
  const found = fixtures.disks.find((d) => d.name === name);
  if (found === undefined) throw new Error(`no fixture disk ${name}`);
  return found;
}

function volume(d: FixtureDisk, letter: string): FixtureVolume {
  const found = d.volumes.find((v) => v.letter === letter);
  if (found === undefined) throw new Error(`no volume ${letter} on ${d.name}`);
  return found;
}

const DISK_NAMES = ['uefi-gpt-run1', 'uefi-gpt-run2', 'bios-mbr', 'legacy-mbr', 'gpt-4kn', 'huge-gpt'];

describe('fixture builder', () => {
  // How long the build takes is measured by `npm run bench -- fixtures`, not asserted here.
  it('builds all disks, with a manifest', async () => {
    expect(fixtures.disks.map((d) => d.name)).toEqual(DISK_NAMES);
    const manifest = JSON.parse(await readFile(join(fixtures.root, 'manifest.json'), 'utf8')) as FixtureSet;
    expect(manifest).toEqual(fixtures);
    expect(fixtures.incomplete).toHaveLength(1);
  });

  it.each(['uefi-gpt-run1', 'uefi-gpt-run2', 'huge-gpt'])('sgdisk -v is clean on the %s truth disk', async (name) => {
    const result = await tool('sgdisk', ['-v', disk(name).truthImage]);
    expect(result.stdout).toContain('No problems found');
  });

  it('fdisk -b 4096 verifies the 4Kn truth disk', async () => {
    const d = disk('gpt-4kn');
    const result = await tool('fdisk', ['-b', '4096', d.truthImage], 'v\nq\n');
    expect(result.stdout).toContain('No errors detected');
    const header = await readRange(d.truthImage, 4096, 8);
    expect(header.toString('latin1')).toBe('EFI PART');
  });

  it('MBR truth disks have the expected tables, boot code and size', async () => {
    const bios = disk('bios-mbr');
    const dump = await tool('sfdisk', ['-d', bios.truthImage]);
    expect(dump.stdout).toContain('label-id: 0x5eedb105');
    expect(dump.stdout).toMatch(/start=\s*2048, size=\s*32768, type=7, bootable/);
    const legacy = disk('legacy-mbr');
    expect((await tool('sfdisk', ['-d', legacy.truthImage])).stdout).toMatch(/start=\s*63, size=\s*81855, type=7, bootable/);
    const lba0 = await readRange(legacy.truthImage, 0, 512);
    expect(lba0.subarray(0, 440).toString('latin1')).toContain('GRUB ');
    const sectors = await readRange(legacy.truthImage, 512, 62 * 512);
    for (let sector = 0; sector < 62; sector++) {
      expect(sectors.subarray(sector * 512, (sector + 1) * 512).equals(Buffer.alloc(512))).toBe(false);
    }
    for (const word of ['Geom', 'Read', 'Error']) expect(sectors.toString('latin1')).toContain(word);
    for (const d of [bios, legacy]) {
      const end = Math.max(...d.volumes.map((v) => v.partitionOffset + v.partitionLength));
      expect(d.diskSize).toBe(Math.ceil(end / (2 * 1024 * 1024)) * 2 * 1024 * 1024);
      expect((await stat(d.truthImage)).size).toBe(d.diskSize);
    }
  });

  it.each(DISK_NAMES)('fsntfsinfo reads the NTFS drive-letter volume inside the %s truth disk', async (name) => {
    const d = disk(name);
    const result = await tool('fsntfsinfo', ['-o', String(d.anchor.partitionOffset), d.truthImage]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Serial number');
    expect(result.stdout).toContain(`Bytes per sector\t\t: ${d.sectorSize}`);
  });

  it.each(DISK_NAMES)('the NTFS backup boot sector of %s is the boot sector, one sector past the volume', async (name) => {
    const d = disk(name);
    for (const v of d.volumes.filter((x) => x.fs === 'ntfs')) {
      expect(v.volumeLength).toBe(v.partitionLength - d.sectorSize);
      const boot = await readRange(d.truthImage, v.partitionOffset, d.sectorSize);
      const backup = await readRange(d.truthImage, v.partitionOffset + v.partitionLength - d.sectorSize, d.sectorSize);
      expect(backup.equals(boot)).toBe(true);
      expect(boot.toString('latin1', 3, 11)).toBe('NTFS    ');
    }
  });

  const allVolumes = (): { d: FixtureDisk; v: FixtureVolume }[] => fixtures.disks.flatMap((d) => d.volumes.map((v) => ({ d, v })));

  it('every .raw holds its volume at 524288 and lists the expected files', async () => {
    for (const { d, v } of allVolumes()) {
      if (v.fs === 'ntfs') {
        const listing = await tool('fsntfsinfo', ['-o', String(RAW_VOLUME_OFFSET), '-H', v.rawPath]);
        expect(listing.code, `${d.name} ${v.letter}`).toBe(0);
        for (const file of NTFS_FILES[`${d.name}:${v.letter}`] ?? ['(no list)']) expect(listing.stdout).toContain(`\\${file}\n`);
      } else {
        const listing = await tool('mdir', ['-b', '-i', `${v.rawPath}@@${RAW_VOLUME_OFFSET}`, '::/EFI/Microsoft/Boot']);
        expect(listing.stdout, `${d.name} ${v.letter}: ${listing.stderr}`).toContain('bootmgfw.efi');
        const content = await tool('mtype', ['-i', `${v.rawPath}@@${RAW_VOLUME_OFFSET}`, `::${ESP_BOOTMGR}`]);
        expect(content.stdout.startsWith('MZ')).toBe(true);
      }
    }
  });

  it('every .raw is the partition read from the truth disk, behind urBackup\'s synthetic MBR', async () => {
    for (const { d, v } of allVolumes()) {
      const size = (await stat(v.rawPath)).size;
      const mbr = await readRange(v.rawPath, 0, 512);
      expect(mbr.readUInt16LE(510)).toBe(0xaa55);
      expect(mbr.readUInt32LE(446 + 8)).toBe(1024);
      if (v.volumeLength > 2 * 1024 ** 4) {
        expect(mbr[446 + 4]).toBe(0xee);
        expect(size).toBeGreaterThan(RAW_VOLUME_OFFSET + v.volumeLength);
      } else {
        expect(mbr[446 + 4]).toBe(0x07);
        expect(mbr.readUInt32LE(446 + 12)).toBe(v.volumeLength / 512);
        expect(size).toBe(RAW_VOLUME_OFFSET + v.volumeLength);
      }
      // The first 4 MiB of the volume and its last bytes (the huge volume is too big to hash whole).
      const head = Math.min(v.volumeLength, 4 * 1024 * 1024);
      expect(await hashRange(v.rawPath, RAW_VOLUME_OFFSET, head)).toBe(await hashRange(d.truthImage, v.partitionOffset, head));
      expect(await hashRange(v.rawPath, RAW_VOLUME_OFFSET + v.volumeLength - 4096, 4096))
        .toBe(await hashRange(d.truthImage, v.partitionOffset + v.volumeLength - 4096, 4096));
      if (v.volumeLength <= 512 * 1024 * 1024) {
        expect(await hashRange(v.rawPath, RAW_VOLUME_OFFSET, v.volumeLength)).toBe(await hashRange(d.truthImage, v.partitionOffset, v.volumeLength));
      }
    }
  });

  it('the >2 TiB .raw carries a GPT that sgdisk accepts (CRCs right)', async () => {
    const d = volume(disk('huge-gpt'), 'D');
    const result = await tool('sgdisk', ['-v', d.rawPath]);
    expect(result.stdout).toContain('No problems found');
    const table = await tool('sgdisk', ['-i', '1', d.rawPath]);
    expect(table.stdout).toContain('First sector: 1024 ');
    expect(table.stdout).toContain(`Last sector: ${(RAW_VOLUME_OFFSET + d.volumeLength) / 512} `);
  });

  it('.raw.hash has one SHA-256 per 512 KiB chunk of volume data', async () => {
    for (const { v } of allVolumes()) {
      const hashes = await readFile(`${v.rawPath}.hash`);
      const chunks = Math.ceil(v.volumeLength / HASH_CHUNK);
      expect(hashes.length).toBe(chunks * 32);
      const firstLength = Math.min(HASH_CHUNK, v.volumeLength);
      expect(hashes.subarray(0, 32).toString('hex')).toBe(await hashRange(v.rawPath, RAW_VOLUME_OFFSET, firstLength));
      const lastStart = (chunks - 1) * HASH_CHUNK;
      expect(hashes.subarray(-32).toString('hex')).toBe(await hashRange(v.rawPath, RAW_VOLUME_OFFSET + lastStart, v.volumeLength - lastStart));
    }
  });

  it('.raw.mbr starts with status 1, the version and the truth LBA0; .sync and mtimes follow the backup', async () => {
    for (const { d, v } of [...allVolumes(), ...fixtures.incomplete.map((v) => ({ d: disk('uefi-gpt-run2'), v }))]) {
      const data = await readFile(`${v.rawPath}.mbr`);
      const head = parseMbrHead(data);
      expect(head.status).toBe(1);
      expect(head.version).toBe(d.tableType === 'gpt' ? 1 : 0);
      expect(head.deviceNumber).toBe(d.name === 'huge-gpt' ? 1 : 0);
      expect(head.partitionNumber).toBe(v.partitionNumber);
      expect(head.fsName).toBe(v.fs === 'ntfs' ? 'NTFS' : 'FAT32');
      expect(head.mbr.equals(await readRange(d.truthImage, 0, 512))).toBe(true);
      const boot = await readRange(v.rawPath, RAW_VOLUME_OFFSET, 512);
      expect(head.serial).toBe(String(boot.readUInt32LE(v.fs === 'ntfs' ? 0x48 : 0x43)));
      if (d.tableType === 'gpt') {
        expect(data.readBigInt64LE(head.end)).toBe(BigInt(d.sectorSize)); // gpt_header_pos
      }
      const sync = await stat(`${v.rawPath}.sync`).then(() => true, () => false);
      expect(sync).toBe(v.complete);
      const [, yy, mo, dd, hh, mi] = /^(\d\d)(\d\d)(\d\d)-(\d\d)(\d\d)$/.exec(v.timestamp)?.map(Number) ?? [];
      expect((await stat(v.rawPath)).mtime.getTime()).toBe(Date.UTC(2000 + (yy ?? 0), (mo ?? 1) - 1, dd, hh, mi));
    }
  });

  it('the legacy .raw.mbr ends with the extra data: varint 512, string2 of sectors 1..63', async () => {
    const d = disk('legacy-mbr');
    const data = await readFile(`${d.anchor.rawPath}.mbr`);
    const extra = await readRange(d.truthImage, 512, 63 * 512);
    // SQLite varints: 512 = 84 00, 32256 = 81 FC 00 (docs/urbackup-formats.md §3.2).
    const tail = Buffer.concat([Buffer.from([0, 0, 0, 0, 0x84, 0x00, 0x81, 0xfc, 0x00]), extra]);
    expect(data.subarray(-tail.length).equals(tail)).toBe(true);
  });

  it('run 1 and run 2 differ only in C:', async () => {
    const run1 = disk('uefi-gpt-run1');
    const run2 = disk('uefi-gpt-run2');
    expect(run1.diskSize).toBe(run2.diskSize);
    const c1 = volume(run1, 'C');
    const c2 = volume(run2, 'C');
    expect(await hashRange(run1.truthImage, c1.partitionOffset, c1.partitionLength))
      .not.toBe(await hashRange(run2.truthImage, c2.partitionOffset, c2.partitionLength));
    const before = await hashRange(run1.truthImage, 0, c1.partitionOffset);
    expect(await hashRange(run2.truthImage, 0, c2.partitionOffset)).toBe(before); // tables, ESP, MSR
    const after = c1.partitionOffset + c1.partitionLength;
    expect(await hashRange(run2.truthImage, after, run2.diskSize - after)).toBe(await hashRange(run1.truthImage, after, run1.diskSize - after));
    const e1 = volume(run1, 'ESP');
    const e2 = volume(run2, 'ESP');
    expect(await readFile(`${e2.rawPath}.hash`)).toEqual(await readFile(`${e1.rawPath}.hash`));
    expect(await hashRange(e2.rawPath, RAW_VOLUME_OFFSET, e2.volumeLength)).toBe(await hashRange(e1.rawPath, RAW_VOLUME_OFFSET, e1.volumeLength));
    const present = await tool('fsntfsinfo', ['-o', String(c2.partitionOffset), '-F', '\\update.bin', run2.truthImage]);
    expect(present.code).toBe(0);
    expect(present.stdout).toContain('Size\t\t\t\t: 3158073');
    const missing = await tool('fsntfsinfo', ['-o', String(c1.partitionOffset), '-F', '\\update.bin', run1.truthImage]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('file entry not found');
  });

  it('keep ranges are sorted, disjoint, inside the disk, and cover every backed-up partition', () => {
    for (const d of fixtures.disks) {
      let position = 0;
      for (const range of d.keep) {
        expect(range.start).toBeGreaterThanOrEqual(position);
        position = range.start + range.length;
      }
      expect(position).toBeLessThanOrEqual(d.diskSize);
      for (const v of d.volumes) {
        expect(d.keep.some((r) => r.start === v.partitionOffset && r.length === v.partitionLength)).toBe(true);
      }
      expect(d.anchor.letter).toMatch(/^[CD]$/);
    }
  });

  it('assembleExpectedDisk keeps exactly the keep ranges (uefi-gpt-run1: MSR and recovery read as zero)', async () => {
    const d = disk('uefi-gpt-run1');
    const out = join(scratch, 'expected-uefi.img');
    await assembleExpectedDisk(d, out);
    expect((await stat(out)).size).toBe(d.diskSize);
    let position = 0;
    for (const range of [...d.keep, { start: d.diskSize, length: 0, what: 'end' }]) {
      if (range.start > position) {
        const gap = await readRange(out, position, range.start - position);
        expect(gap.equals(Buffer.alloc(gap.length)), `gap before ${range.what}`).toBe(true);
      }
      if (range.length > 0) expect(await hashRange(out, range.start, range.length)).toBe(await hashRange(d.truthImage, range.start, range.length));
      position = range.start + range.length;
    }
    // The MSR in the truth is a non-zero pattern; the expected disk must not contain it.
    const msrStart = volume(d, 'ESP').partitionOffset + volume(d, 'ESP').partitionLength;
    expect((await readRange(d.truthImage, msrStart, 512)).equals(Buffer.alloc(512))).toBe(false);
    expect((await readRange(out, msrStart, 512)).equals(Buffer.alloc(512))).toBe(true);
    await rm(out);
  });

  it('assembleExpectedDisk handles the 3 TiB disk sparsely', async () => {
    const d = disk('huge-gpt');
    const out = join(scratch, 'expected-huge.img');
    await assembleExpectedDisk(d, out);
    const info = await stat(out);
    expect(info.size).toBe(d.diskSize);
    expect(info.blocks * 512).toBeLessThan(512 * 1024 * 1024);
    expect((await readRange(out, d.diskSize - 512, 512)).equals(await readRange(d.truthImage, d.diskSize - 512, 512))).toBe(true);
    expect((await tool('sgdisk', ['-v', out])).stdout).toContain('No problems found');
    await rm(out);
  });
});

describe('the fixture tree fingerprint (test/global-setup.ts)', () => {
  it('sees a write inside a file over 1 GiB even when its mtime is set back', async () => {
    const folder = await mkdtemp(join(scratch, 'fingerprint-'));
    const big = join(folder, 'big.raw');
    await writeFile(big, '');
    await truncate(big, 2 * 1024 ** 3);
    const before = await treeFingerprint(folder);
    const { mtime, atime } = await stat(big);
    const handle = await open(big, 'r+');
    try {
      await handle.write(Buffer.alloc(4096, 0x5a), 0, 4096, 1024 ** 3 + 12345);
    } finally {
      await handle.close();
    }
    await utimes(big, atime, mtime);
    expect((await stat(big)).mtime).toEqual(mtime);
    expect(await treeFingerprint(folder)).not.toBe(before);
    await rm(folder, { recursive: true });
  });
});
