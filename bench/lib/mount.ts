// SPDX-License-Identifier: MIT
/** A `synthvhd mount` child for benchmarks: mounted, handed to the caller, then always unmounted. */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, sh } from './shell.js';

/**
 * Mounts `root` with the CLI; `work` gets the mount point, the daemon's pid and when the mount
 * became live (performance.now()); then SIGTERM, a lazy unmount in any case, the folder removed.
 */
export async function withMount<T>(root: string, work: (mountpoint: string, pid: number, live: number) => Promise<T>): Promise<T> {
  const mountpoint = await mkdtemp(join(tmpdir(), 'synthvhd-bench-mnt-'));
  const child = spawn(process.execPath, [CLI, 'mount', root, mountpoint], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolvePromise, reject) => {
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (/mounted .* \(read-only\)/.test(out)) resolvePromise();
      });
      child.once('exit', (code) => {
        reject(new Error(`synthvhd mount exited ${code} before it was ready`));
      });
    });
    if (child.pid === undefined) throw new Error('synthvhd mount has no pid');
    return await work(mountpoint, child.pid, performance.now());
  } finally {
    const exited = new Promise((resolvePromise) => child.once('exit', resolvePromise));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolvePromise) => setTimeout(resolvePromise, 10_000))]);
    await sh('fusermount', ['-u', '-z', mountpoint]).catch(() => undefined);
    await rm(mountpoint, { recursive: true, force: true });
  }
}
