// SPDX-License-Identifier: MIT
/**
 * `synthvhd diff` on loop btrfs with ≥ 10 GiB of data, made as urBackup makes a RAW incremental
 * (a reflink copy of the older `.raw`, then 1 % of its chunks rewritten, `.raw.hash` updated):
 * the kernel counts the volumes not being read, the changed chunks are exactly the rewritten
 * ones, the diff takes a few MiB of new space because its payload is cloned, and libvhdi
 * (vhdiinfo, vhdimount over the parent) reads the newer volume's bytes through it. (Its speed is
 * measured by `bench diff`.)
 */
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeIncrementalPair } from '../bench/lib/incremental.js';
import { synthvhdWitnessed } from './helpers/io-witness.js';
import { usedBytes, withLoopFs } from './helpers/loop-fs.js';
import { run, runOk, synthvhd } from './helpers/run.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const CHUNK = 512 * 1024;
/** bench/lib/raw-backup.ts: the volume's partition starts at LBA 2048; docs/urbackup-formats.md §2.2: the .raw's volume starts at 512 KiB. */
const PARTITION_OFFSET = MiB;
const RAW_HEADER = 512 * 1024;

/** Compares `chunks` (volume chunk indexes) of the disk libvhdi serves with the newer `.raw`. */
async function compareChunks(served: string, newerRaw: string, chunks: readonly number[]): Promise<void> {
  const disk = await open(served, 'r');
  const raw = await open(newerRaw, 'r');
  try {
    const got = Buffer.alloc(CHUNK);
    const want = Buffer.alloc(CHUNK);
    for (const index of chunks) {
      expect((await disk.read(got, 0, CHUNK, PARTITION_OFFSET + index * CHUNK)).bytesRead).toBe(CHUNK);
      expect((await raw.read(want, 0, CHUNK, RAW_HEADER + index * CHUNK)).bytesRead).toBe(CHUNK);
      if (!got.equals(want)) throw new Error(`libvhdi reads chunk ${index} of the diff's disk differently from the newer .raw`);
    }
  } finally {
    await disk.close();
    await raw.close();
  }
}

describe('synthvhd diff of a 10 GiB incremental on btrfs', () => {
  it('reads nothing, finds exactly the rewritten chunks, costs a few MiB, and libvhdi reads it back', async () => {
    await withLoopFs('btrfs', 64 * GiB, async (mountDir) => {
      const { older, newer, dataChunks, rewritten, rewrittenChunks } = await makeIncrementalPair(join(mountDir, 'backups'), { volumeLength: 12 * GiB, dataBytes: 10 * GiB, seedBytes: 256 * MiB });

      const parent = join(mountDir, 'older.vhdx');
      const child = join(mountDir, 'diff.vhdx');
      expect((await synthvhd(['materialize', older.folder, '-o', parent])).code).toBe(0);
      const before = await usedBytes(mountDir);
      // --windows-path: libvhdi finds a parent only through absolute_win32_path (README "Blocklists").
      const result = await synthvhdWitnessed(['diff', older.folder, newer.folder, '-o', child, '--parent', parent, '--windows-path', 'D:\\restore', '--json']);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      const report = JSON.parse(result.stdout) as { volumes: { changedChunks: number }[] };
      const newSpace = (await usedBytes(mountDir)) - before;
      expect(report.volumes[0]?.changedChunks).toBe(rewritten);
      // The kernel's count for the whole process: the program, both 768 KiB .raw.hash files and
      // their trust samples; not the 10 GiB of data, not even the 100 MiB rewritten (cloned).
      expect(result.io.rchar).toBeLessThan(32 * MiB);
      expect(newSpace).toBeLessThanOrEqual(8 * MiB);

      // libvhdi, not our reader: the child names the parent's identifier and reads as the newer disk.
      const parentId = /Identifier\s*:\s*(\S+)/.exec((await runOk('vhdiinfo', [parent])).stdout)?.[1];
      expect(parentId).toMatch(/^[0-9a-f-]{36}$/);
      const childInfo = (await runOk('vhdiinfo', [child])).stdout;
      expect(childInfo).toMatch(/Disk type\s*:\s*Differential/);
      expect(/Parent identifier\s*:\s*(\S+)/.exec(childInfo)?.[1]).toBe(parentId);
      const mountpoint = await mkdtemp(join(tmpdir(), 'synthvhd-vhdimount-'));
      try {
        await runOk('vhdimount', [child, mountpoint]);
        // vhdimount shows the chain: vhdi1 is the parent, vhdi2 the child over it.
        expect((await readdir(mountpoint)).filter((name) => /^vhdi\d+$/.test(name)).sort()).toEqual(['vhdi1', 'vhdi2']);
        expect(rewrittenChunks).toHaveLength(rewritten);
        // Every rewritten chunk (from the child), the chunk after each (from the parent), and
        // chunks past the data (zeros) read as the newer volume holds them.
        const unchanged = rewrittenChunks.map((index) => index + 1).filter((index) => !rewrittenChunks.includes(index));
        const pastData = [dataChunks, dataChunks + 1, (12 * GiB) / CHUNK - 1];
        await compareChunks(join(mountpoint, 'vhdi2'), newer.raw, [...rewrittenChunks, ...unchanged, ...pastData]);
      } finally {
        await run('fusermount', ['-u', mountpoint]);
        await rm(mountpoint, { recursive: true, force: true });
      }
    });
  });
});
