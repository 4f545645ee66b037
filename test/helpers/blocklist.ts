// SPDX-License-Identifier: MIT
/**
 * Independent blocklist arithmetic for the tests, written from VhdBlockBackup's Program.cs (no
 * src/ import): SHA-1 of each 2 MiB of a raw disk file, first 16 bytes, the last block over its
 * short remainder; and the 2 MiB blocks where two raw disks differ.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runOk } from './run.js';

export const BLOCK = 2 * 1024 * 1024;

/** The VhdBlockBackup list of a raw disk image, reading every byte. */
export async function independentList(rawDisk: string): Promise<Buffer> {
  const handle = await open(rawDisk, 'r');
  try {
    const { size } = await handle.stat();
    const out = Buffer.alloc(Math.ceil(size / BLOCK) * 16);
    const buffer = Buffer.alloc(BLOCK);
    for (let block = 0; block * BLOCK < size; block++) {
      const length = Math.min(BLOCK, size - block * BLOCK);
      const { bytesRead } = await handle.read(buffer, 0, length, block * BLOCK);
      if (bytesRead !== length) throw new Error(`short read in ${rawDisk} at block ${block}`);
      createHash('sha1').update(buffer.subarray(0, length)).digest().copy(out, block * 16, 0, 16);
    }
    return out;
  } finally {
    await handle.close();
  }
}

/** Indices of the 2 MiB blocks whose bytes differ between two raw disks of the same size. */
export async function differingBlocks(a: string, b: string): Promise<number[]> {
  const [ha, hb] = [await open(a, 'r'), await open(b, 'r')];
  try {
    const size = (await ha.stat()).size;
    if ((await hb.stat()).size !== size) throw new Error(`${a} and ${b} differ in size`);
    const [ba, bb] = [Buffer.alloc(BLOCK), Buffer.alloc(BLOCK)];
    const changed: number[] = [];
    for (let block = 0; block * BLOCK < size; block++) {
      const length = Math.min(BLOCK, size - block * BLOCK);
      await ha.read(ba, 0, length, block * BLOCK);
      await hb.read(bb, 0, length, block * BLOCK);
      if (!ba.subarray(0, length).equals(bb.subarray(0, length))) changed.push(block);
    }
    return changed;
  } finally {
    await ha.close();
    await hb.close();
  }
}

/**
 * Mounts `image` with libvhdi's vhdimount (which opens the parent chain itself) and runs `check`
 * on the raw disk of the image named (the last `vhdiN`: vhdimount lists the parents first).
 */
export async function withVhdiMount<T>(image: string, check: (rawDisk: string) => Promise<T>, index?: number): Promise<T> {
  const mountpoint = await mkdtemp(join(tmpdir(), 'synthvhd-vhdimount-'));
  try {
    await runOk('vhdimount', [image, mountpoint]);
    try {
      const { stdout } = await runOk('ls', [mountpoint]);
      const names = stdout.split('\n').filter((name) => /^vhdi\d+$/.test(name)).sort((x, y) => Number(x.slice(4)) - Number(y.slice(4)));
      const name = index === undefined ? names.at(-1) : `vhdi${index}`;
      if (name === undefined) throw new Error(`vhdimount ${image}: no vhdiN file`);
      return await check(join(mountpoint, name));
    } finally {
      await run('fusermount', ['-u', mountpoint]);
    }
  } finally {
    await rm(mountpoint, { recursive: true, force: true });
  }
}
