// SPDX-License-Identifier: MIT
/**
 * Reader PROCESSES hammering one file: each opens FILE, says "opened", then for DURATION ms reads
 * random ranges (1 byte to MAX bytes at random offsets) and compares each with the same range of
 * EXPECTED (read with pread too, so no reader holds the whole file). Separate processes, so the
 * reads really are concurrent (one Node process has four libuv threads) and a test never reads a
 * mount its own main thread serves. Each prints its counts as one JSON line.
 */
import { spawn } from 'node:child_process';

const READER = `
const fs = require('fs');
const [file, expectedPath, seed, duration, maxLength, limit] = process.argv.slice(1);
const expected = fs.openSync(expectedPath, 'r');
const size = Math.min(fs.fstatSync(expected).size, Number(limit) || Infinity);
let state = (Number(seed) * 2654435761) >>> 0 || 1;
const next = () => { state ^= state << 13; state >>>= 0; state ^= state >>> 17; state ^= state << 5; state >>>= 0; return state; };
const buffer = Buffer.alloc(Number(maxLength));
const want = Buffer.alloc(Number(maxLength));
const result = { reads: 0, errors: 0, short: 0, mismatches: 0, errorCodes: [] };
let fd;
try { fd = fs.openSync(file, 'r'); } catch (error) { result.errors++; result.errorCodes.push(error.code); }
process.stdout.write('opened\\n');
const end = Date.now() + Number(duration);
while (fd !== undefined && Date.now() < end) {
  const length = 1 + (next() % Number(maxLength));
  const position = (next() * 4096 + (next() & 4095)) % size;
  try {
    const n = fs.readSync(fd, buffer, 0, length, position);
    const m = fs.readSync(expected, want, 0, n, position);
    if (n < Math.min(length, size - position)) result.short++;
    if (m !== n || !buffer.subarray(0, n).equals(want.subarray(0, n))) result.mismatches++;
    result.reads++;
  } catch (error) {
    result.errors++;
    if (!result.errorCodes.includes(error.code)) result.errorCodes.push(error.code);
    if (result.errors > 1000) break;
  }
}
try { fs.closeSync(fd); } catch {}
process.stdout.write(JSON.stringify(result) + '\\n');
`;

export interface ReaderResult {
  readonly reads: number;
  readonly errors: number;
  /** Reads that returned fewer bytes than the file holds there. */
  readonly short: number;
  /** Reads whose bytes differ from the expected file: must always be 0. */
  readonly mismatches: number;
  /** Each distinct errno name the reader met (EIO, ENOENT, ENOTCONN…). */
  readonly errorCodes: readonly string[];
}

export interface Readers {
  /** Settles once every reader has its file open (or failed to). */
  readonly opened: Promise<void>;
  readonly done: Promise<ReaderResult[]>;
}

/** `limit`: read only [0, limit) of the file (a test may keep the rest out of the page cache). */
export function startReaders(file: string, expectedPath: string, count: number, durationMs: number, maxLength = 1024 * 1024, limit?: number): Readers {
  const opens: Promise<void>[] = [];
  const results = Array.from({ length: count }, (_, index) => {
    const child = spawn(process.execPath, ['-e', READER, file, expectedPath, String(index + 1), String(durationMs), String(maxLength), String(limit ?? 0)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let markOpened: () => void = () => undefined;
    opens.push(new Promise<void>((resolvePromise) => { markOpened = resolvePromise; }));
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.startsWith('opened\n')) markOpened();
    });
    return new Promise<ReaderResult>((resolvePromise, reject) => {
      child.once('exit', (code) => {
        markOpened();
        try {
          resolvePromise(JSON.parse(out.slice('opened\n'.length)) as ReaderResult);
        } catch {
          reject(new Error(`reader ${index} exited ${code} with ${out}`));
        }
      });
    });
  });
  return { opened: Promise.all(opens).then(() => undefined), done: Promise.all(results) };
}
