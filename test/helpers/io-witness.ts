// SPDX-License-Identifier: MIT
/**
 * "Reads nothing" proven by the kernel, not by the program's own counters: the CLI runs in a
 * child process whose `/proc/<pid>/io` is sampled as it starts and as it exits (the preload in
 * io-witness-preload.ts), or, for a long-running child such as a mount, read while it runs.
 * `rchar` counts every byte the process got from read/pread/copy_file_range on any file (page
 * cache or not; FICLONERANGE moves no bytes and is not counted), `syscr` the read calls.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CLI, REPO_ROOT, type RunResult } from './run.js';

export interface KernelIo {
  /** Bytes returned by read-type system calls. */
  readonly rchar: number;
  /** Read-type system calls. */
  readonly syscr: number;
  /** Bytes fetched from storage (not from the page cache). */
  readonly readBytes: number;
}

const PRELOAD = join(REPO_ROOT, 'dist', 'test', 'helpers', 'io-witness-preload.js');

export function parseProcIo(text: string): KernelIo {
  const field = (name: string): number => {
    const match = new RegExp(`^${name}: (\\d+)$`, 'm').exec(text);
    if (match?.[1] === undefined) throw new Error(`/proc/<pid>/io has no ${name}:\n${text}`);
    return Number(match[1]);
  };
  return { rchar: field('rchar'), syscr: field('syscr'), readBytes: field('read_bytes') };
}

/** The counters of a running process (e.g. a mount child). */
export async function processIo(pid: number): Promise<KernelIo> {
  return parseProcIo(await readFile(`/proc/${pid}/io`, 'utf8'));
}

/** `synthvhd ARGS` in a child, with what the kernel counted it reading from start-up to exit. */
export function synthvhdWitnessed(args: readonly string[]): Promise<RunResult & { readonly io: KernelIo }> {
  return nodeWitnessed(CLI, args);
}

/** A built script (under dist/) in a child, with what the kernel counted it reading from start-up to exit. */
export async function nodeWitnessed(script: string, args: readonly string[]): Promise<RunResult & { readonly io: KernelIo }> {
  const work = await mkdtemp(join(tmpdir(), 'synthvhd-io-'));
  try {
    const reportPath = join(work, 'io.json');
    const result = await new Promise<RunResult>((resolvePromise) => {
      execFile(
        process.execPath,
        ['--import', pathToFileURL(PRELOAD).href, script, ...args],
        { maxBuffer: 64 * 1024 * 1024, timeout: 600_000, env: { ...process.env, SYNTHVHD_IO_REPORT: reportPath } },
        (error, stdout, stderr) => {
          resolvePromise({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, stdout, stderr });
        },
      );
    });
    const { start, end } = JSON.parse(await readFile(reportPath, 'utf8')) as { start: string; end: string };
    const [before, after] = [parseProcIo(start), parseProcIo(end)];
    return {
      ...result,
      io: { rchar: after.rchar - before.rchar, syscr: after.syscr - before.syscr, readBytes: after.readBytes - before.readBytes },
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
