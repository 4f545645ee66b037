// SPDX-License-Identifier: MIT
/**
 * Loaded with `node --import` in front of the CLI by `synthvhdWitnessed` (io-witness.ts): writes
 * the kernel's I/O counters of this process (`/proc/self/io`) as it starts and as it exits to
 * the file named by SYNTHVHD_IO_REPORT. The counters cover every thread of the process (libuv's
 * pool, worker threads), so what the program read cannot hide from them, whatever it reports.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';

const report = process.env.SYNTHVHD_IO_REPORT;
if (isMainThread && report !== undefined && report !== '') {
  const start = readFileSync('/proc/self/io', 'utf8');
  process.on('exit', () => {
    writeFileSync(report, JSON.stringify({ start, end: readFileSync('/proc/self/io', 'utf8') }));
  });
}
