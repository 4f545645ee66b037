// SPDX-License-Identifier: MIT
/**
 * Decodes urBackup compressed blocks (zlib, zstd) on worker threads, so the thread that answers
 * FUSE requests and drives I/O never spends ~10 ms per 2 MiB block decoding. The main thread
 * reads the record (libuv pool) and transfers the payload; a worker decodes and transfers the
 * block back. Same pattern as ../blocklist/hash-pool.ts: the worker is a CommonJS string
 * (`eval: true`), so it runs the same from src/ (vitest) and dist/ (the CLI); zstddec (ESM) is
 * imported by the URL the main thread resolved.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { SynthvhdError, internalError } from '../errors/synthvhd-error.js';
import { MODE_STORED } from './compressed-record.js';

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { inflateSync } = require('node:zlib');
let zstd;
const ready = import(workerData.zstddec).then(async (module) => {
  const decoder = new module.ZSTDDecoder();
  await decoder.init();
  zstd = decoder;
});
parentPort.on('message', async (job) => {
  try {
    await ready;
    const payload = new Uint8Array(job.payload);
    let out;
    if (job.mode === 1) out = inflateSync(payload, { maxOutputLength: Math.max(job.blockLength, 1) });
    else if (job.mode === 2) out = zstd.decode(payload, job.blockLength);
    else throw new Error('unknown mode ' + job.mode + ' (0 stored, 1 zlib, 2 zstd)');
    const copy = new Uint8Array(out.length);
    copy.set(out);
    parentPort.postMessage({ id: job.id, out: copy }, [copy.buffer]);
  } catch (error) {
    parentPort.postMessage({ id: job.id, error: String((error && error.message) || error) });
  }
});
`;

interface Pending {
  readonly resolve: (block: Uint8Array) => void;
  readonly reject: (error: Error) => void;
  readonly blockLength: number;
}

type Reply = { id: number; out: Uint8Array } | { id: number; error: string };

/**
 * Worker threads decoding blocks. A pool made with `new` keeps the process alive until closed;
 * `sharedDecodePool()`'s only while it has work.
 */
export class DecodePool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private nextWorker = 0;

  /** `size` workers; default: one per core, at most 4. */
  constructor(
    size = Math.max(1, Math.min(4, availableParallelism())),
    /** Hold the process only while a decode is pending (the shared pool is never closed). */
    private readonly weak = false,
  ) {
    if (!Number.isInteger(size) || size < 1) throw internalError(`decode pool of ${size} workers`);
    const zstddec = import.meta.resolve('zstddec');
    for (let index = 0; index < size; index++) {
      // execArgv: []: a parent started with --input-type=module would make this CommonJS source ESM.
      const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { zstddec } });
      worker.on('message', (reply: Reply) => {
        this.settle(reply);
      });
      worker.on('error', (error) => {
        // A worker that died fails every job (a bug or out of memory): reject, never hang.
        for (const [id, job] of this.pending) {
          this.pending.delete(id);
          job.reject(error);
        }
      });
      if (weak) worker.unref();
      this.workers.push(worker);
    }
  }

  /** A weak pool holds the process exactly while jobs are pending (an await on a decode must not be left behind by an exiting process). */
  private holdProcess(hold: boolean): void {
    if (!this.weak) return;
    for (const worker of this.workers) {
      if (hold) worker.ref();
      else worker.unref();
    }
  }

  private settle(reply: Reply): void {
    const job = this.pending.get(reply.id);
    if (job === undefined) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.holdProcess(false);
    if ('error' in reply) {
      job.reject(new SynthvhdError('E_IO', `corrupt compressed block: ${reply.error}`));
      return;
    }
    // zstddec reports a failure only through the length: check it (src/urbackup/images/block-codec.ts).
    if (reply.out.length !== job.blockLength) {
      job.reject(new SynthvhdError('E_IO', `corrupt compressed block: decoded ${reply.out.length} bytes, expected ${job.blockLength}`));
      return;
    }
    job.resolve(reply.out);
  }

  /** Decodes `payload` (record mode `mode`) to exactly `blockLength` bytes. `payload` is transferred. */
  decode(mode: number, payload: Uint8Array, blockLength: number): Promise<Uint8Array> {
    if (mode === MODE_STORED) {
      return payload.length === blockLength
        ? Promise.resolve(payload)
        : Promise.reject(new SynthvhdError('E_IO', `corrupt compressed block: stored block of ${payload.length} bytes, expected ${blockLength}`));
    }
    const worker = this.workers[this.nextWorker++ % this.workers.length];
    if (worker === undefined) return Promise.reject(internalError('decode pool is closed'));
    const id = this.nextId++;
    return new Promise<Uint8Array>((resolve, reject) => {
      if (this.pending.size === 0) this.holdProcess(true);
      this.pending.set(id, { resolve, reject, blockLength });
      // Transfer only a buffer this payload owns whole; otherwise copy it.
      const owned = payload.byteOffset === 0 && payload.byteLength === payload.buffer.byteLength && payload.buffer instanceof ArrayBuffer;
      const buffer = owned ? payload.buffer : payload.slice().buffer;
      worker.postMessage({ id, mode, blockLength, payload: buffer }, [buffer]);
    });
  }

  async close(): Promise<void> {
    const workers = this.workers.splice(0);
    for (const [id, job] of this.pending) {
      this.pending.delete(id);
      job.reject(internalError('decode pool closed with jobs pending'));
    }
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}

let shared: DecodePool | undefined;

/**
 * One pool for the whole process, started on first use and never closed. A worker's first few
 * dozen blocks decode several times slower than later ones (its WebAssembly heap grows and its
 * code is tiered up: 14 ms, then 6, then 0.6 ms per 2 MiB block measured here), so a pool per
 * opened image paid that again for every disk the mount composed.
 */
export function sharedDecodePool(): DecodePool {
  shared ??= new DecodePool(undefined, true);
  return shared;
}
