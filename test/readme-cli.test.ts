// SPDX-License-Identifier: MIT
/**
 * Command-line behaviour the README promises that no other test exercised, each judged by an
 * independent witness (the truth disk, qemu-img, sgdisk, SHA-1 computed here):
 * - "GPT copies": one broken copy (primary or backup) is regenerated from the other, the intact
 *   one kept verbatim;
 * - "Who may read what": a `.raw.hash` of the wrong size is refused, naming the file;
 * - `materialize --force` replaces an existing output, and without it the output is refused;
 * - `materialize --block-size`;
 * - `blocklist create --threads`.
 * Every case works on its own copy of a fixture backup or writes into a temp dir.
 */
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { independentList } from './helpers/blocklist.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { run, runOk, synthvhd } from './helpers/run.js';

const fixtures = inject('fixtures');
const MiB = 1024 * 1024;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-readme-cli-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const memo = new Map<string, Promise<string>>();
/** The disk synthvhd must produce for a fixture, assembled from its truth image (once). */
function expectedDisk(name: string): Promise<string> {
  let path = memo.get(name);
  if (path === undefined) {
    const out = join(work, `${name}.expected.raw`);
    path = assembleExpectedDisk(fixtureDisk(fixtures, name), out).then(() => out);
    memo.set(name, path);
  }
  return path;
}

/**
 * A private copy of the backup folders of `disks` (sparse, times kept: `cp -a`) in one client
 * folder; the first disk's anchor paths inside it.
 */
async function copyOf(disks: readonly FixtureDisk[], label: string): Promise<{ client: string; folder: string; raw: string; mbr: string }> {
  const first = disks[0];
  if (first === undefined) throw new Error('copyOf: no disk');
  const client = join(work, label, first.client);
  await mkdir(client, { recursive: true });
  for (const volume of disks.flatMap((disk) => disk.volumes)) {
    await runOk('cp', ['-a', '--sparse=always', '--reflink=auto', volume.backupDir, join(client, basename(volume.backupDir))]);
  }
  const folder = join(client, basename(first.anchor.backupDir));
  const raw = join(folder, basename(first.anchor.rawPath));
  return { client, folder, raw, mbr: `${raw}.mbr` };
}

/** The one line synthvhd printed on stderr. */
function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  return lines[0] ?? '';
}

// ---------------------------------------------------------------------------------------------
// GPT copies
// ---------------------------------------------------------------------------------------------

/**
 * Where the saved GPT copies sit inside a `.raw.mbr` (SMBRData version 1), read here from
 * docs/urbackup-formats.md §3.3: status u8, version u8, device_number i32, partition_number i32,
 * serial, volume name, fs name, LBA0 (each u32 length + bytes), then gpt_header_pos i64,
 * gpt_header, gpt_table_pos i64, gpt_table, backup_gpt_header_pos i64, backup_gpt_header,
 * backup_gpt_table_pos i64, backup_gpt_table (strings as before).
 */
interface SavedGptFields {
  readonly header: { readonly at: number; readonly length: number; readonly diskPosition: number };
  readonly table: { readonly at: number; readonly length: number; readonly diskPosition: number };
  readonly backupHeader: { readonly at: number; readonly length: number; readonly diskPosition: number };
  readonly backupTable: { readonly at: number; readonly length: number; readonly diskPosition: number };
}

function savedGptFields(mbr: Buffer): SavedGptFields {
  expect(mbr[1]).toBe(1); // version 1: a GPT disk
  let at = 10;
  const skipString = (): { at: number; length: number } => {
    const length = mbr.readUInt32LE(at);
    const start = at + 4;
    at = start + length;
    return { at: start, length };
  };
  for (let field = 0; field < 4; field++) skipString(); // serial, volume name, fs name, LBA0
  const positioned = (): { at: number; length: number; diskPosition: number } => {
    const diskPosition = Number(mbr.readBigInt64LE(at));
    at += 8;
    return { ...skipString(), diskPosition };
  };
  return { header: positioned(), table: positioned(), backupHeader: positioned(), backupTable: positioned() };
}

/** The composed disk as a raw file, converted by qemu-img (not by synthvhd). */
async function rawOf(image: string, format: 'vhdx' | 'vpc'): Promise<string> {
  const raw = `${image}.raw`;
  await runOk('qemu-img', ['convert', '-f', format, '-O', 'raw', image, raw]);
  return raw;
}

async function readRange(path: string, position: number, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const bytes = Buffer.alloc(length);
    const { bytesRead } = await handle.read(bytes, 0, length, position);
    expect(bytesRead).toBe(length);
    return bytes;
  } finally {
    await handle.close();
  }
}

describe('README "GPT copies": one broken copy is regenerated from the other', () => {
  const cases = [
    // Header CRC broken: a byte of the primary header's DiskGUID (header offset 56) flipped.
    { label: 'primary', broken: 'header' as const, note: /primary GPT regenerated from the backup \(saved primary: header CRC32 mismatch\)/ },
    // Array CRC broken: a byte of the backup array's first unique partition GUID flipped.
    { label: 'backup', broken: 'backupTable' as const, note: /backup GPT regenerated from the primary \(saved backup: partition array CRC32 mismatch\)/ },
  ];
  for (const testCase of cases) {
    it(`the ${testCase.label} copy broken: sgdisk finds the disk clean, it equals the truth, the intact copy is the saved bytes`, async () => {
      const name = 'uefi-gpt-run1';
      const copy = await copyOf([fixtureDisk(fixtures, name)], `gpt-${testCase.label}`);
      const saved = await readFile(copy.mbr);
      const fields = savedGptFields(saved);
      const damaged = Buffer.from(saved);
      const target = fields[testCase.broken];
      const flip = testCase.broken === 'header' ? target.at + 60 : target.at + 20;
      damaged[flip] = (damaged[flip] ?? 0) ^ 0xff;
      await writeFile(copy.mbr, damaged);

      const output = join(work, `gpt-${testCase.label}.vhdx`);
      const result = await synthvhd(['materialize', copy.folder, '-o', output]);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(testCase.note);

      const raw = await rawOf(output, 'vhdx');
      const verdict = await run('sgdisk', ['-v', raw]);
      expect(verdict.stdout + verdict.stderr).toContain('No problems found');
      expect(verdict.code).toBe(0);
      // The whole disk is the truth disk: the broken copy was not served as saved.
      await runOk('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw, await expectedDisk(name)]);
      // The intact copy is the saved bytes, verbatim, at its saved position.
      const intact = testCase.label === 'primary' ? [fields.backupHeader, fields.backupTable] : [fields.header, fields.table];
      for (const piece of intact) {
        expect((await readRange(raw, piece.diskPosition, piece.length)).equals(saved.subarray(piece.at, piece.at + piece.length))).toBe(true);
      }
      // And the regenerated copy is not the damaged bytes.
      expect((await readRange(raw, target.diskPosition, target.length)).equals(damaged.subarray(target.at, target.at + target.length))).toBe(false);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// .raw.hash of the wrong size
// ---------------------------------------------------------------------------------------------

describe('README "Who may read what": a .raw.hash of the wrong size is refused, naming the file', () => {
  for (const change of [
    { label: 'one hash short', edit: (bytes: Buffer) => bytes.subarray(0, bytes.length - 32) },
    { label: 'one hash too many', edit: (bytes: Buffer) => Buffer.concat([bytes, bytes.subarray(0, 32)]) },
  ]) {
    it(`verify: ${change.label} -> exit 1, one line naming the .raw.hash`, async () => {
      const copy = await copyOf([fixtureDisk(fixtures, 'bios-mbr')], `hash-verify-${change.label.replace(/ /g, '-')}`);
      const hashPath = `${copy.raw}.hash`;
      const good = await readFile(hashPath);
      await writeFile(hashPath, change.edit(good));
      const result = await synthvhd(['verify', copy.folder]);
      expect(result.code).toBe(1);
      const line = oneLine(result.stderr);
      expect(line).toContain(hashPath);
      expect(line).toMatch(new RegExp(`\\b${good.length}\\b`)); // the size it must have
    });
  }

  it('diff: a newer .raw.hash of the wrong size is not trusted (the note names it) and the data is compared instead', async () => {
    const run1 = fixtureDisk(fixtures, 'uefi-gpt-run1');
    const run2 = fixtureDisk(fixtures, 'uefi-gpt-run2');
    const older = await copyOf([run1, run2], 'hash-diff');
    const newerFolder = join(older.client, basename(run2.anchor.backupDir));
    const newerHash = join(newerFolder, `${basename(run2.anchor.rawPath)}.hash`);
    const good = await readFile(newerHash);
    await writeFile(newerHash, good.subarray(0, good.length - 32));
    const parent = join(work, 'hash-diff-parent.vhdx');
    expect((await synthvhd(['materialize', older.folder, '-o', parent])).code).toBe(0);
    const child = join(work, 'hash-diff-child.vhdx');
    const result = await synthvhd(['diff', older.folder, newerFolder, '-o', child, '--parent', parent, '--json']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout) as { notes: string[]; volumes: { letter: string; changedChunks: number; decidedByHashes: number }[] };
    expect(report.notes.some((note) => note.includes(newerHash) && note.includes(`expected ${good.length}`))).toBe(true);
    const c = report.volumes.find((volume) => volume.letter === 'C');
    expect(c?.decidedByHashes).toBe(0);
    // Compared by reading: the chunks the two truth disks differ in, counted here.
    expect(c?.changedChunks).toBe(await truthChangedChunks(run1, run2));
  });
});

/** 512 KiB chunks of C: that differ between the two runs' truth images. */
async function truthChangedChunks(run1: FixtureDisk, run2: FixtureDisk): Promise<number> {
  const chunk = 512 * 1024;
  const volume = run2.anchor;
  const [a, b] = [await open(run1.truthImage, 'r'), await open(run2.truthImage, 'r')];
  try {
    let changed = 0;
    const [x, y] = [Buffer.alloc(chunk), Buffer.alloc(chunk)];
    for (let offset = 0; offset < volume.volumeLength; offset += chunk) {
      const length = Math.min(chunk, volume.volumeLength - offset);
      await a.read(x, 0, length, volume.partitionOffset + offset);
      await b.read(y, 0, length, volume.partitionOffset + offset);
      if (!x.subarray(0, length).equals(y.subarray(0, length))) changed++;
    }
    return changed;
  } finally {
    await a.close();
    await b.close();
  }
}

// ---------------------------------------------------------------------------------------------
// materialize --force, --block-size
// ---------------------------------------------------------------------------------------------

describe('README: materialize --force and --block-size', () => {
  it('refuses an existing output without --force (exit 1, one line, the file untouched) and replaces it with --force', async () => {
    const name = 'bios-mbr';
    const source = fixtureDisk(fixtures, name).anchor.backupDir;
    const output = join(work, 'existing.vhdx');
    const before = 'not a disk: must survive a materialize without --force\n';
    await writeFile(output, before);
    const refused = await synthvhd(['materialize', source, '-o', output]);
    expect(refused.code).toBe(1);
    const line = oneLine(refused.stderr);
    expect(line).toContain(output);
    expect(line).toMatch(/already exists.*--force/);
    expect(await readFile(output, 'utf8')).toBe(before);

    const forced = await synthvhd(['materialize', source, '-o', output, '--force']);
    expect(forced.stderr).toBe('');
    expect(forced.code).toBe(0);
    await runOk('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', output, await expectedDisk(name)]);
  });

  for (const mebibytes of [2, 256]) {
    it(`--block-size ${mebibytes}: qemu-img sees ${mebibytes} MiB blocks, and the disk is the truth`, async () => {
      const name = 'uefi-gpt-run1';
      const output = join(work, `blocks-${mebibytes}.vhdx`);
      const result = await synthvhd(['materialize', fixtureDisk(fixtures, name).anchor.backupDir, '-o', output, '--block-size', String(mebibytes)]);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      const info = JSON.parse((await runOk('qemu-img', ['info', '--output=json', output])).stdout) as { 'cluster-size': number; format: string };
      expect(info.format).toBe('vhdx');
      expect(info['cluster-size']).toBe(mebibytes * MiB);
      await runOk('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', output, await expectedDisk(name)]);
    });
  }

  it('refuses a block size that is not a power of two from 1 to 256 as a usage error (exit 2, one line), writing nothing', async () => {
    const source = fixtureDisk(fixtures, 'bios-mbr').anchor.backupDir;
    for (const bad of ['3', '512']) {
      const output = join(work, `bad-block-${bad}.vhdx`);
      const result = await synthvhd(['materialize', source, '-o', output, '--block-size', bad]);
      expect(result.code, bad).toBe(2);
      expect(oneLine(result.stderr)).toMatch(new RegExp(`--block-size: ${bad.replace('.', '\\.')} is not a power of two from 1 to 256`));
      await expect(stat(output)).rejects.toThrow();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// blocklist create --threads
// ---------------------------------------------------------------------------------------------

describe('README: blocklist create --threads', () => {
  it('gives the same list on 1 and 3 threads, equal to SHA-1 computed here over the disk qemu-img reads', async () => {
    const image = join(work, 'threads.vhdx');
    const disk = fixtureDisk(fixtures, 'bios-mbr');
    expect((await synthvhd(['materialize', disk.anchor.backupDir, '-o', image])).code).toBe(0);
    const raw = await rawOf(image, 'vhdx');
    const independent = await independentList(raw);
    const lists: Buffer[] = [];
    for (const threads of [1, 3]) {
      const result = await synthvhd(['blocklist', 'create', '--threads', String(threads), '--json', image]);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect((JSON.parse(result.stdout) as { workers: number }).workers).toBe(threads);
      const list = await readFile(`${image}.blocklist.bin`);
      await rm(`${image}.blocklist.bin`);
      lists.push(list);
    }
    expect(lists[0]?.equals(independent)).toBe(true);
    expect(lists[1]?.equals(independent)).toBe(true);
    // A list of the whole disk, and not one of zero blocks that would match anything.
    const blocks = Math.ceil(disk.diskSize / (2 * MiB));
    expect(independent.length).toBe(16 * blocks);
    expect(new Set(Array.from({ length: blocks }, (_, block) => independent.subarray(block * 16, block * 16 + 16).toString('hex'))).size).toBeGreaterThan(8);
  });

  it('refuses a thread count that is not a number from 1 to 64 (exit 2, one line), writing no list', async () => {
    const image = join(work, 'threads-bad.img');
    await writeFile(image, Buffer.alloc(4 * MiB, 1));
    for (const bad of ['0', '65']) {
      const result = await synthvhd(['blocklist', 'create', '--threads', bad, image]);
      expect(result.code, bad).toBe(2);
      expect(oneLine(result.stderr)).toContain(`--threads: ${bad} is not a number from 1 to 64`);
      await expect(stat(`${image}.blocklist.bin`)).rejects.toThrow();
    }
  });
});
