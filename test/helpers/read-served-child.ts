// SPDX-License-Identifier: MIT
/**
 * `node dist/test/helpers/read-served-child.js LIST FIRST`: reads every file named in the JSON
 * array in LIST, from index FIRST on, through whatever mount they are on, and reports each step
 * as one JSON line on stdout, so that the parent (test/damaged-backups.test.ts) can tell which
 * read of which file hung (no line for too long: it kills this process and starts another one
 * after that file) or failed and how:
 *   {"open":i}                      before opening file i
 *   {"read":i,"offset":o}           before reading 1 MiB at o
 *   {"error":i,"op":"open"|"read","offset":o,"code":"EIO"}
 *   {"done":i,"size":n,"bytes":m}   after the last read (m bytes came back reading in order)
 * The last MiB is read first, as qemu-img and Windows do (the footer), then the whole file in
 * order. Its own process: a read the daemon never answers blocks only this one.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';

const CHUNK = 1024 * 1024;

function emit(event: Record<string, unknown>): void {
  writeSync(1, `${JSON.stringify(event)}\n`);
}

function codeOf(error: unknown): string {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : String(error);
}

const [list = '', first = '0'] = process.argv.slice(2);
const files = JSON.parse(readFileSync(list, 'utf8')) as string[];
const buffer = Buffer.alloc(CHUNK);
for (let index = Number(first); index < files.length; index++) {
  const path = files[index] ?? '';
  emit({ open: index });
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    emit({ error: index, op: 'open', offset: 0, code: codeOf(error) });
    continue;
  }
  let bytes = 0;
  let size = 0;
  try {
    size = fstatSync(fd).size;
    const offsets = [Math.max(0, size - CHUNK)];
    for (let at = 0; at < size; at += CHUNK) offsets.push(at);
    offsets.forEach((offset, step) => {
      emit({ read: index, offset });
      const want = Math.min(CHUNK, size - offset);
      let got = 0;
      try {
        for (let count = -1; got < want && count !== 0; got += count) count = readSync(fd, buffer, got, want - got, offset + got);
      } catch (error) {
        emit({ error: index, op: 'read', offset: offset + got, code: codeOf(error) });
      }
      // The tail read first does not count: `bytes` is what the pass in order returned.
      if (step > 0) bytes += got;
    });
  } finally {
    closeSync(fd);
  }
  emit({ done: index, size, bytes });
}
