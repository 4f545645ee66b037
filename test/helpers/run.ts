// SPDX-License-Identifier: MIT
/** Runs programs for tests: the synthvhd CLI (built into dist/) and the independent checkers. */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

export function run(command: string, args: readonly string[], options: { timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    execFile(command, [...args], { maxBuffer: 64 * 1024 * 1024, timeout: options.timeoutMs ?? 600_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** Runs a command and fails with its output when it exits non-zero. */
export async function runOk(command: string, args: readonly string[]): Promise<RunResult> {
  const result = await run(command, args);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${result.code}\n${result.stdout}\n${result.stderr}`);
  }
  return result;
}

export function synthvhd(args: readonly string[]): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args]);
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * A fingerprint of a whole tree: every path, size, mode, mtime and content hash. Sparse files
 * larger than 1 GiB are fingerprinted by their metadata only (reading 3 TiB of holes is slow).
 */
export async function treeFingerprint(root: string): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (directory: string): Promise<void> => {
    for (const name of (await readdir(directory)).sort()) {
      const path = join(directory, name);
      const info = await stat(path);
      hash.update(`${relative(root, path)}\0${info.mode}\0${info.size}\0${info.mtimeMs}\0`);
      if (info.isDirectory()) await walk(path);
      else if (info.size <= 1024 ** 3) hash.update(await sha256File(path));
    }
  };
  await walk(root);
  return hash.digest('hex');
}
