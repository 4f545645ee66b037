// SPDX-License-Identifier: MIT
/**
 * The native FUSE session's lifecycle edges (issue 19, finding 6), each in a child process
 * (test/helpers/native-lifecycle-child.ts): a dispatch that throws still gets its request answered
 * (EIO, never a hang); an ended session refuses to mount again with a clear message; a worker
 * thread whose environment is torn down while its session runs leaves nothing freed under the
 * threads still serving an open file, and the mount goes away once that file is closed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fusermountLazy, isMounted, tempMountpoint } from './helpers/fuse-mount.js';
import { REPO_ROOT } from './helpers/run.js';

const CHILD = join(REPO_ROOT, 'dist', 'test', 'helpers', 'native-lifecycle-child.js');

interface Started {
  readonly child: ChildProcess;
  readonly output: () => string;
  readonly exited: Promise<number | null>;
}

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function start(scenario: string, extra: readonly string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Started & { mountpoint: string }> {
  const mountpoint = await tempMountpoint('synthvhd-lifecycle-');
  const child = spawn(process.execPath, [CHILD, scenario, mountpoint.path, ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let text = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  const exited = new Promise<number | null>((resolvePromise) => {
    child.once('exit', (code, signal) => {
      resolvePromise(signal === null ? code : -1);
    });
  });
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    if (await isMounted(mountpoint.path)) await fusermountLazy(mountpoint.path);
    await mountpoint.cleanup();
  });
  return { child, output: () => text, exited, mountpoint: mountpoint.path };
}

function waitFor(pattern: RegExp, output: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  return new Promise((resolvePromise, reject) => {
    const timer = setInterval(() => {
      if (pattern.test(output())) {
        clearInterval(timer);
        resolvePromise();
      } else if (performance.now() > deadline) {
        clearInterval(timer);
        reject(new Error(`timed out waiting for ${String(pattern)}\n${output()}`));
      }
    }, 20);
  });
}

describe('the native FUSE session lifecycle', () => {
  it('answers EIO when the dispatch throws, instead of leaving the request to hang', async () => {
    const { output, mountpoint, child, exited } = await start('throw');
    await waitFor(/^ready$/m, output);
    const outcome = await Promise.race([
      stat(join(mountpoint, 'boom')).then(() => 'found', (error: unknown) => (error as NodeJS.ErrnoException).code ?? 'error'),
      new Promise<string>((resolvePromise) => setTimeout(() => { resolvePromise('hung'); }, 15_000)),
    ]);
    expect(outcome).toBe('EIO');
    // The session still answers afterwards, and the bug is named on stderr.
    await expect(stat(join(mountpoint, 'other'))).rejects.toMatchObject({ code: 'ENOENT' });
    await waitFor(/internal error \(please report\): the FUSE dispatch threw on 'lookup': a bug in dispatch/, output);
    expect(output()).not.toMatch(/^uncaught/m);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('refuses to mount a session again once it has ended', async () => {
    const { output, exited } = await start('remount');
    expect(await exited).toBe(0);
    expect(output()).toMatch(/^closed$/m);
    expect(output()).toMatch(/^remount refused: this session has ended \(it was unmounted\): create a new FuseSession to mount again$/m);
  });

  it('keeps serving an open file after its worker thread is terminated, then lets the mount go', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'synthvhd-lifecycle-src-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const source = join(dir, 'source.bin');
    await writeFile(source, randomBytes(8 * 1024 * 1024));
    // Freed memory is overwritten at once, so a use after free cannot pass by luck.
    const { output, exited } = await start('teardown', [source], { MALLOC_PERTURB_: '165' });
    const code = await exited;
    expect(output()).toMatch(/^read before teardown ok$/m);
    expect(output()).toMatch(/^terminated$/m);
    expect(output()).toMatch(/^read after teardown ok$/m);
    expect(output()).toMatch(/^unmounted$/m);
    expect(code).toBe(0);
  });
});
