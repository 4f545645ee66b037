// SPDX-License-Identifier: MIT
/**
 * The hashing worker pool under failure: a worker that dies fails only its own job, a new worker
 * takes its place (the job queued behind it is hashed right), and no caller is ever left waiting,
 * neither behind a dead worker nor across close(). Expected hashes come from node:crypto here.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { HashPool } from '../src/blocklist/hash-pool.js';

const MiB = 1024 * 1024;

/** 2 MiB + 1000 bytes of random data in a SharedArrayBuffer, and its two entries (SHA-1, first 16 bytes). */
function filled(): { buffer: SharedArrayBuffer; length: number; expected: Buffer } {
  const length = 2 * MiB + 1000;
  const buffer = new SharedArrayBuffer(4 * MiB);
  const view = new Uint8Array(buffer);
  randomFillSync(view, 0, length);
  const entry = (start: number, end: number): Buffer => createHash('sha1').update(view.subarray(start, end)).digest().subarray(0, 16);
  return { buffer, length, expected: Buffer.concat([entry(0, 2 * MiB), entry(2 * MiB, length)]) };
}

/** A job whose worker throws: a length beyond the buffer (the view cannot be made) kills the worker. */
function poison(pool: HashPool): Promise<Uint8Array> {
  return pool.hash(new SharedArrayBuffer(16), 64 * MiB);
}

describe('HashPool', () => {
  it('replaces a worker that died: its job fails, the job queued behind it is hashed right', async () => {
    const pool = new HashPool(1);
    try {
      const good = filled();
      const failing = poison(pool);
      const queued = pool.hash(good.buffer, good.length); // waits for the only worker
      await expect(failing).rejects.toThrow(/hash worker failed/);
      expect(Buffer.from(await queued)).toEqual(good.expected);
      expect(pool.size).toBe(1);
      // And again: the pool did not give up after one bad job.
      await expect(poison(pool)).rejects.toThrow(/hash worker failed/);
      expect(Buffer.from(await pool.hash(good.buffer, good.length))).toEqual(good.expected);
    } finally {
      await pool.close();
    }
  });

  it('with several workers, one dying leaves the others and every queued job answered', async () => {
    const pool = new HashPool(2);
    try {
      const good = filled();
      const jobs = [pool.hash(good.buffer, good.length), poison(pool), ...Array.from({ length: 6 }, () => pool.hash(good.buffer, good.length))];
      const settled = await Promise.allSettled(jobs);
      expect(settled.map((result) => result.status)).toEqual(['fulfilled', 'rejected', ...Array<string>(6).fill('fulfilled')]);
      for (const result of settled) if (result.status === 'fulfilled') expect(Buffer.from(result.value)).toEqual(good.expected);
    } finally {
      await pool.close();
    }
  });

  it('close() rejects the jobs waiting for a worker and every later call', async () => {
    const pool = new HashPool(1);
    const good = filled();
    const first = pool.hash(good.buffer, good.length);
    const waiting = pool.hash(good.buffer, good.length);
    const closing = pool.close();
    await expect(waiting).rejects.toThrow(/hash pool is closed/);
    await expect(first).rejects.toThrow(/closed/);
    await closing;
    await expect(pool.hash(good.buffer, good.length)).rejects.toThrow(/hash pool is closed/);
  });
});
