// SPDX-License-Identifier: MIT
/**
 * The container readers on chains no other test makes, each judged by libvhdi (vhdimount) and by
 * a list computed independently from the raw disk the chain must give:
 * - a differencing VHD written here byte by byte from the VHD spec (qemu cannot make one), with
 *   a fully present block and runs of sectors from the child and from the parent that start and
 *   end inside bitmap bytes (so the bit order, MSB-first for VHD, matters);
 * - a differencing VHDX made by `blocklist copy` on a 10 GiB disk (three sector bitmap chunks of
 *   4 GiB): libvhdi reads blocks of a chunk through that chunk's bitmap, so every chunk needs one.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { independentList, withVhdiMount } from './helpers/blocklist.js';
import { run, runOk, synthvhd } from './helpers/run.js';

const fixtures = inject('fixtures');
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-readers-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const MiB = 1024 * 1024;
const SECTOR = 512;
const VHD_BLOCK = 2 * MiB;

async function ok(args: readonly string[]): Promise<string> {
  const result = await synthvhd(args);
  if (result.code !== 0) throw new Error(`synthvhd ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

/** "Hard Disk Footer Format" Checksum: ones' complement of the byte sum, the field taken as zero. */
function checksum(bytes: Buffer, at: number): number {
  let sum = 0;
  bytes.forEach((byte, index) => {
    if (index < at || index >= at + 4) sum += byte;
  });
  return ~sum >>> 0;
}

/** A differencing VHD footer ("Hard Disk Footer Format"), big-endian. */
function footer(size: number, uniqueId: Buffer): Buffer {
  const bytes = Buffer.alloc(512);
  bytes.write('conectix', 0, 'latin1');
  bytes.writeUInt32BE(2, 8); // Features: reserved bit set
  bytes.writeUInt32BE(0x00010000, 12); // File Format Version
  bytes.writeBigUInt64BE(512n, 16); // Data Offset: the dynamic header
  bytes.writeUInt32BE(0, 24);
  bytes.write('win ', 28, 'latin1');
  bytes.writeUInt32BE(0x000a0000, 32);
  bytes.write('Wi2k', 36, 'latin1');
  bytes.writeBigUInt64BE(BigInt(size), 40);
  bytes.writeBigUInt64BE(BigInt(size), 48);
  bytes.writeUInt32BE(0xffff10ff, 56); // CHS: unused by readers that trust Current Size
  bytes.writeUInt32BE(4, 60); // Disk Type: differencing
  uniqueId.copy(bytes, 68);
  bytes.writeUInt32BE(checksum(bytes, 64), 64);
  return bytes;
}

describe('differencing VHD', () => {
  it('a chain written from the spec reads the same in libvhdi and in synthvhd', async () => {
    const disk = fixtures.disks.find((candidate) => candidate.name === 'bios-mbr');
    if (disk === undefined) throw new Error('no bios-mbr fixture');
    const parent = join(work, 'parent.vhd');
    await ok(['materialize', disk.anchor.backupDir, '-o', parent]);
    const parentBytes = await readFile(parent);
    const parentId = parentBytes.subarray(parentBytes.length - 512 + 68, parentBytes.length - 512 + 84);
    const expected = join(work, 'child-expected.img');
    await assembleExpectedDisk(disk, expected);
    const size = disk.diskSize;
    const blocks = Math.ceil(size / VHD_BLOCK);

    // Child blocks: [block, present sector runs [first, count]].
    const lastBlock = blocks - 1;
    const lastSectors = (size - lastBlock * VHD_BLOCK) / SECTOR;
    const plan: [number, [number, number][]][] = [
      [3, [[0, VHD_BLOCK / SECTOR]]],
      [10, [[0, 4], [13, 3], [101, 67], [4000, 93]]],
      [lastBlock, [[lastSectors - 16, 16]]],
    ];
    const tableOffset = 1536;
    const batBytes = Math.ceil((blocks * 4) / 512) * 512;
    const locatorOffset = tableOffset + batBytes;
    const relativeName = Buffer.from('.\\parent.vhd', 'utf16le');
    let next = locatorOffset + 512;
    const header = Buffer.alloc(1024);
    header.write('cxsparse', 0, 'latin1');
    header.writeBigUInt64BE(0xffffffffffffffffn, 8);
    header.writeBigUInt64BE(BigInt(tableOffset), 16);
    header.writeUInt32BE(0x00010000, 24);
    header.writeUInt32BE(blocks, 28);
    header.writeUInt32BE(VHD_BLOCK, 32);
    parentId.copy(header, 40);
    Buffer.from('parent.vhd', 'utf16le').swap16().copy(header, 64); // Parent Unicode Name: UTF-16 big-endian
    header.write('W2ru', 576, 'latin1');
    header.writeUInt32BE(512, 580); // Platform Data Space
    header.writeUInt32BE(relativeName.length, 584);
    header.writeBigUInt64BE(BigInt(locatorOffset), 592);
    header.writeUInt32BE(checksum(header, 36), 36);
    const bat = Buffer.alloc(batBytes, 0xff);
    const expectedHandle = await open(expected, 'r+');
    const pieces: [number, Buffer][] = [];
    try {
      for (const [block, runs] of plan) {
        bat.writeUInt32BE(next / SECTOR, block * 4);
        const bitmap = Buffer.alloc(512);
        const data = Buffer.alloc(VHD_BLOCK);
        for (const [first, count] of runs) {
          for (let sector = first; sector < first + count; sector++) bitmap[sector >> 3] = (bitmap[sector >> 3] ?? 0) | (0x80 >> (sector & 7)); // MSB-first
          const bytes = randomBytes(count * SECTOR);
          bytes.copy(data, first * SECTOR);
          await expectedHandle.write(bytes, 0, bytes.length, block * VHD_BLOCK + first * SECTOR);
        }
        pieces.push([next, Buffer.concat([bitmap, data])]);
        next += 512 + VHD_BLOCK;
      }
    } finally {
      await expectedHandle.close();
    }
    const child = join(work, 'child.vhd');
    const foot = footer(size, randomBytes(16));
    const file = Buffer.alloc(next + 512);
    foot.copy(file, 0);
    header.copy(file, 512);
    bat.copy(file, tableOffset);
    relativeName.copy(file, locatorOffset);
    for (const [at, bytes] of pieces) bytes.copy(file, at);
    foot.copy(file, next);
    await writeFile(child, file);

    const info = await runOk('vhdiinfo', [child]);
    expect(info.stdout).toMatch(/Disk type\s*:\s*Differential/);
    await withVhdiMount(child, async (rawDisk) => {
      const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', rawDisk, expected]);
      expect(compare.stdout + compare.stderr).toContain('Images are identical');
    });
    await ok(['blocklist', 'create', child]);
    expect(await readFile(`${child}.blocklist.bin`)).toEqual(await independentList(expected));
    // merge flattens it: a fixed VHD qemu finds identical to the expected disk.
    await ok(['merge', child, '-o', join(work, 'flat.vhd')]);
    const flat = await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', join(work, 'flat.vhd'), expected]);
    expect(flat.stdout + flat.stderr).toContain('Images are identical');
  });
});

describe('differencing VHDX over several sector bitmap chunks', () => {
  it('libvhdi reads every chunk of a 10 GiB diff right', async () => {
    const GiB = 1024 * MiB;
    const older = join(work, 'big-old.img');
    const newer = join(work, 'big-new.img');
    await writeFile(older, '');
    await truncate(older, 10 * GiB);
    const handle = await open(older, 'r+');
    const windows = [0, 3000 * MiB, 6000 * MiB, 9000 * MiB];
    try {
      for (const at of windows) await handle.write(randomBytes(4 * MiB), 0, 4 * MiB, at);
    } finally {
      await handle.close();
    }
    await runOk('cp', ['--sparse=always', older, newer]);
    const newerHandle = await open(newer, 'r+');
    try {
      await newerHandle.write(randomBytes(MiB), 0, MiB, 100 * MiB); // chunk 0 changes; chunks 1 and 2 do not
    } finally {
      await newerHandle.close();
    }
    const parent = join(work, 'big.vhdx');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=32M', older, parent]);
    await ok(['blocklist', 'create', parent, newer]);
    // libvhdi finds a parent only through absolute_win32_path (README "Blocklists"): name one.
    await ok(['blocklist', 'copy', '--windows-path', 'D:\\VMs', newer, parent]);
    const diff = join(work, 'big_diff.vhdx');
    await withVhdiMount(diff, async (rawDisk) => {
      // Reading 10 GiB through FUSE is slow: compare the data, the change, and where chunks 1 and 2 start.
      for (const at of [...windows, 100 * MiB, 4 * GiB, 8 * GiB, 4352 * MiB, 10 * GiB - 4 * MiB]) {
        const slice = async (path: string): Promise<Buffer> => {
          const fileHandle = await open(path, 'r');
          try {
            const buffer = Buffer.alloc(4 * MiB);
            await fileHandle.read(buffer, 0, buffer.length, at);
            return buffer;
          } finally {
            await fileHandle.close();
          }
        };
        expect((await slice(rawDisk)).equals(await slice(newer)), `bytes at ${at}`).toBe(true);
      }
    });
    await rm(`${diff}.blocklist.bin`);
    await ok(['blocklist', 'create', diff]);
    expect(await readFile(`${diff}.blocklist.bin`)).toEqual(await readFile(`${newer}.blocklist.bin`));
  });
});

describe('differencing VHDX with sector runs inside bitmap bytes', () => {
  it('reads the bits LSB-first, as libvhdi does', async () => {
    const byName = (name: string): FixtureDisk => {
      const disk = fixtures.disks.find((candidate) => candidate.name === name);
      if (disk === undefined) throw new Error(`no ${name} fixture`);
      return disk;
    };
    const [older, newer] = [join(work, 'uefi-old.img'), join(work, 'uefi-new.img')];
    await assembleExpectedDisk(byName('uefi-gpt-run1'), older);
    await assembleExpectedDisk(byName('uefi-gpt-run2'), newer);
    const parent = join(work, 'uefi.vhdx');
    await ok(['materialize', byName('uefi-gpt-run1').anchor.backupDir, '-o', parent]);
    await ok(['blocklist', 'create', parent]);
    await ok(['blocklist', 'create', '--cache-dir', join(work, 'cache'), byName('uefi-gpt-run2').anchor.backupDir]);
    const report = JSON.parse(await ok(['blocklist', 'copy', '--json', '--cache-dir', join(work, 'cache'), '--windows-path', 'D:\\VMs', byName('uefi-gpt-run2').anchor.backupDir, parent])) as {
      diff: string;
      changedRanges: { start: number }[];
    };
    // Our diffs hold whole 2 MiB runs. Take 8 sectors of a changed range in which every sector
    // differs between the two disks, and make its bitmap byte 0x0F: LSB-first (MS-VHDX 2.4), the
    // first 4 come from the diff, the last 4 from the parent again.
    const [oldBytes, newBytes] = [await readFile(older), await readFile(newer)];
    let first = -1;
    for (const range of report.changedRanges) {
      for (let at = range.start; at < range.start + 2 * MiB && first < 0; at += 8 * SECTOR) {
        let allDiffer = true;
        for (let sector = 0; sector < 8 && allDiffer; sector++) {
          const from = at + sector * SECTOR;
          allDiffer = !oldBytes.subarray(from, from + SECTOR).equals(newBytes.subarray(from, from + SECTOR));
        }
        if (allDiffer) first = at;
      }
    }
    expect(first).toBeGreaterThan(0);
    const bytes = await readFile(report.diff);
    const blockSize = 32 * MiB;
    const chunkRatio = (2 ** 23 * SECTOR) / blockSize;
    const batOffset = 2 * MiB; // MS-VHDX 2.2.3 region table entry 0 of our writer: the BAT at 2 MiB
    expect(bytes.readBigUInt64LE(192 * 1024 + 16 + 16)).toBe(BigInt(batOffset));
    const bitmapEntry = bytes.readBigUInt64LE(batOffset + chunkRatio * 8);
    expect(Number(bitmapEntry & 7n)).toBe(6); // SB_BLOCK_PRESENT
    const bitmapAt = Number(bitmapEntry >> 20n) * MiB + first / SECTOR / 8;
    expect(bytes[bitmapAt]).toBe(0xff);
    bytes[bitmapAt] = 0x0f;
    const patched = join(work, 'uefi_patched.vhdx');
    await writeFile(patched, bytes);
    oldBytes.copy(newBytes, first + 4 * SECTOR, first + 4 * SECTOR, first + 8 * SECTOR);
    await writeFile(newer, newBytes);
    await withVhdiMount(patched, async (rawDisk) => {
      const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', rawDisk, newer]);
      expect(compare.stdout + compare.stderr).toContain('Images are identical');
    });
    await ok(['blocklist', 'create', patched]);
    expect(await readFile(`${patched}.blocklist.bin`)).toEqual(await independentList(newer));
  });
});
