// SPDX-License-Identifier: MIT
/**
 * A file system of its own for a test: a sparse image file, mkfs, a loop device, a mount in a
 * unique temp dir. Always unmounted, detached and removed in `finally`, so a failing test
 * leaves nothing behind.
 */
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runOk } from './run.js';

export type LoopFsKind = 'btrfs' | 'xfs' | 'ext4';

const MKFS: Record<LoopFsKind, readonly string[]> = {
  btrfs: ['mkfs.btrfs', '-q', '-f'],
  xfs: ['mkfs.xfs', '-q', '-f', '-m', 'reflink=1'],
  ext4: ['mkfs.ext4', '-q', '-F'],
};

export async function withLoopFs<T>(kind: LoopFsKind, sizeBytes: number, body: (mountDir: string) => Promise<T>): Promise<T> {
  const work = await mkdtemp(join(tmpdir(), `synthvhd-${kind}-`));
  const image = join(work, 'fs.img');
  const mountDir = join(work, 'mnt');
  let device: string | undefined;
  let mounted = false;
  try {
    await writeFile(image, '');
    await truncate(image, sizeBytes);
    const [mkfs = '', ...mkfsArgs] = MKFS[kind];
    await runOk(mkfs, [...mkfsArgs, image]);
    device = (await runOk('losetup', ['--find', '--show', image])).stdout.trim();
    await runOk('mkdir', ['-p', mountDir]);
    await runOk('mount', [device, mountDir]);
    mounted = true;
    return await body(mountDir);
  } finally {
    if (mounted) {
      const result = await run('umount', [mountDir]);
      if (result.code !== 0) await run('umount', ['-l', mountDir]);
    }
    if (device !== undefined) await run('losetup', ['-d', device]);
    await rm(work, { recursive: true, force: true });
  }
}

/** Bytes in use on the file system holding `path`, after flushing (btrfs counts lazily). */
export async function usedBytes(path: string): Promise<number> {
  await runOk('sync', ['-f', path]);
  const { stdout } = await runOk('df', ['-B1', '--output=used', path]);
  return Number(stdout.trim().split('\n').at(-1));
}
