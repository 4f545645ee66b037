// SPDX-License-Identifier: MIT
/**
 * The native session's handlers over a BackupFs: lookups, attributes, listings, symlinks,
 * statfs and opens go to the BackupFs; the errno of a failure comes from errno.ts; a failure that
 * is not an expected one (a bug) is logged, at most 100 times. Reads never come here (the
 * session serves them on its own threads); a handle being read is reported through `touched`,
 * and answers EIO from the moment its backup is found changed or deleted. Writes never come
 * here either: `ro` stops them in the kernel, and the session answers EROFS to any that would.
 */
import { isSynthvhdError } from '../errors/synthvhd-error.js';
import type { BackupFs } from './backup-fs.js';
import { errnoOf } from './errno.js';
import type { SessionHandlers } from './native-session.js';

function isExpected(error: unknown): boolean {
  if (isSynthvhdError(error)) return error.code !== 'E_INTERNAL';
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string';
}

/** `invalidate(fh)`: the session's, bound once it is mounted. */
export function sessionHandlers(fs: BackupFs, log: (line: string) => void, invalidate: (fh: number) => void): SessionHandlers {
  fs.onHandleStale = invalidate;
  let reported = 0;
  /** Runs `work`, logging an unexpected failure before it becomes an errno. */
  const run = <T>(work: () => Promise<T>): Promise<T> => {
    let pending: Promise<T>;
    try {
      pending = work();
    } catch (error) {
      pending = Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return pending.catch((error: unknown) => {
      if (!isExpected(error) && reported < 100) {
        reported++;
        const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
        log(`internal error in a FUSE handler (please report): ${text.replace(/\n\s*/g, ' | ')}`);
      }
      throw error;
    });
  };
  return {
    getattr: (path) => run(() => fs.getattr(path)),
    readdir: (path) => run(() => fs.readdirEntries(path)),
    open: (path, flags) => run(() => fs.open(path, flags)),
    readlink: (path) => run(() => fs.readlink(path)),
    statfs: () => run(() => fs.statfs()),
    release: (fh) => {
      fs.release(fh);
    },
    touched: (fh) => {
      if (fs.touched(fh)) invalidate(fh);
    },
    errno: (error) => -errnoOf(error),
    log,
  };
}
