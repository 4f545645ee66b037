// SPDX-License-Identifier: MIT
/**
 * Which 512 KiB chunks changed between the UEFI fixture's two C: backups, found from .raw.hash,
 * shared extents or data, checked against the truth images compared byte by byte here; and
 * `synthvhd verify` finding a .raw.hash that disagrees with its data.
 */
import { open, mkdtemp, rm, readFile, stat, writeFile, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk, FixtureVolume } from '../fixtures/build-fixtures.js';
import { compareVolumes } from '../src/diff/changed-chunks.js';
import { loadVolume } from '../src/urbackup/load-volume.js';
import { readBackupFolder, isVolumeBackup, type VolumeBackup } from '../src/urbackup/backup-tree.js';
import { withLoopFs } from './helpers/loop-fs.js';
import { REPO_ROOT, runOk, synthvhd } from './helpers/run.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { nodeWitnessed, type KernelIo } from './helpers/io-witness.js';

const fixtures = inject('fixtures');
const CHUNK = 512 * 1024;
/** What the trust check of one `.raw.hash` may re-read: a sample of its data chunks. */
const TRUST_SAMPLE_BYTES = 20 * CHUNK;
/** The program itself: its JavaScript, the `.raw.mbr` and `.raw.hash` files. */
const PROGRAM_BYTES = 4 * 1024 * 1024;
const COMPARE_CHILD = join(REPO_ROOT, 'dist', 'test', 'helpers', 'compare-volumes-child.js');
let work: string;
let expectedChanged: number[];

function diskByName(name: string): FixtureDisk {
  return fixtureDisk(fixtures, name);
}

/** Independently: the 512 KiB chunks of C:'s volume that differ between the two truth images. */
async function truthChangedChunks(): Promise<number[]> {
  const run1 = diskByName('uefi-gpt-run1');
  const run2 = diskByName('uefi-gpt-run2');
  const a = await open(run1.truthImage, 'r');
  const b = await open(run2.truthImage, 'r');
  try {
    const changed: number[] = [];
    const volume = run2.anchor;
    const bufferA = Buffer.alloc(CHUNK);
    const bufferB = Buffer.alloc(CHUNK);
    for (let index = 0; index * CHUNK < volume.volumeLength; index++) {
      const length = Math.min(CHUNK, volume.volumeLength - index * CHUNK);
      await a.read(bufferA, 0, length, volume.partitionOffset + index * CHUNK);
      await b.read(bufferB, 0, length, volume.partitionOffset + index * CHUNK);
      if (!bufferA.subarray(0, length).equals(bufferB.subarray(0, length))) changed.push(index);
    }
    return changed;
  } finally {
    await a.close();
    await b.close();
  }
}

async function backupOf(folder: string): Promise<VolumeBackup> {
  const entry = await readBackupFolder('client', folder, basename(folder));
  if (entry === undefined || !isVolumeBackup(entry)) throw new Error(`${folder} is not a backup`);
  return entry;
}

/** compareVolumes in a child process, with what the kernel counted it reading. */
/** The run-1 C: backup copied into `mountDir`, and a reflink copy of it in `mountDir/newer`. */
async function reflinkCopy(mountDir: string): Promise<{ olderDir: string; newerDir: string; newerRaw: string }> {
  const olderDir = await copyBackup(diskByName('uefi-gpt-run1').anchor, mountDir);
  const newerDir = join(mountDir, 'newer', basename(olderDir));
  await runOk('mkdir', ['-p', join(mountDir, 'newer')]);
  await runOk('cp', ['-a', '--reflink=always', olderDir, newerDir]);
  return { olderDir, newerDir, newerRaw: join(newerDir, basename(diskByName('uefi-gpt-run1').anchor.rawPath)) };
}

async function compareWitnessed(olderDir: string, newerDir: string): Promise<{ result: { changed: number[] }; io: KernelIo }> {
  const child = await nodeWitnessed(COMPARE_CHILD, [olderDir, newerDir]);
  expect(child.stderr).toBe('');
  expect(child.code).toBe(0);
  return { result: JSON.parse(child.stdout) as { changed: number[] }, io: child.io };
}

/** Bytes the .raw files of these backup folders' volumes occupy (what reading their data costs). */
async function allocatedBytes(rawPaths: readonly string[]): Promise<number> {
  return (await Promise.all(rawPaths.map(async (path) => (await stat(path)).blocks * 512))).reduce((a, b) => a + b, 0);
}

async function copyBackup(volume: FixtureVolume, target: string): Promise<string> {
  await runOk('cp', ['-a', '--sparse=always', volume.backupDir, target]);
  return join(target, basename(volume.backupDir));
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-diff-'));
  expectedChanged = await truthChangedChunks();
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('changed chunks between two backups of C:', () => {
  it('from the .raw.hash files: exactly the chunks the fixture changed, reading almost nothing', async () => {
    expect(expectedChanged.length).toBeGreaterThan(0);
    const older = await loadVolume(await backupOf(diskByName('uefi-gpt-run1').anchor.backupDir));
    const newer = await loadVolume(await backupOf(diskByName('uefi-gpt-run2').anchor.backupDir));
    const result = await compareVolumes(older, newer);
    expect(result.changed).toEqual(expectedChanged);
    expect(result.notes).toEqual([]);
    // The kernel's count, in a process of its own: the two trust samples and the program, not the data.
    const witnessed = await compareWitnessed(diskByName('uefi-gpt-run1').anchor.backupDir, diskByName('uefi-gpt-run2').anchor.backupDir);
    expect(witnessed.result.changed).toEqual(expectedChanged);
    const bound = 2 * TRUST_SAMPLE_BYTES + PROGRAM_BYTES;
    expect(bound).toBeLessThan((await allocatedBytes([older.backup.rawPath, newer.backup.rawPath])) / 4);
    expect(witnessed.io.rchar).toBeLessThanOrEqual(bound);
  });

  it('without .raw.hash, or with one that lies about a hole, it compares data and says so', async () => {
    const target = await mkdtemp(join(work, 'nohash-'));
    const olderDir = await copyBackup(diskByName('uefi-gpt-run1').anchor, target);
    const newerDir = await copyBackup(diskByName('uefi-gpt-run2').anchor, target);
    const older = await loadVolume(await backupOf(olderDir));
    const newer = await loadVolume(await backupOf(newerDir));
    await unlink(`${older.backup.rawPath}.hash`);
    let result = await compareVolumes(older, newer);
    expect(result.changed).toEqual(expectedChanged);
    expect(result.notes.join('\n')).toMatch(/\.raw\.hash: cannot read .*comparing data instead/);
    // A .raw.hash whose last chunk (a hole in the .raw) claims data: distrusted, never a wrong diff.
    await runOk('cp', [`${newer.backup.rawPath}.hash`, `${older.backup.rawPath}.hash`]);
    const hashes = await readFile(`${newer.backup.rawPath}.hash`);
    hashes.fill(7, hashes.length - 32);
    await writeFile(`${newer.backup.rawPath}.hash`, hashes);
    result = await compareVolumes(older, newer);
    expect(result.changed).toEqual(expectedChanged);
    expect(result.notes.join('\n')).toMatch(/not trusted, comparing data instead/);
  });

  it('on btrfs, extents a reflink copy still shares are unchanged without reading them', async () => {
    await withLoopFs('btrfs', 1024 * 1024 * 1024, async (mountDir) => {
      // The way urBackup makes an incremental: a reflink copy, then the changed blocks written.
      const { olderDir, newerDir, newerRaw } = await reflinkCopy(mountDir);
      const run2Raw = diskByName('uefi-gpt-run2').anchor.rawPath;
      for (const index of expectedChanged) {
        const offset = 524288 + index * CHUNK;
        await runOk('dd', [`if=${run2Raw}`, `of=${newerRaw}`, 'bs=512K', `skip=${offset / CHUNK}`, `seek=${offset / CHUNK}`, 'count=1', 'conv=notrunc', 'status=none']);
      }
      await unlink(`${newerRaw}.hash`);
      // The kernel's count: both sides of the rewritten chunks (the only ones not shared any
      // more), the older .raw.hash's trust sample and the program; not the shared data.
      const { result, io } = await compareWitnessed(olderDir, newerDir);
      expect(result.changed).toEqual(expectedChanged);
      const bound = (expectedChanged.length * 2 + 2) * CHUNK + TRUST_SAMPLE_BYTES + PROGRAM_BYTES;
      expect(bound).toBeLessThan((await allocatedBytes([join(olderDir, basename(newerRaw)), newerRaw])) / 4);
      expect(io.rchar).toBeLessThanOrEqual(bound);
    });
  });

  it('on btrfs, a volume whose every extent is still shared is decided without reading either backup (not even the hash sample)', async () => {
    await withLoopFs('btrfs', 1024 * 1024 * 1024, async (mountDir) => {
      // An unchanged volume of a reflinked incremental (an ESP, most runs), .raw.hash files kept.
      const { olderDir, newerDir, newerRaw } = await reflinkCopy(mountDir);
      const { result, io } = await compareWitnessed(olderDir, newerDir);
      expect(result.changed).toEqual([]);
      // Trusting the two .raw.hash files alone would read 2 × 16 chunks (16 MiB).
      expect(2 * TRUST_SAMPLE_BYTES).toBeGreaterThan(PROGRAM_BYTES * 4);
      expect(io.rchar).toBeLessThanOrEqual(PROGRAM_BYTES);
      // 4 KiB written into the first chunk, whose other blocks stay shared or holes: changed.
      await writeFile(join(mountDir, 'block'), randomBytes(4096));
      await runOk('dd', [`if=${join(mountDir, 'block')}`, `of=${newerRaw}`, 'bs=4096', `seek=${(524288 + 4096) / 4096}`, 'count=1', 'conv=notrunc', 'status=none']);
      await unlink(`${newerRaw}.hash`);
      expect((await compareWitnessed(olderDir, newerDir)).result.changed).toEqual([0]);
    });
  });
});

describe('synthvhd verify', () => {
  it('accepts a good backup and names the chunk a wrong .raw.hash gets wrong', async () => {
    const good = await synthvhd(['verify', diskByName('uefi-gpt-run1').anchor.backupDir]);
    expect(good.code).toBe(0);
    expect(good.stdout).toMatch(/: \d+ chunks of 512 KiB, \d+ read, .*: OK\n$/);
    const target = await mkdtemp(join(work, 'verify-'));
    const copy = await copyBackup(diskByName('uefi-gpt-run1').anchor, target);
    const hashPath = join(copy, `${basename(diskByName('uefi-gpt-run1').anchor.rawPath)}.hash`);
    const hashes = await readFile(hashPath);
    hashes[3 * 32] = (hashes[3 * 32] ?? 0) ^ 1;
    await writeFile(hashPath, hashes);
    const bad = await synthvhd(['verify', copy]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('1 mismatching: 3');
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toContain(`${hashPath}: 1 chunk(s) of 512 KiB do not match the data (first: chunk 3`);
  });
});
