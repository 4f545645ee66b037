// SPDX-License-Identifier: MIT
/**
 * fuse-native's handler table over a BackupFs. Each handler starts the async work and returns
 * at once (the Node main thread serves every libfuse worker thread, so nothing here blocks);
 * the callback gets the result or the negative errno from errno.ts. Every write-type operation
 * answers EROFS; xattr queries answer "no attributes" (ENODATA / empty list).
 */
import type * as Fuse from 'fuse-native';
import { isSynthvhdError } from '../errors/synthvhd-error.js';
import type { BackupFs } from './backup-fs.js';
import { ENODATA, EROFS, errnoOf } from './errno.js';

/** Runs `work`, answering `reply` with its value or `fail` with the errno of its failure. */
function settle<T>(work: () => Promise<T>, reply: (value: T) => void, fail: (errno: number) => void, onUnexpected: (error: unknown) => void): void {
  let pending: Promise<T>;
  try {
    pending = work();
  } catch (error) {
    onUnexpected(error);
    fail(errnoOf(error));
    return;
  }
  pending.then(reply, (error: unknown) => {
    onUnexpected(error);
    fail(errnoOf(error));
  });
}

function isExpected(error: unknown): boolean {
  if (isSynthvhdError(error)) return error.code !== 'E_INTERNAL';
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string';
}

export function fuseOperations(fs: BackupFs, log: (line: string) => void): Fuse.Operations {
  let reported = 0;
  const onUnexpected = (error: unknown): void => {
    if (isExpected(error) || reported >= 100) return;
    reported++;
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
    log(`internal error in a FUSE handler (please report): ${text.replace(/\n\s*/g, ' | ')}`);
  };
  const run = <T>(work: () => Promise<T>, reply: (value: T) => void, fail: (errno: number) => void): void => {
    settle(work, reply, fail, onUnexpected);
  };
  const readOnly = (cb: Fuse.DoneCallback): void => {
    cb(EROFS);
  };

  return {
    getattr: (path, cb) => {
      run(() => fs.getattr(path), (stat) => { cb(0, stat); }, (errno) => { cb(errno); });
    },
    readdir: (path, cb) => {
      run(() => fs.readdir(path), (names) => { cb(0, names); }, (errno) => { cb(errno); });
    },
    open: (path, flags, cb) => {
      run(() => fs.open(path, flags), (fh) => { cb(0, fh); }, (errno) => { cb(errno); });
    },
    read: (path, fh, buffer, length, position, cb) => {
      run(() => fs.read(path, fh, buffer, length, position), (count) => { cb(count); }, (errno) => { cb(errno); });
    },
    release: (_path, fh, cb) => {
      run(() => fs.release(fh), () => { cb(0); }, () => { cb(0); });
    },
    readlink: (path, cb) => {
      run(() => fs.readlink(path), (target) => { cb(0, target); }, (errno) => { cb(errno); });
    },
    access: (path, mode, cb) => {
      run(() => fs.access(path, mode), () => { cb(0); }, (errno) => { cb(errno); });
    },
    statfs: (_path, cb) => {
      run(() => fs.statfs(), (stats) => { cb(0, stats); }, (errno) => { cb(errno); });
    },
    getxattr: (_path, _name, _position, cb) => {
      cb(ENODATA);
    },
    listxattr: (_path, cb) => {
      cb(0, []);
    },
    flush: (_path, _fh, cb) => {
      cb(0);
    },
    fsync: (_path, _datasync, _fh, cb) => {
      cb(0);
    },
    fsyncdir: (_path, _datasync, _fh, cb) => {
      cb(0);
    },
    // Everything that would change the tree.
    write: (_path, _fh, _buffer, _length, _position, cb) => {
      readOnly(cb);
    },
    create: (_path, _mode, cb) => {
      cb(EROFS);
    },
    truncate: (_path, _size, cb) => {
      readOnly(cb);
    },
    ftruncate: (_path, _fh, _size, cb) => {
      readOnly(cb);
    },
    utimens: (_path, _atime, _mtime, cb) => {
      readOnly(cb);
    },
    chown: (_path, _uid, _gid, cb) => {
      readOnly(cb);
    },
    chmod: (_path, _mode, cb) => {
      readOnly(cb);
    },
    mknod: (_path, _mode, _dev, cb) => {
      readOnly(cb);
    },
    setxattr: (_path, _name, _value, _position, _flags, cb) => {
      readOnly(cb);
    },
    removexattr: (_path, _name, cb) => {
      readOnly(cb);
    },
    unlink: (_path, cb) => {
      readOnly(cb);
    },
    rename: (_source, _destination, cb) => {
      readOnly(cb);
    },
    link: (_source, _destination, cb) => {
      readOnly(cb);
    },
    symlink: (_source, _destination, cb) => {
      readOnly(cb);
    },
    mkdir: (_path, _mode, cb) => {
      readOnly(cb);
    },
    rmdir: (_path, cb) => {
      readOnly(cb);
    },
  };
}
