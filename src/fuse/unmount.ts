// SPDX-License-Identifier: MIT
/**
 * Unmounts a synthvhd mount from outside the process serving it: one left behind by a crash
 * ("Transport endpoint is not connected"), or a live one (its process notices and exits).
 */
import { execFile } from 'node:child_process';
import { realpath } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileError } from '../errors/synthvhd-error.js';
import { findMount } from './mountinfo.js';

function fusermount(args: readonly string[]): Promise<{ ok: boolean; missing: boolean; message: string }> {
  return new Promise((resolvePromise) => {
    execFile('fusermount', [...args], { timeout: 30_000 }, (error, _stdout, stderr) => {
      const missing = error !== null && 'code' in error && error.code === 'ENOENT';
      const message = (stderr.trim().split('\n')[0] ?? '') || (error?.message ?? '');
      resolvePromise({ ok: error === null, missing, message });
    });
  });
}

/** Unmounts the synthvhd mount at `mountpoint`; `lazy` detaches it even while files are open. */
export async function unmountSynthvhd(mountpoint: string, lazy: boolean): Promise<string> {
  const absolute = resolve(mountpoint);
  let parent: string;
  try {
    parent = await realpath(dirname(absolute));
  } catch (error) {
    throw fileError('E_USAGE', absolute, 'does not exist', error);
  }
  const path = join(parent, basename(absolute));
  const entry = await findMount(path);
  if (entry === undefined) throw fileError('E_IO', path, 'nothing is mounted there');
  if (entry.fsType !== 'fuse.synthvhd') throw fileError('E_IO', path, `is a ${entry.fsType} mount, not a synthvhd one: not touching it`);
  const result = await fusermount(lazy ? ['-u', '-z', path] : ['-u', path]);
  if (result.missing) throw fileError('E_IO', path, 'cannot unmount: fusermount is not installed (apt-get install fuse3)');
  if (!result.ok) {
    const busy = /busy/i.test(result.message) ? ' (files are open on it: close them, or use --lazy)' : '';
    throw fileError('E_IO', path, `cannot unmount: ${result.message}${busy}`);
  }
  return path;
}
