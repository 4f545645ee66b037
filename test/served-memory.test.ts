// SPDX-License-Identifier: MIT
/**
 * Issue #22: a walk of a whole share (Explorer, `ls -lR`) looks up every backup folder, and the
 * daemon's memory must stay within the disk cache's bound. The witness is the garbage collector,
 * not our own counters: a disk the mount no longer holds is collected (its WeakRef clears). Before
 * the fix, the diff side kept every disk looked at alive outside the cache: a parent cache of
 * ServedDisks and one pending background-refresh closure per folder.
 */
import { link, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, inject, it } from 'vitest';
import type { FixtureVolume } from '../fixtures/build-fixtures.js';
import { SourceFiles } from '../src/extents/source-files.js';
import { ServedDiffs } from '../src/fuse/served-diffs.js';
import { type ServedDisk, ServedDisks } from '../src/fuse/served-disks.js';
import { fixtureDisk } from './helpers/fixture-disk.js';

const fixtures = inject('fixtures');
const RUNS = 24;

setFlagsFromString('--expose_gc');
const collectGarbage = runInNewContext('gc') as () => void;

/** Lets WeakRefs made in this job clear (they are kept until the job ends), then collects. */
async function collected(): Promise<void> {
  await new Promise((resolvePromise) => setTimeout(resolvePromise, 0));
  collectGarbage();
  await new Promise((resolvePromise) => setTimeout(resolvePromise, 0));
  collectGarbage();
}

/**
 * `client/<day>-0058_Image_ESP` and `client/<day>-0100_Image_C` for every run, hard links to one
 * private (sparse) copy of a fixture run: linking the shared fixtures themselves would change
 * their ctime, which the suite's fixture fingerprint (test/global-setup.ts) rightly reports.
 */
async function runsOfOneClient(root: string, scratch: string, fixtureEsp: FixtureVolume, fixtureC: FixtureVolume): Promise<string[]> {
  const privateVolume = (volume: FixtureVolume, name: string): FixtureVolume => {
    const backupDir = join(scratch, name);
    execFileSync('cp', ['-r', '--sparse=always', volume.backupDir, backupDir]);
    return { ...volume, backupDir, rawPath: join(backupDir, basename(volume.rawPath)) };
  };
  const esp = privateVolume(fixtureEsp, 'esp');
  const c = privateVolume(fixtureC, 'c');
  const folders: string[] = [];
  for (let run = 1; run <= RUNS; run++) {
    const day = `2411${String(run).padStart(2, '0')}`;
    for (const [volume, letter, timestamp] of [[esp, 'ESP', `${day}-0058`], [c, 'C', `${day}-0100`]] as const) {
      const folder = join(root, 'client', `${timestamp}_Image_${letter}`);
      await mkdir(folder, { recursive: true });
      const template = basename(volume.rawPath);
      for (const name of await readdir(volume.backupDir)) {
        if (name.startsWith(template)) await link(join(volume.backupDir, name), join(folder, `Image_${letter}_${timestamp}.raw${name.slice(template.length)}`));
      }
      if (letter === 'C') folders.push(folder);
    }
  }
  return folders;
}

/**
 * Runs `work` on a backup root of RUNS runs of one client (runsOfOneClient: hard links to a
 * private copy of the uefi-gpt-run1 fixture run), with a source table; removes it all after.
 */
async function withRunsOfOneClient(work: (root: string, folders: readonly string[], sources: SourceFiles) => Promise<void>): Promise<void> {
  const disk = fixtureDisk(fixtures, 'uefi-gpt-run1');
  const esp = disk.volumes.find((volume) => volume.letter === 'ESP');
  const c = disk.volumes.find((volume) => volume.letter === 'C');
  if (esp === undefined || c === undefined) throw new Error('uefi-gpt-run1 has no ESP and C backups');
  const scratch = await mkdtemp(join(tmpdir(), 'synthvhd-walk-'));
  const root = join(scratch, 'backups');
  const sources = new SourceFiles();
  try {
    await work(root, await runsOfOneClient(root, scratch, esp, c), sources);
  } finally {
    await sources.close();
    await rm(scratch, { recursive: true, force: true });
  }
}

describe('mount memory during a walk of every folder', () => {
  it('keeps no disk alive beyond the disk cache, while diffs wait and after they are planned', async () => {
    await withRunsOfOneClient(async (root, folders, sources) => {
      const probe = await new ServedDisks(sources, () => undefined).get(folders[0] ?? '', { wait: true });
      if (probe === undefined) throw new Error('the fixture disk is not served');
      // Room for about three disks in each cache.
      const room = 3 * probe.memoryBytes() + 1024;
      const disks = new ServedDisks(sources, () => undefined, { revalidateMs: 60_000, maxBytes: room });
      const diffs = new ServedDiffs(disks, root, root, { maxBytes: 3 * room });
      const alive: WeakRef<ServedDisk>[] = [];
      let last: ServedDisk | undefined;
      for (const folder of folders) {
        last = await disks.get(folder, { wait: true });
        if (last === undefined) throw new Error(`${folder}: no disk`);
        expect(diffs.get(last)).toBeUndefined(); // asks for its diff, in the background
        alive.push(new WeakRef(last));
      }
      const lastFolder = last?.folder;
      last = undefined;
      await collected();
      const whileWaiting = alive.filter((ref) => ref.deref() !== undefined).length;
      expect(whileWaiting).toBeLessThanOrEqual(6);

      // The second run's diff is planned last (latest first): once it is there, all were.
      const second = folders[1] ?? '';
      for (let attempt = 0; attempt < 600; attempt++) {
        const newer = await disks.get(second, { wait: true });
        if (newer !== undefined && diffs.get(newer) !== undefined) break;
        await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
      }
      const secondDisk = await disks.get(second, { wait: true });
      expect(secondDisk !== undefined && diffs.get(secondDisk) !== undefined, `${second}: its diff was never planned`).toBe(true);
      await collected();
      const afterPlanning = alive.filter((ref) => ref.deref() !== undefined).length;
      expect(afterPlanning).toBeLessThanOrEqual(8);
      expect(lastFolder).toBe(folders.at(-1));
    });
  });

  // The caches are bounded by what each disk says it holds (memoryBytes): that figure is checked
  // here against what holding the disks really costs, measured by V8 after collecting garbage.
  it("a disk's memoryBytes() is not below what holding it costs the heap (measured after GC)", async () => {
    await withRunsOfOneClient(async (_root, folders, sources) => {
      // Warm up: modules, the addon and the source table allocate once, not per disk.
      const warm = new ServedDisks(sources, () => undefined, { revalidateMs: 60_000 });
      const probe = await warm.get(folders[0] ?? '', { wait: true });
      if (probe === undefined) throw new Error('the fixture disk is not served');
      const claimed = probe.memoryBytes();
      const used = (): number => {
        const usage = process.memoryUsage();
        return usage.heapUsed + usage.arrayBuffers;
      };
      await collected();
      const before = used();
      const roomy = new ServedDisks(sources, () => undefined, { revalidateMs: 60_000, maxBytes: 1024 ** 3 });
      const held: ServedDisk[] = [];
      for (const folder of folders) {
        const served = await roomy.get(folder, { wait: true });
        if (served === undefined) throw new Error(`${folder}: no disk`);
        held.push(served);
      }
      await collected();
      const perDisk = (used() - before) / held.length;
      process.stdout.write(`served-memory: memoryBytes() ${claimed} B, measured ${Math.round(perDisk)} B per held disk\n`);
      // Every disk is distinct (its own folder) and alive; the claim may overcount, never be far below.
      expect(new Set(held).size).toBe(folders.length);
      expect(claimed).toBeGreaterThanOrEqual(0.5 * perDisk);
    });
  });
});
