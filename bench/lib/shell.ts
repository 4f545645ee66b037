// SPDX-License-Identifier: MIT
/** Small process and timing helpers for the benchmarks. */
import { execFile } from 'node:child_process';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

export function sh(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(command, [...args], { maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error === null) resolvePromise(stdout);
      else reject(new Error(`${command} ${args.join(' ')}: ${error.message}\n${stderr}`));
    });
  });
}

export async function timed<T>(body: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const started = process.hrtime.bigint();
  const value = await body();
  return { seconds: Number(process.hrtime.bigint() - started) / 1e9, value };
}

export async function usedBytes(path: string): Promise<number> {
  await sh('sync', ['-f', path]);
  const out = await sh('df', ['-B1', '--output=used', path]);
  return Number(out.trim().split('\n').at(-1));
}

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;
