// SPDX-License-Identifier: MIT
/**
 * SHA-1 on every core: a few worker threads that hash 2 MiB blocks out of SharedArrayBuffers the
 * main thread filled (so no byte is copied between threads). The main thread keeps doing the
 * I/O (readAt over the Layout, on libuv's pool) while the workers hash.
 *
 * Measured on this project's 2-core machine (bench/blocklist.ts): node's createHash('sha1')
 * (OpenSSL, SHA-NI) runs at sha1sum's speed on one core; WebCrypto `subtle.digest` is slower
 * (it copies and queues each call on the libuv pool shared with the reads). Hence workers.
 *
 * The worker's code is a small CommonJS string (`eval: true`): it then runs the same from
 * src/ (vitest) and dist/ (the CLI) without resolving a second file.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { internalError } from '../errors/synthvhd-error.js';
import { BLOCKLIST_BLOCK_SIZE, BLOCKLIST_HASH_SIZE } from './blocklist.js';

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', (job) => {
  const data = new Uint8Array(job.buffer, 0, job.length);
  const out = new Uint8Array(job.blocks * ${BLOCKLIST_HASH_SIZE});
  for (let index = 0; index < job.blocks; index++) {
    const start = index * ${BLOCKLIST_BLOCK_SIZE};
    const end = Math.min(job.length, start + ${BLOCKLIST_BLOCK_SIZE});
    out.set(createHash('sha1').update(data.subarray(start, end)).digest().subarray(0, ${BLOCKLIST_HASH_SIZE}), index * ${BLOCKLIST_HASH_SIZE});
  }
  parentPort.postMessage({ id: job.id, out }, [out.buffer]);
});
`;

interface Job {
  readonly id: number;
  readonly resolve: (hashes: Uint8Array) => void;
  readonly reject: (error: Error) => void;
}

/** Worker threads for hashing; `close()` them when done (they keep the process alive). */
export class HashPool {
  private readonly idle: Worker[] = [];
  private readonly waiting: (() => void)[] = [];
  private readonly jobs = new Map<Worker, Job>();
  private readonly workers: Worker[] = [];
  private nextId = 0;
  private failure: Error | undefined;

  /** `size` workers; default: one per core, at most 8. */
  constructor(size = HashPool.defaultSize()) {
    if (!Number.isInteger(size) || size < 1) throw internalError(`hash pool of ${size} workers`);
    for (let index = 0; index < size; index++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.on('message', (message: { id: number; out: Uint8Array }) => {
        const job = this.jobs.get(worker);
        this.jobs.delete(worker);
        this.release(worker);
        job?.resolve(message.out);
      });
      worker.on('error', (error) => {
        this.failure = error;
        const job = this.jobs.get(worker);
        this.jobs.delete(worker);
        job?.reject(error);
      });
      this.workers.push(worker);
      this.idle.push(worker);
    }
  }

  static defaultSize(): number {
    return Math.max(1, Math.min(availableParallelism(), 8));
  }

  get size(): number {
    return this.workers.length;
  }

  /** The 16-byte entries of the 2 MiB blocks in `buffer[0, length)` (the last may be short). */
  async hash(buffer: SharedArrayBuffer, length: number): Promise<Uint8Array> {
    const worker = await this.acquire();
    const blocks = Math.ceil(length / BLOCKLIST_BLOCK_SIZE);
    return new Promise<Uint8Array>((resolve, reject) => {
      const id = this.nextId++;
      this.jobs.set(worker, { id, resolve, reject });
      worker.postMessage({ id, buffer, length, blocks });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((worker) => worker.terminate()));
  }

  private async acquire(): Promise<Worker> {
    for (;;) {
      if (this.failure !== undefined) throw internalError(`hash worker failed: ${this.failure.message}`);
      const worker = this.idle.pop();
      if (worker !== undefined) return worker;
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  private release(worker: Worker): void {
    this.idle.push(worker);
    this.waiting.shift()?.();
  }
}
