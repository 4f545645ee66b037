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

interface Waiter {
  readonly resolve: (worker: Worker) => void;
  readonly reject: (error: Error) => void;
}

/**
 * Worker threads for hashing; `close()` them when done (they keep the process alive).
 *
 * A worker that fails (an exception, an exit) fails only the job it held: a new worker takes its
 * place, so the pool keeps its size. Nobody is left waiting: a job whose worker dies is rejected,
 * and when workers keep dying before finishing any job (more failures in a row than the pool has
 * workers, so it is not one bad job) or the pool is closed, every waiter and every later call is
 * rejected instead of queued.
 */
export class HashPool {
  private readonly idle: Worker[] = [];
  private readonly waiting: Waiter[] = [];
  private readonly jobs = new Map<Worker, Job>();
  private readonly workers = new Set<Worker>();
  private readonly capacity: number;
  private nextId = 0;
  private failuresInARow = 0;
  private closed = false;
  private broken: Error | undefined;

  /** `size` workers; default: one per core, at most 8. */
  constructor(size = HashPool.defaultSize()) {
    if (!Number.isInteger(size) || size < 1) throw internalError(`hash pool of ${size} workers`);
    this.capacity = size;
    for (let index = 0; index < size; index++) this.spawn();
  }

  static defaultSize(): number {
    return Math.max(1, Math.min(availableParallelism(), 8));
  }

  get size(): number {
    return this.capacity;
  }

  /** The 16-byte entries of the 2 MiB blocks in `buffer[0, length)` (the last may be short). */
  async hash(buffer: SharedArrayBuffer, length: number): Promise<Uint8Array> {
    let worker = await this.acquire();
    // A worker handed over may have died before this continuation ran: take another.
    while (!this.workers.has(worker)) worker = await this.acquire();
    if (this.closed) throw this.unavailable();
    const blocks = Math.ceil(length / BLOCKLIST_BLOCK_SIZE);
    return new Promise<Uint8Array>((resolve, reject) => {
      const id = this.nextId++;
      this.jobs.set(worker, { id, resolve, reject });
      try {
        worker.postMessage({ id, buffer, length, blocks });
      } catch (error) {
        // Nothing reached the worker: it is still good.
        this.jobs.delete(worker);
        this.release(worker);
        reject(error instanceof Error ? error : internalError(String(error)));
      }
    });
  }

  /** Stops the workers; jobs in flight and waiters are rejected. */
  async close(): Promise<void> {
    this.closed = true;
    this.rejectWaiters();
    await Promise.all([...this.workers].map((worker) => worker.terminate()));
  }

  private spawn(): void {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    this.workers.add(worker);
    worker.on('message', (message: { id: number; out: Uint8Array }) => {
      const job = this.jobs.get(worker);
      this.jobs.delete(worker);
      this.failuresInARow = 0;
      this.release(worker);
      job?.resolve(message.out);
    });
    worker.on('error', (error) => {
      this.retire(worker, error.message);
    });
    worker.on('exit', (code) => {
      this.retire(worker, `exited with code ${code}`);
    });
    this.release(worker);
  }

  /** A worker that failed or exited: its job is rejected and, unless closing, a new worker takes its place. */
  private retire(worker: Worker, reason: string): void {
    if (!this.workers.delete(worker)) return; // 'error' comes before 'exit': retired once
    const idleAt = this.idle.indexOf(worker);
    if (idleAt >= 0) this.idle.splice(idleAt, 1);
    const job = this.jobs.get(worker);
    this.jobs.delete(worker);
    job?.reject(internalError(this.closed ? 'hash pool closed while hashing' : `hash worker failed: ${reason}`));
    if (this.closed) return;
    void worker.terminate();
    this.failuresInARow++;
    if (this.failuresInARow > this.capacity) {
      this.broken = internalError(`hash workers keep failing (${this.failuresInARow} in a row, the last: ${reason})`);
      this.rejectWaiters();
      return;
    }
    this.spawn();
  }

  private unavailable(): Error {
    return this.broken ?? internalError('hash pool is closed');
  }

  private acquire(): Promise<Worker> {
    if (this.closed || this.broken !== undefined) return Promise.reject(this.unavailable());
    const worker = this.idle.pop();
    if (worker !== undefined) return Promise.resolve(worker);
    return new Promise<Worker>((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  private release(worker: Worker): void {
    if (this.closed || !this.workers.has(worker)) return;
    const waiter = this.waiting.shift();
    if (waiter === undefined) this.idle.push(worker);
    else waiter.resolve(worker);
  }

  private rejectWaiters(): void {
    const error = this.unavailable();
    for (const waiter of this.waiting.splice(0)) waiter.reject(error);
  }
}
