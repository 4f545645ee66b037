// SPDX-License-Identifier: MIT
/**
 * Blocklists in the mount (`mount --blocklist-cache DIR [--blocklists]`), judged independently:
 * the served `Image_<L>_<ts>.disk.vhdx.blocklist.bin` must equal the list computed here with node
 * crypto over the disk assembled by test/helpers/expected-disk.ts, be no older than the virtual
 * disk, and equal the `.disk.vhd.blocklist.bin`. With `--blocklists` a list appears on its own
 * once complete (never a partial file), only for folders that were looked at. A cache dir inside
 * the backup root is refused with one line, and nothing is created there.
 */
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { FixtureDisk } from '../fixtures/build-fixtures.js';
import { independentList } from './helpers/blocklist.js';
import { assembleExpectedDisk } from './helpers/expected-disk.js';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { startMount, tempMountpoint } from './helpers/fuse-mount.js';
import { synthvhd } from './helpers/run.js';

const fixtures = inject('fixtures');
let work: string;

function diskByName(name: string): FixtureDisk {
  return fixtureDisk(fixtures, name);
}

function servedFolder(mountpoint: string, disk: FixtureDisk): string {
  return join(mountpoint, relative(fixtures.backupRoot, disk.anchor.backupDir));
}

function diskName(disk: FixtureDisk, format: 'vhdx' | 'vhd'): string {
  return `Image_${disk.anchor.letter}_${disk.anchor.timestamp}.disk.${format}`;
}

async function expectedList(disk: FixtureDisk): Promise<Buffer> {
  const raw = join(work, `${disk.name}.img`);
  await assembleExpectedDisk(disk, raw);
  try {
    return await independentList(raw);
  } finally {
    await rm(raw, { force: true });
  }
}

/** Every file under `dir`, relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => relative(dir, join(entry.parentPath, entry.name))).sort();
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'synthvhd-fuse-blocklists-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('synthvhd mount --blocklist-cache', () => {
  it('serves the list `blocklist create --cache-dir` made: right bytes, not older than the disk, shared by .vhdx and .vhd', async () => {
    const disk = diskByName('uefi-gpt-run1');
    const cache = join(work, 'cache-created');
    const created = await synthvhd(['blocklist', 'create', '--cache-dir', cache, disk.anchor.backupDir]);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const expected = await expectedList(disk);

    const mountpoint = await tempMountpoint();
    const mount = await startMount(fixtures.backupRoot, mountpoint.path, ['--blocklist-cache', cache]);
    try {
      const folder = servedFolder(mountpoint.path, disk);
      const names = await readdir(folder);
      expect(names).toContain(`${diskName(disk, 'vhdx')}.blocklist.bin`);
      expect(names).toContain(`${diskName(disk, 'vhd')}.blocklist.bin`);
      const vhdxList = join(folder, `${diskName(disk, 'vhdx')}.blocklist.bin`);
      const vhdList = join(folder, `${diskName(disk, 'vhd')}.blocklist.bin`);
      const info = await stat(vhdxList);
      expect(info.size).toBe(expected.length);
      expect(info.mode & 0o777).toBe(0o444);
      expect(info.mtimeMs).toBeGreaterThanOrEqual((await stat(join(folder, diskName(disk, 'vhdx')))).mtimeMs);
      expect(await readFile(vhdxList)).toEqual(expected);
      expect(await readFile(vhdList)).toEqual(expected);
      // Read-only like everything else in the mount.
      await expect(readFile(vhdxList, { flag: 'r+' })).rejects.toMatchObject({ code: 'EROFS' });

      // A disk whose list is not in the cache has none, and without --blocklists none appears.
      const other = diskByName('uefi-gpt-run2');
      const otherFolder = servedFolder(mountpoint.path, other);
      expect((await readdir(otherFolder)).filter((name) => name.endsWith('.blocklist.bin'))).toEqual([]);
      await expect(stat(join(otherFolder, `${diskName(other, 'vhdx')}.blocklist.bin`))).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await filesUnder(cache)).toHaveLength(1);
    } finally {
      await mount.stop();
      await mountpoint.cleanup();
    }
  });

  it('--blocklists computes a missing list in the background; it appears complete, only for folders looked at', async () => {
    const disk = diskByName('uefi-gpt-run2');
    const cache = join(work, 'cache-empty');
    const expected = await expectedList(disk);
    const mountpoint = await tempMountpoint();
    const mount = await startMount(fixtures.backupRoot, mountpoint.path, ['--blocklist-cache', cache, '--blocklists']);
    try {
      const folder = servedFolder(mountpoint.path, disk);
      const name = `${diskName(disk, 'vhdx')}.blocklist.bin`;
      const started = performance.now();
      let seen = false;
      while (!seen) {
        if (performance.now() - started > 60_000) throw new Error(`no ${name} after 60 s\n${mount.stderr()}`);
        const names = await readdir(folder);
        seen = names.includes(name);
        // Whenever a list is listed or stat()ed, it is the whole list: never a partial file.
        for (const listed of names.filter((entry) => entry.endsWith('.blocklist.bin'))) {
          expect((await stat(join(folder, listed))).size).toBe(expected.length);
        }
        if (!seen) await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
      }
      expect(await readFile(join(folder, name))).toEqual(expected);
      expect(await readFile(join(folder, `${diskName(disk, 'vhd')}.blocklist.bin`))).toEqual(expected);
      expect((await stat(join(folder, name))).mtimeMs).toBeGreaterThanOrEqual((await stat(join(folder, diskName(disk, 'vhdx')))).mtimeMs);
      // The mount never scanned the root: only the folder looked at (and the backups its
      // composition looked at) got lists, all in the cache, none in the backup tree.
      const cached = await filesUnder(cache);
      expect(cached.every((path) => path.startsWith(`${disk.client}/`))).toBe(true);
      expect(cached.some((path) => path.startsWith(`${disk.client}/${basename(disk.anchor.backupDir)}/`))).toBe(true);
      expect(mount.stderr()).toBe('');
    } finally {
      await mount.stop();
      await mountpoint.cleanup();
    }
  });

  it('refuses a cache dir inside the backup root (one line, exit 2, nothing created) and --blocklists without a cache', async () => {
    const mountpoint = await tempMountpoint();
    try {
      const inside = join(fixtures.backupRoot, 'blocklist-cache');
      for (const extra of [['--blocklist-cache', inside], ['--blocklist-cache', inside, '--blocklists'], ['--blocklists']]) {
        const result = await synthvhd(['mount', ...extra, fixtures.backupRoot, mountpoint.path]);
        expect(result.code).toBe(2);
        expect(result.stdout).toBe('');
        expect(result.stderr.split('\n').filter((line) => line !== '')).toHaveLength(1);
        expect(result.stderr.startsWith(extra[0] === '--blocklists' ? 'synthvhd: --blocklists needs --blocklist-cache' : `synthvhd: ${inside}: is inside the backup root`)).toBe(true);
      }
      await expect(stat(join(fixtures.backupRoot, 'blocklist-cache'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await mountpoint.cleanup();
    }
  });
});
