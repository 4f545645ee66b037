// SPDX-License-Identifier: MIT
/**
 * `synthvhd mount` in a CHILD process for the tests: the test process must never be the one
 * serving the mount (a synchronous read of its own mount deadlocks the Node main thread that
 * serves it). Waits for the ready line; `stop()` sends SIGTERM, waits, and falls back to
 * `fusermount -u -z` so no test leaves a mount behind.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rmdir, type FileHandle } from 'node:fs/promises';
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

/**
 * Starts `synthvhd mount [...extra] ROOT MOUNTPOINT` and resolves once it printed the ready line.
 * `env`: added to the child's environment (e.g. the SYNTHVHD_TEST_HOLD_BACKGROUND test hook).
 */
export async function startMount(root: string, mountpoint: string, extra: readonly string[] = [], timeoutMs = 30_000, env: Readonly<Record<string, string>> = {}): Promise<MountedChild> {
  const child = spawn(process.execPath, [CLI, 'mount', ...extra, root, mountpoint], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
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

/**
 * Reads `length` bytes of `handle` at `from`, `from + step`, … (each range read once, so never
 * from the page cache when the caller dropped or never filled it) every 100 ms until a read
 * fails, and returns that error. Each read that succeeds must give the bytes of `expected` at the
 * same offset, when given. A mount notices a change of its sources at most once a second, so
 * this settles within seconds; it fails with a message when it reaches `to` or after `timeoutMs`
 * (generous: a loaded machine must not make a test flaky).
 */
export async function readUntilRefused(
  handle: FileHandle,
  range: { readonly from: number; readonly to: number; readonly step: number; readonly length: number },
  expected?: FileHandle,
  timeoutMs = 60_000,
): Promise<NodeJS.ErrnoException> {
  const deadline = performance.now() + timeoutMs;
  const got = Buffer.alloc(range.length);
  const want = Buffer.alloc(range.length);
  for (let position = range.from; position + range.length <= range.to; position += range.step) {
    if (performance.now() > deadline) break;
    let count: number;
    try {
      count = (await handle.read(got, 0, range.length, position)).bytesRead;
    } catch (error) {
      return error as NodeJS.ErrnoException;
    }
    if (expected !== undefined) {
      const wanted = (await expected.read(want, 0, range.length, position)).bytesRead;
      if (wanted !== count || !got.subarray(0, count).equals(want.subarray(0, count))) throw new Error(`wrong bytes at ${position}`);
    }
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
  }
  throw new Error(`reads of [${range.from}, ${range.to}) were never refused within ${timeoutMs / 1000} s`);
}
