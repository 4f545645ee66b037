// SPDX-License-Identifier: MIT
/**
 * `synthvhd diff`: the UEFI fixture's second run as a differencing VHDX over the first run's
 * .vhdx. libvhdi (vhdiinfo, vhdimount with the parent) and our own reader must read it as the
 * newer disk; it holds exactly the chunks the fixture changed; on btrfs its payload is cloned.
 */
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { openDiskImage } from '../src/container/open-image.js';
import { readAt } from '../src/extents/read-at.js';
import { SourceFiles } from '../src/extents/source-files.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { usedBytes, withLoopFs } from './helpers/loop-fs.js';
import { run, runOk, synthvhd } from './helpers/run.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { synthvhdWitnessed } from './helpers/io-witness.js';

const fixtures = inject('fixtures');
const CHUNK = 512 * 1024;
const MiB = 1024 * 1024;
/** What the trust check of one `.raw.hash` may re-read: a sample of its data chunks. */
const TRUST_SAMPLE_BYTES = 20 * CHUNK;
/** The program itself: its JavaScript, the `.raw.mbr`/`.raw.hash` files, the parent's headers. */
const PROGRAM_BYTES = 4 * MiB;
let work: string;
let expectedNewer: string;

function diskByName(name: string): FixtureDisk {
  return fixtureDisk(fixtures, name);
}

interface DiffReport {
  changedBytes: number;
  clonedBytes: number;
  volumes: { letter: string; changedChunks: number; decidedByHashes: number; bytesRead: number }[];
  notes: string[];
}

async function diffJson(older: string, newer: string, output: string, parent: string): Promise<DiffReport> {
  const result = await synthvhd(['diff', older, newer, '-o', output, '--parent', parent, '--json']);
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout) as DiffReport;
}

/** Chunks of C: that differ between the two truth images (compared here, byte by byte). */
async function truthChangedChunkCount(): Promise<number> {
  const volume = diskByName('uefi-gpt-run2').anchor;
  const a = await open(diskByName('uefi-gpt-run1').truthImage, 'r');
  const b = await open(diskByName('uefi-gpt-run2').truthImage, 'r');
  try {
    let changed = 0;
    const x = Buffer.alloc(CHUNK);
    const y = Buffer.alloc(CHUNK);
    for (let offset = 0; offset < volume.volumeLength; offset += CHUNK) {
      const length = Math.min(CHUNK, volume.volumeLength - offset);
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

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-bdiff-'));
  expectedNewer = join(work, 'newer.img');
  await assembleExpectedDisk(diskByName('uefi-gpt-run2'), expectedNewer);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('synthvhd diff', () => {
  it('writes exactly the changed chunks; libvhdi and our reader see the newer disk through it', async () => {
    const older = diskByName('uefi-gpt-run1').anchor.backupDir;
    const newer = diskByName('uefi-gpt-run2').anchor.backupDir;
    const parent = join(work, 'parent.vhdx');
    const child = join(work, 'child.vhdx');
    expect((await synthvhd(['materialize', older, '-o', parent])).code).toBe(0);
    const witnessed = await synthvhdWitnessed(['diff', older, newer, '-o', child, '--parent', parent, '--windows-path', '//nas/restore', '--json']);
    expect(witnessed.stderr).toBe('');
    expect(witnessed.code).toBe(0);
    const report = JSON.parse(witnessed.stdout) as DiffReport;
    const changedChunks = await truthChangedChunkCount();
    const c = report.volumes.find((volume) => volume.letter === 'C');
    expect(c?.changedChunks).toBe(changedChunks);
    expect(report.volumes.find((volume) => volume.letter === 'ESP')?.changedChunks).toBe(0);
    // The kernel's count: the changed chunks (copied into the child on this file system), each
    // backup's .raw.hash trust sample and the program; never the volumes' data, which comparing
    // data would read in full (their allocated bytes, counted by stat here).
    const volumes = [diskByName('uefi-gpt-run1'), diskByName('uefi-gpt-run2')].flatMap((disk) => disk.volumes);
    const allocated = (await Promise.all(volumes.map(async (volume) => (await stat(volume.rawPath)).blocks * 512))).reduce((a, b) => a + b, 0);
    const bound = changedChunks * CHUNK + volumes.length * TRUST_SAMPLE_BYTES + PROGRAM_BYTES;
    expect(bound).toBeLessThan(allocated / 4);
    expect(witnessed.io.rchar).toBeLessThanOrEqual(bound);

    const parentInfo = await runOk('vhdiinfo', [parent]);
    const parentId = /Identifier\s*:\s*(\S+)/.exec(parentInfo.stdout)?.[1];
    const childInfo = await runOk('vhdiinfo', [child]);
    expect(childInfo.stdout).toMatch(/Disk type\s*:\s*Differential/);
    // --windows-path names the parent's folder as Windows reaches it (MS-VHDX 2.6.2.6.3 form).
    expect(childInfo.stdout).toContain('Parent filename\t\t: \\\\?\\UNC\\nas\\restore\\parent.vhdx');
    expect(/Parent identifier\s*:\s*(\S+)/.exec(childInfo.stdout)?.[1]).toBe(parentId);
    expect(parentId).toMatch(/^[0-9a-f-]{36}$/);

    const mountpoint = await mkdtemp(join(tmpdir(), 'synthvhd-vhdimount-'));
    try {
      await runOk('vhdimount', [child, mountpoint]);
      // vhdimount shows the chain: vhdi1 is the parent, the last vhdiN the child.
      const entries = (await readdir(mountpoint)).filter((name) => /^vhdi\d+$/.test(name)).sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
      expect(entries.length).toBe(2);
      const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(mountpoint, entries.at(-1) ?? 'vhdi2'), expectedNewer]);
      expect(compare.stdout + compare.stderr).toContain('Images are identical');
    } finally {
      await run('fusermount', ['-u', mountpoint]);
      await rm(mountpoint, { recursive: true, force: true });
    }

    const opened = await openDiskImage(child);
    expect(opened.type).toBe('differencing');
    const sources = new SourceFiles();
    const expectedHandle = await open(expectedNewer, 'r');
    try {
      const ours = Buffer.alloc(4 * 1024 * 1024);
      const theirs = Buffer.alloc(ours.length);
      for (let position = 0; position < opened.layout.size; position += ours.length) {
        const count = await readAt(opened.layout, sources, position, ours);
        await expectedHandle.read(theirs, 0, count, position);
        if (!ours.subarray(0, count).equals(theirs.subarray(0, count))) throw new Error(`our reader differs at ${position}`);
      }
    } finally {
      await expectedHandle.close();
      await sources.close();
    }
  });

  it('refuses a parent that is not the older backup, and writes nothing', async () => {
    const older = diskByName('uefi-gpt-run1').anchor.backupDir;
    const newer = diskByName('uefi-gpt-run2').anchor.backupDir;
    const wrongParent = join(work, 'wrong.vhdx');
    expect((await synthvhd(['materialize', newer, '-o', wrongParent])).code).toBe(0);
    const output = join(work, 'refused.vhdx');
    const result = await synthvhd(['diff', older, newer, '-o', output, '--parent', wrongParent]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${wrongParent}: is not the older backup's disk: its DataWriteGuid is`);
    await expect(stat(output)).rejects.toThrow();
  });

  it('on btrfs the diff of a reflink incremental is cloned and costs almost no space', async () => {
    await withLoopFs('btrfs', 1024 * 1024 * 1024, async (mountDir) => {
      const backups = join(mountDir, 'backups', 'win11-uefi');
      await runOk('mkdir', ['-p', backups]);
      for (const name of ['uefi-gpt-run1', 'uefi-gpt-run2']) {
        for (const volume of diskByName(name).volumes) await runOk('cp', ['-a', '--sparse=always', volume.backupDir, backups]);
      }
      const older = join(backups, basename(diskByName('uefi-gpt-run1').anchor.backupDir));
      const newer = join(backups, basename(diskByName('uefi-gpt-run2').anchor.backupDir));
      const parent = join(mountDir, 'parent.vhdx');
      expect((await synthvhd(['materialize', older, '-o', parent])).code).toBe(0);
      const before = await usedBytes(mountDir);
      const report = await diffJson(older, newer, join(mountDir, 'child.vhdx'), parent);
      const newSpace = (await usedBytes(mountDir)) - before;
      expect(report.clonedBytes).toBeGreaterThan(0);
      expect(newSpace).toBeLessThan(report.changedBytes / 2 + 4 * 1024 * 1024);
    });
  });
});
