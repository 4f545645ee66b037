// SPDX-License-Identifier: MIT
/**
 * Blocklists end to end, judged by independent means:
 * - every list synthvhd writes (for a .vhdx, a .vhd, a raw image, a urBackup backup folder, and
 *   .vhd/.vhdx files qemu-img wrote, one with its blocks reordered) equals the list computed here
 *   with node crypto over the disk assembled independently (test/helpers/expected-disk.ts);
 * - between the two backup runs of the UEFI fixture, `check` reports exactly the 2 MiB blocks in
 *   which the two assembled disks differ; `copy` writes a differencing VHDX that libvhdi (vhdiinfo,
 *   vhdimount with the parent) reads as the newer disk; `merge` writes an image qemu-img finds
 *   identical to the newer disk; the parent is never modified.
 */
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { BlocklistPrecomputer, readCachedBlocklist, servedBlocklistName } from '../src/blocklist/cache.js';
import { composeDiskFor, resolveSource } from '../src/catalog/catalog.js';
import { BLOCK, differingBlocks, independentList, withVhdiMount } from './helpers/blocklist.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { run, runOk, sha256File, synthvhd } from './helpers/run.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { synthvhdWitnessed } from './helpers/io-witness.js';

const fixtures = inject('fixtures');
/** What the program reads besides image data: its JavaScript and the `.raw.mbr` files. */
const PROGRAM_BYTES = 4 * 1024 * 1024;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-blocklist-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function diskByName(name: string): FixtureDisk {
  return fixtureDisk(fixtures, name);
}

const memo = new Map<string, Promise<unknown>>();
function once<T>(key: string, make: () => Promise<T>): Promise<T> {
  let value = memo.get(key) as Promise<T> | undefined;
  if (value === undefined) {
    value = make();
    memo.set(key, value);
  }
  return value;
}

/** The independently assembled raw disk of a fixture, and its independent list. */
function expectedOf(name: string): Promise<{ raw: string; list: Buffer }> {
  return once(`expected:${name}`, async () => {
    const raw = join(work, `${name}.img`);
    await assembleExpectedDisk(diskByName(name), raw);
    return { raw, list: await independentList(raw) };
  });
}

async function materialize(name: string, extension: 'vhdx' | 'vhd', output = join(work, `${name}.${extension}`)): Promise<string> {
  const result = await synthvhd(['materialize', diskByName(name).anchor.backupDir, '-o', output]);
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  return output;
}

interface CreateJson {
  image: string;
  list: string;
  blocks: number;
  zeroBlocks: number;
  hashedBytes: number;
  diskSize: number;
}

async function createLists(args: readonly string[]): Promise<CreateJson[]> {
  const result = await synthvhd(['blocklist', 'create', '--json', ...args]);
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  const parsed = JSON.parse(result.stdout) as CreateJson | CreateJson[];
  return Array.isArray(parsed) ? parsed : [parsed];
}

async function inspectJson(path: string): Promise<{ type: string; format: string; dataWriteGuid?: string; blockSize?: number }> {
  return JSON.parse((await runOk(process.execPath, [join(process.cwd(), 'dist', 'src', 'cli', 'main.js'), 'inspect', '--json', path])).stdout) as {
    type: string;
    format: string;
    dataWriteGuid?: string;
    blockSize?: number;
  };
}

describe('blocklist create gives the list computed independently from the assembled disk', () => {
  describe.each(['uefi-gpt-run1', 'bios-mbr', 'gpt-4kn'])('disk %s', (name) => {
    it('for its .vhdx, .vhd and raw forms and for its backup folder (cache dir)', async () => {
      const disk = diskByName(name);
      const expected = await expectedOf(name);
      const images = [await materialize(name, 'vhdx')];
      if (disk.sectorSize === 512) images.push(await materialize(name, 'vhd'));
      images.push(expected.raw);
      const reports = await createLists(images);
      expect(reports.map((report) => report.list)).toEqual(images.map((image) => `${image}.blocklist.bin`));
      for (const report of reports) {
        expect(report.diskSize).toBe(disk.diskSize);
        expect(await readFile(report.list), report.image).toEqual(expected.list);
        // A list is never older than its image (VhdBlockBackup refuses such a list).
        expect((await stat(report.list)).mtimeMs).toBeGreaterThanOrEqual((await stat(report.image)).mtimeMs);
      }

      const cache = join(work, 'cache');
      const witnessed = await synthvhdWitnessed(['blocklist', 'create', '--json', '--cache-dir', cache, disk.anchor.backupDir]);
      expect(witnessed.stderr).toBe('');
      expect(witnessed.code).toBe(0);
      const backup = JSON.parse(witnessed.stdout) as CreateJson;
      expect(backup.list.startsWith(join(cache, disk.client, basename(disk.anchor.backupDir)))).toBe(true);
      expect(basename(backup.list)).toMatch(new RegExp(`^Image_${disk.anchor.letter}_${disk.anchor.timestamp}\\.disk\\.[0-9a-f]{16}\\.blocklist\\.bin$`));
      expect(await readFile(backup.list)).toEqual(expected.list);
      // Zero extents (gaps, unbacked partitions, holes of the .raw) are never read: the kernel
      // counts at most the allocated bytes of the disk's .raw files (stat) and the program's own
      // files (its JavaScript, the .raw.mbr files), far less than the disk.
      const allocated = (await Promise.all(disk.volumes.map(async (volume) => (await stat(volume.rawPath)).blocks * 512))).reduce((a, b) => a + b, 0);
      const bound = allocated + PROGRAM_BYTES;
      expect(bound).toBeLessThan(disk.diskSize / 2);
      expect(witnessed.io.rchar).toBeLessThanOrEqual(bound);
    });
  });

  it('for .vhd/.vhdx files qemu-img wrote (dynamic VHD, 1 MiB-block and fixed VHDX) and a VHDX with its blocks in reverse order', async () => {
    const expected = await expectedOf('bios-mbr');
    const dynamicVhd = join(work, 'qemu-dynamic.vhd');
    const smallBlocks = join(work, 'qemu-1m.vhdx');
    const fixed = join(work, 'qemu-fixed.vhdx');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', expected.raw, dynamicVhd]);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=1M', expected.raw, smallBlocks]);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=fixed,block_state_zero=off', expected.raw, fixed]);
    expect((await inspectJson(dynamicVhd)).type).toBe('dynamic');
    expect((await inspectJson(smallBlocks)).blockSize).toBe(1024 * 1024);
    expect((await inspectJson(fixed)).type).toBe('fixed');
    const reversed = join(work, 'reversed.vhdx');
    const moved = await reverseBlockOrder(smallBlocks, reversed);
    expect(moved).toBeGreaterThan(4);
    const compare = await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', reversed, expected.raw]);
    expect(compare.stdout + compare.stderr).toContain('Images are identical');
    for (const report of await createLists([dynamicVhd, smallBlocks, fixed, reversed])) {
      expect(await readFile(report.list), report.image).toEqual(expected.list);
    }
  });

  it('through the API the FUSE mount uses: a background computation, then the cached list and its served name', async () => {
    const disk = diskByName('bios-mbr');
    const expected = await expectedOf('bios-mbr');
    const cache = join(work, 'mount-cache');
    const { anchor, siblings } = await resolveSource(disk.anchor.backupDir);
    const { disk: composed } = await composeDiskFor(anchor, siblings);
    expect(await readCachedBlocklist(cache, anchor, composed.image)).toBeUndefined();
    const ready: string[] = [];
    const errors: Error[] = [];
    const precomputer = new BlocklistPrecomputer(cache, { onReady: (_request, cached) => ready.push(cached.path), onError: (_request, error) => errors.push(error) });
    precomputer.request(anchor, composed.image);
    precomputer.request(anchor, composed.image); // queued once
    await precomputer.idle();
    await precomputer.close();
    expect(errors).toEqual([]);
    const cached = await readCachedBlocklist(cache, anchor, composed.image);
    expect(ready).toEqual([cached?.path]);
    expect(cached?.size).toBe(expected.list.length);
    expect(cached?.mtimeMs).toBeGreaterThanOrEqual(composed.image.mtimeMs);
    expect(await readFile(cached?.path ?? '')).toEqual(expected.list);
    expect(servedBlocklistName(anchor, 'vhdx')).toBe(`Image_C_${disk.anchor.timestamp}.disk.vhdx.blocklist.bin`);
  });
});

/**
 * Rewrites a VHDX with its FULLY_PRESENT payload blocks in reverse file order (BAT updated; no
 * checksum covers the BAT or the payload, MS-VHDX 2.5). Returns how many blocks it moved.
 */
async function reverseBlockOrder(input: string, output: string): Promise<number> {
  const bytes = await readFile(input);
  // MS-VHDX 2.2.3: region table at 192 KiB; the BAT region GUID 2DC27766-F623-4200-9D64-115E9BFD4A08.
  const batGuid = Buffer.from('6677c22d23f600429d64115e9bfd4a08', 'hex');
  let batOffset = -1;
  const count = bytes.readUInt32LE(192 * 1024 + 8);
  for (let index = 0; index < count; index++) {
    const at = 192 * 1024 + 16 + index * 32;
    if (bytes.subarray(at, at + 16).equals(batGuid)) batOffset = Number(bytes.readBigUInt64LE(at + 16));
  }
  if (batOffset < 0) throw new Error('no BAT region');
  const blockSize = 1024 * 1024; // qemu-1m.vhdx; 4096 payload entries per chunk, so no bitmap slot is reached
  const present: { entry: number; offset: number }[] = [];
  for (let entry = 0; entry < Math.ceil(diskByName('bios-mbr').diskSize / blockSize); entry++) {
    const value = bytes.readBigUInt64LE(batOffset + entry * 8);
    if (Number(value & 7n) === 6) present.push({ entry, offset: Number(value >> 20n) * 1024 * 1024 });
  }
  const out = Buffer.from(bytes);
  const offsets = present.map((block) => block.offset).reverse();
  present.forEach((block, index) => {
    const target = offsets[index] ?? 0;
    bytes.copy(out, target, block.offset, block.offset + blockSize);
    out.writeBigUInt64LE((BigInt(target / (1024 * 1024)) << 20n) | 6n, batOffset + block.entry * 8);
  });
  await writeFile(output, out);
  return present.length;
}

interface CheckJson {
  changedBlocks: number;
  changedBytes: number;
  blocks: number;
  diskSize: number;
  changedRanges: { start: number; length: number }[];
}

interface CopyJson extends CheckJson {
  diff?: string;
  diffList?: string;
  parentLocator?: { relativePath: string; absoluteWin32Path?: string };
}

function blocksOf(report: CheckJson): number[] {
  return report.changedRanges.flatMap((range) => Array.from({ length: Math.ceil(range.length / BLOCK) }, (_, index) => range.start / BLOCK + index));
}

async function json<T>(args: readonly string[]): Promise<T> {
  const result = await synthvhd(args);
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout) as T;
}

describe('check, copy and merge between the two backup runs of the UEFI disk', () => {
  let older: { raw: string; list: Buffer };
  let newer: { raw: string; list: Buffer };
  let changed: number[];
  let target: string;
  let targetHash: string;
  let cache: string;
  let dir: string;

  beforeAll(async () => {
    [older, newer] = [await expectedOf('uefi-gpt-run1'), await expectedOf('uefi-gpt-run2')];
    changed = await differingBlocks(older.raw, newer.raw);
    dir = join(work, 'copy');
    cache = join(work, 'copy-cache');
    await mkdir(dir, { recursive: true });
    target = await materialize('uefi-gpt-run1', 'vhdx', join(dir, 'disk0.vhdx'));
    await createLists([target]);
    await createLists(['--cache-dir', cache, diskByName('uefi-gpt-run2').anchor.backupDir]);
    targetHash = await sha256File(target);
  });

  it('check reports exactly the 2 MiB blocks in which the two assembled disks differ', async () => {
    expect(changed.length).toBeGreaterThan(0);
    expect(changed.length).toBeLessThan(older.list.length / 16 / 4);
    const fromBackup = await json<CheckJson>(['blocklist', 'check', '--json', '--cache-dir', cache, diskByName('uefi-gpt-run2').anchor.backupDir, target]);
    expect(blocksOf(fromBackup)).toEqual(changed);
    expect(fromBackup.changedBlocks).toBe(changed.length);
    expect(fromBackup.changedBytes).toBe(changed.length * BLOCK);
    const newerVhdx = await materialize('uefi-gpt-run2', 'vhdx', join(work, 'run2-source.vhdx'));
    await createLists([newerVhdx]);
    expect(blocksOf(await json<CheckJson>(['blocklist', 'check', '--json', newerVhdx, target]))).toEqual(changed);
    const text = await synthvhd(['blocklist', 'check', newerVhdx, target]);
    expect(text.stdout).toContain(`${changed.length} of ${older.list.length / 16} blocks of 2 MiB changed`);
  });

  it('copy writes a differencing VHDX libvhdi reads, with its parent, as the newer disk', async () => {
    const report = await json<CopyJson>(['blocklist', 'copy', '--json', '--cache-dir', cache, '--windows-path', 'D:\\VMs\\', diskByName('uefi-gpt-run2').anchor.backupDir, target]);
    const diff = join(dir, 'disk0_diff.vhdx');
    expect(report.diff).toBe(diff);
    expect(blocksOf(report)).toEqual(changed);
    expect(report.parentLocator?.relativePath).toBe('.\\disk0.vhdx');
    // MS-VHDX 2.6.2.6.3: a drive-letter Win32 path, from --windows-path (TARGET's folder on Windows).
    expect(report.parentLocator?.absoluteWin32Path).toBe('\\\\?\\D:\\VMs\\disk0.vhdx');
    // The diff holds the changed blocks and little else (32 MiB payload blocks, mostly holes).
    expect((await stat(diff)).blocks * 512).toBeLessThan(changed.length * BLOCK + 8 * 1024 * 1024);
    const info = await runOk('vhdiinfo', [diff]);
    expect(info.stdout).toMatch(/Disk type\s*:\s*Differential/);
    expect(info.stdout).toContain('Parent filename\t\t: \\\\?\\D:\\VMs\\disk0.vhdx');
    expect(info.stdout).toMatch(new RegExp(`Parent identifier\\s*:\\s*${(await inspectJson(target)).dataWriteGuid ?? 'missing'}`));
    expect(info.stdout).toMatch(new RegExp(`Media size\\s*:.*\\(${diskByName('uefi-gpt-run1').diskSize} bytes\\)`));
    await withVhdiMount(diff, async (rawDisk) => {
      const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', rawDisk, newer.raw]);
      expect(compare.stdout + compare.stderr).toContain('Images are identical');
    });
    // The diff's list is the source's; our own reader (chain diff -> parent) gives that list too.
    expect(await readFile(`${diff}.blocklist.bin`)).toEqual(newer.list);
    await rm(`${diff}.blocklist.bin`);
    await createLists([diff]);
    expect(await readFile(`${diff}.blocklist.bin`)).toEqual(newer.list);
    expect(await sha256File(target)).toBe(targetHash);
  });

  it('merge writes a new image identical to the newer disk, with the diff\'s list, and modifies nothing', async () => {
    const diff = join(dir, 'disk0_diff.vhdx');
    const diffHash = await sha256File(diff);
    const merged = join(dir, 'disk0.merged.vhdx');
    const report = await json<{ output: string; list?: string }>(['merge', '--json', diff]);
    expect(report.output).toBe(merged);
    const compare = await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', merged, newer.raw]);
    expect(compare.stdout + compare.stderr).toContain('Images are identical');
    const check = await run('qemu-img', ['check', '-f', 'vhdx', merged]);
    expect(check.stdout + check.stderr).toContain('No errors were found');
    expect(report.list).toBe(`${merged}.blocklist.bin`);
    expect(await readFile(`${merged}.blocklist.bin`)).toEqual(newer.list);
    expect((await stat(`${merged}.blocklist.bin`)).mtimeMs).toBeGreaterThanOrEqual((await stat(merged)).mtimeMs);
    expect(await sha256File(target)).toBe(targetHash);
    expect(await sha256File(diff)).toBe(diffHash);
    // The next run checks against the merged image with no hashing: its list is there and fresh.
    expect((await json<CheckJson>(['blocklist', 'check', '--json', '--cache-dir', cache, diskByName('uefi-gpt-run2').anchor.backupDir, merged])).changedBlocks).toBe(0);
  });

  it('copy --createmeta --diffdir hashes the source, puts the diff elsewhere, and is deterministic', async () => {
    const source = join(work, 'createmeta-source.vhdx');
    await copyFile(join(work, 'run2-source.vhdx'), source);
    const elsewhere = join(work, 'elsewhere');
    await mkdir(elsewhere, { recursive: true });
    const report = await json<CopyJson & { sourceListCreated?: { list: string } }>(['blocklist', 'copy', '--json', '--createmeta', '--diffdir', elsewhere, source, target]);
    const diff = join(elsewhere, 'disk0_diff.vhdx');
    expect(report.diff).toBe(diff);
    expect(report.sourceListCreated?.list).toBe(`${source}.blocklist.bin`);
    expect(await readFile(`${source}.blocklist.bin`)).toEqual(newer.list);
    expect(blocksOf(report)).toEqual(changed);
    // relative_path climbs out of the diff's folder; our reader follows it.
    expect(report.parentLocator?.relativePath).toBe(`..\\copy\\disk0.vhdx`);
    await rm(`${diff}.blocklist.bin`);
    await createLists([diff]);
    expect(await readFile(`${diff}.blocklist.bin`)).toEqual(newer.list);
    // The same copy again gives the same bytes (GUIDs derived from the content).
    const first = await sha256File(diff);
    await json<CopyJson>(['blocklist', 'copy', '--json', '--diffdir', elsewhere, source, target]);
    expect(await sha256File(diff)).toBe(first);
  });

  it('copy of an unchanged disk writes nothing', async () => {
    const same = await materialize('uefi-gpt-run1', 'vhdx', join(work, 'same.vhdx'));
    await createLists([same]);
    const report = await json<CopyJson>(['blocklist', 'copy', '--json', '--diffdir', work, same, target]);
    expect(report.changedBlocks).toBe(0);
    expect(report.diff).toBeUndefined();
    await expect(stat(join(work, 'disk0_diff.vhdx'))).rejects.toThrow();
  });
});
