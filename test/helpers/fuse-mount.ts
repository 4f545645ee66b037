// SPDX-License-Identifier: MIT
/**
 * `synthvhd mount` in a CHILD process for the tests: the test process must never be the one
 * serving the mount (a synchronous read of its own mount deadlocks the Node main thread that
 * serves it). Waits for the ready line; `stop()` sends SIGTERM, waits, and falls back to
 * `fusermount -u -z` so no test leaves a mount behind.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findMount } from '../../src/fuse/mountinfo.js';
import { CLI } from './run.js';

export interface MountedChild {
  readonly child: ChildProcess;
  readonly mountpoint: string;
  readonly root: string;
  /** Everything the mount printed so far. */
  stdout(): string;
  stderr(): string;
  /** SIGTERM, wait for the exit (SIGKILL after 10 s), then unmount lazily if still mounted. Exit code. */
  stop(): Promise<number | null>;
}

export const READY_LINE = /^synthvhd: mounted (.+) at (.+) \(read-only\)$/m;

export function fusermountLazy(mountpoint: string): Promise<void> {
  return new Promise((resolvePromise) => {
    execFile('fusermount', ['-u', '-z', mountpoint], () => { resolvePromise(); });
  });
}

export async function isMounted(mountpoint: string): Promise<boolean> {
  return (await findMount(mountpoint)) !== undefined;
}

function exitOf(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolvePromise) => child.once('exit', (code) => { resolvePromise(code); }));
}

/** Starts `synthvhd mount [...extra] ROOT MOUNTPOINT` and resolves once it printed the ready line. */
export async function startMount(root: string, mountpoint: string, extra: readonly string[] = [], timeoutMs = 30_000): Promise<MountedChild> {
  const child = spawn(process.execPath, [CLI, 'mount', ...extra, root, mountpoint], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  const mounted: MountedChild = {
    child,
    mountpoint,
    root,
    stdout: () => out,
    stderr: () => err,
    stop: async () => {
      let code: number | null = child.exitCode;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        code = await exitOf(child);
        clearTimeout(timer);
      }
      if (await isMounted(mountpoint)) await fusermountLazy(mountpoint);
      return code;
    },
  };
  try {
    await new Promise<void>((resolvePromise, reject) => {
      const timer = setTimeout(() => { reject(new Error(`synthvhd mount not ready after ${timeoutMs} ms\n${out}\n${err}`)); }, timeoutMs);
      const check = (): void => {
        if (READY_LINE.test(out)) {
          clearTimeout(timer);
          resolvePromise();
        }
      };
      child.stdout.on('data', check);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`synthvhd mount exited ${code} before it was ready\n${out}\n${err}`));
      });
    });
  } catch (error) {
    await mounted.stop();
    throw error;
  }
  return mounted;
}

/** A fresh empty directory to mount on; `cleanup` unmounts (if needed) and removes it (rmdir only: never recurses into a mount). */
export async function tempMountpoint(prefix = 'synthvhd-mnt-'): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    cleanup: async () => {
      if (await isMounted(path)) await fusermountLazy(path);
      await rmdir(path).catch(() => undefined);
    },
  };
}
