// SPDX-License-Identifier: MIT
/**
 * What this machine needs before a mount can work, as small checks returning one typed line
 * each (ok / warn / fail). `synthvhd doctor` prints them all; `synthvhd mount` runs the ones a
 * mount depends on first (`requireMountable`) and stops with the failing check's own line, so
 * the two never disagree about what is wrong or what to do.
 */
import { constants } from 'node:fs';
import { access, open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { SynthvhdError } from '../errors/synthvhd-error.js';
import { fuseAddonPath, loadFuseAddon } from './native-session.js';
import { fsBlockSize, nativeAddonPath } from '../native/native.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  /** One line, saying what was found and, when not ok, what to do. */
  readonly detail: string;
}

export const ok = (name: string, detail: string): CheckResult => ({ name, status: 'ok', detail });
export const warn = (name: string, detail: string): CheckResult => ({ name, status: 'warn', detail });
export const fail = (name: string, detail: string): CheckResult => ({ name, status: 'fail', detail });

export function errnoOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'error';
}

export function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0] ?? message;
}

/** /dev/fuse exists, is a character device and opens read-write (what libfuse does to mount). */
export async function checkFuseDevice(path = '/dev/fuse', uid = process.getuid?.() ?? -1): Promise<CheckResult> {
  const name = 'fuse-device';
  try {
    if (!(await stat(path)).isCharacterDevice()) return fail(name, `${path} is not a character device`);
  } catch (error) {
    return fail(name, `${path}: no FUSE device (${errnoOf(error)}): load the fuse kernel module (modprobe fuse), or give the container --device /dev/fuse`);
  }
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, constants.O_RDWR);
    return ok(name, `${path} is present and opens read-write`);
  } catch (error) {
    // A non-root mount goes through setuid fusermount, which opens the device itself.
    if (uid !== 0) return warn(name, `${path} is present but uid ${uid} cannot open it (${errnoOf(error)}): mounts need a setuid-root fusermount (see mount-permission)`);
    return fail(name, `${path} is present but cannot be opened (${errnoOf(error)})`);
  } finally {
    await handle?.close();
  }
}

/** The FUSE session addon loads, and with it libfuse.so.3, libzstd and zlib (Debian: fuse3). */
export function checkLibfuse(): Promise<CheckResult> {
  const name = 'libfuse';
  try {
    loadFuseAddon();
    return Promise.resolve(ok(name, `${fuseAddonPath()} loads libfuse.so.3`));
  } catch (error) {
    return Promise.resolve(fail(name, firstLine(error)));
  }
}

/** The first executable `name` on PATH. */
async function which(program: string): Promise<string | undefined> {
  for (const directory of (process.env.PATH ?? '').split(delimiter)) {
    if (directory === '') continue;
    const candidate = join(directory, program);
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** `fusermount` (`synthvhd unmount` calls it by that name) or at least `fusermount3` (libfuse 3's). */
export async function checkFusermount(): Promise<CheckResult> {
  const name = 'fusermount';
  const v2 = await which('fusermount');
  const v3 = await which('fusermount3');
  if (v2 !== undefined) return ok(name, `${v2}${v3 === undefined ? '' : ` and ${v3}`} on PATH`);
  if (v3 !== undefined) {
    return warn(name, `only ${v3} on PATH: synthvhd unmount calls \`fusermount\` (Debian's fuse3 package links it)`);
  }
  return fail(name, 'neither fusermount nor fusermount3 on PATH: apt-get install fuse3');
}

/** CAP_SYS_ADMIN in the effective set (bit 21, linux/capability.h), from /proc/self/status. */
async function hasSysAdmin(): Promise<boolean | undefined> {
  try {
    const status = await readFile('/proc/self/status', 'utf8');
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
    return hex === undefined ? undefined : ((BigInt(`0x${hex}`) >> 21n) & 1n) === 1n;
  } catch {
    return undefined;
  }
}

/** Root mounts with mount(2) and needs CAP_SYS_ADMIN; other users need a setuid fusermount. */
export async function checkMountPermission(uid = process.getuid?.() ?? -1): Promise<CheckResult> {
  const name = 'mount-permission';
  if (uid === 0) {
    const admin = await hasSysAdmin();
    if (admin === false) return fail(name, 'root without CAP_SYS_ADMIN cannot mount FUSE file systems (in Docker: --cap-add SYS_ADMIN)');
    return ok(name, `running as root${admin === true ? ' with CAP_SYS_ADMIN' : ''}: can mount`);
  }
  // libfuse 3 mounts as a non-root user through fusermount3.
  const fusermount = (await which('fusermount3')) ?? (await which('fusermount'));
  if (fusermount === undefined) return fail(name, `not root (uid ${uid}) and no fusermount to mount with`);
  const info = await stat(fusermount);
  if ((info.mode & 0o4000) !== 0 /* S_ISUID */ && info.uid === 0) return ok(name, `not root (uid ${uid}): mounts through setuid-root ${fusermount}`);
  return fail(name, `not root (uid ${uid}) and ${fusermount} is not setuid root: run as root or reinstall fuse3`);
}

/** `--allow-other` (Samba needs it) is refused to non-root users without user_allow_other. */
export async function checkAllowOther(uid = process.getuid?.() ?? -1, fuseConf = '/etc/fuse.conf'): Promise<CheckResult> {
  const name = 'allow-other';
  if (uid === 0) return ok(name, 'running as root: --allow-other needs no entry in /etc/fuse.conf');
  let text = '';
  try {
    text = await readFile(fuseConf, 'utf8');
  } catch (error) {
    return warn(name, `cannot read ${fuseConf} (${errnoOf(error)}): --allow-other (needed for Samba) will be refused; add a line user_allow_other there`);
  }
  if (text.split('\n').some((line) => line.trim() === 'user_allow_other')) return ok(name, `user_allow_other is set in ${fuseConf}`);
  return warn(name, `${fuseConf} has no user_allow_other line: --allow-other (needed for Samba) will be refused for uid ${uid}`);
}

/** The native addon (FICLONERANGE, copy_file_range, SEEK_DATA) is built and loads. */
export async function checkNativeAddon(): Promise<CheckResult> {
  const name = 'native-addon';
  let handle: FileHandle | undefined;
  try {
    handle = await open(process.execPath, 'r');
    await fsBlockSize(handle.fd);
    return ok(name, `${nativeAddonPath()} loads`);
  } catch (error) {
    return fail(name, firstLine(error));
  } finally {
    await handle?.close();
  }
}

/**
 * The checks a mount depends on, in the order it needs them; throws the first failing one's line
 * (E_IO). `--allow-other` without the right to it is a failure here (doctor only warns: it is
 * needed for sharing, not for mounting).
 */
export async function requireMountable(options: { readonly allowOther: boolean }): Promise<void> {
  const checks = [checkFuseDevice, checkMountPermission, ...(options.allowOther ? [checkAllowOther] : []), checkLibfuse];
  for (const check of checks) {
    const result = await check();
    if (result.status === 'fail' || (result.status === 'warn' && result.name === 'allow-other')) {
      throw new SynthvhdError('E_IO', result.detail);
    }
  }
}
