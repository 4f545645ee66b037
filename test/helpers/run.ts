// SPDX-License-Identifier: MIT
/** Runs programs for tests: the synthvhd CLI (built into dist/) and the independent checkers. */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
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

/** Files up to this size are hashed whole; larger ones (the 3 TiB sparse fixture) by samples. */
const WHOLE_HASH_LIMIT = 1024 ** 3;
const SAMPLES = 256;
const SAMPLE_BYTES = 64 * 1024;

/**
 * SHA-256 of SAMPLES blocks of SAMPLE_BYTES spread evenly over `path` (the first and the last
 * included), for files too large to hash whole.
 */
export async function sampledHash(path: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(SAMPLE_BYTES);
    const last = Math.max(0, size - SAMPLE_BYTES);
    for (let sample = 0; sample < SAMPLES; sample++) {
      const position = Math.floor((last * sample) / (SAMPLES - 1));
      const { bytesRead } = await handle.read(buffer, 0, SAMPLE_BYTES, position);
      hash.update(`${position}:`).update(buffer.subarray(0, bytesRead));
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

/**
 * A fingerprint of a whole tree: every path, mode, size, mtime, ctime and inode, and the content:
 * whole for files up to 1 GiB, sampled (sampledHash) above (reading 3 TiB of holes is slow).
 * ctime is the witness the samples need: any write, truncate, chmod or utimes through the file
 * system sets it to the current time, and no system call sets it back. What this cannot detect:
 * a write between two samples of a large file made by something that bypasses the file system
 * (the block device written directly) or with the system clock turned back to the old ctime;
 * a file replaced by rename changes the inode (or its ctime) and is detected.
 */
export async function treeFingerprint(root: string): Promise<string> {
  const hash = createHash('sha256');
  for (const [path, entry] of await treeManifest(root)) hash.update(`${path}\0${entry}\0`);
  return hash.digest('hex');
}

/** The fingerprint's parts, path by path (relative to `root`), so a change can be named. */
export async function treeManifest(root: string): Promise<Map<string, string>> {
  const manifest = new Map<string, string>();
  const walk = async (directory: string): Promise<void> => {
    for (const name of (await readdir(directory)).sort()) {
      const path = join(directory, name);
      const info = await stat(path, { bigint: true });
      let entry = `${info.mode}\0${info.size}\0${info.mtimeNs}\0${info.ctimeNs}\0${info.dev}.${info.ino}`;
      if (info.isDirectory()) await walk(path);
      else if (info.size <= WHOLE_HASH_LIMIT) entry += `\0${await sha256File(path)}`;
      else entry += `\0${await sampledHash(path, Number(info.size))}`;
      manifest.set(relative(root, path), entry);
    }
  };
  await walk(root);
  return manifest;
}

/** The paths whose entry differs between two manifests (added, removed or changed). */
export function manifestChanges(before: ReadonlyMap<string, string>, after: ReadonlyMap<string, string>): string[] {
  const changed: string[] = [];
  for (const [path, entry] of before) if (after.get(path) !== entry) changed.push(after.has(path) ? `changed ${path}` : `removed ${path}`);
  for (const path of after.keys()) if (!before.has(path)) changed.push(`added ${path}`);
  return changed;
}
