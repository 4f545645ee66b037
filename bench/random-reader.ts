// SPDX-License-Identifier: MIT
/**
 * One benchmark reader process: `node dist/bench/random-reader.js FILE COUNT SEED START_MS [BLOCK
 * [FROM LENGTH]]` waits until the wall clock reaches START_MS (so that all readers, spawned one
 * after the other, start together), reads COUNT blocks of BLOCK bytes (default 4096) at random
 * BLOCK-aligned offsets (of the whole file, or of [FROM, FROM + LENGTH)) with pread and prints
 * the wall-clock time (ms) it finished. Synchronous on purpose:
 * this is a separate process, not the one serving the mount, and each reader stands for one
 * thread of a client.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

const [file, countText, seedText, startText, blockText, fromText, lengthText] = process.argv.slice(2);
if (file === undefined || countText === undefined) {
  process.stderr.write('usage: random-reader FILE COUNT SEED START_MS [BLOCK]\n');
  process.exit(2);
}
const count = Number(countText);
const block = Number(blockText ?? 4096);
let state = (Number(seedText ?? 1) * 2654435761) >>> 0 || 1;
/** xorshift32: the same offsets for every target given the same seed. */
function next(): number {
  state ^= state << 13;
  state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5;
  state >>>= 0;
  return state;
}
const fd = openSync(file, 'r');
const from = Number(fromText ?? 0);
const blocks = Math.floor((lengthText === undefined ? fstatSync(fd).size : Number(lengthText)) / block);
const buffer = Buffer.alloc(block);
const startAt = Number(startText ?? 0);
while (Date.now() < startAt) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
for (let index = 0; index < count; index++) {
  const position = from + ((next() * 65536 + (next() & 0xffff)) % blocks) * block;
  readSync(fd, buffer, 0, block, position);
}
const finishedAt = Date.now();
closeSync(fd);
process.stdout.write(`${finishedAt}\n`);
