// SPDX-License-Identifier: MIT
/**
 * Types for fuse-native@2.2.6 (no types of its own), limited to what src/fuse uses. Written from
 * node_modules/fuse-native/index.js and fuse-native.c:
 * - every callback's first argument is the result: 0 or a negative errno; for `read` it is the
 *   byte count (`cb(bytesRead)`), for `open` the second argument is the file handle (uint32);
 * - a Stat is packed into uint32s (`getStatArray`): `ino` is truncated to 32 bits, sizes and
 *   block counts are 64-bit, times are milliseconds;
 * - `read`'s buffer is an external Buffer over libfuse's own buffer, detached after the callback.
 */
declare module 'fuse-native' {
  namespace Fuse {
    interface Stat {
      mode: number;
      uid?: number;
      gid?: number;
      size?: number;
      dev?: number;
      nlink?: number;
      ino?: number;
      rdev?: number;
      blksize?: number;
      blocks?: number;
      atime?: Date | number;
      mtime?: Date | number;
      ctime?: Date | number;
    }

    /** statvfs fields, each truncated to 32 bits by fuse-native. */
    interface StatFs {
      bsize: number;
      frsize: number;
      blocks: number;
      bfree: number;
      bavail: number;
      files: number;
      ffree: number;
      favail: number;
      fsid: number;
      flag: number;
      namemax: number;
    }

    type DoneCallback = (result: number) => void;

    interface Operations {
      init?: (cb: DoneCallback) => void;
      access?: (path: string, mode: number, cb: DoneCallback) => void;
      statfs?: (path: string, cb: (result: number, statfs?: StatFs) => void) => void;
      getattr?: (path: string, cb: (result: number, stat?: Stat) => void) => void;
      fgetattr?: (path: string, fd: number, cb: (result: number, stat?: Stat) => void) => void;
      flush?: (path: string, fd: number, cb: DoneCallback) => void;
      fsync?: (path: string, datasync: number, fd: number, cb: DoneCallback) => void;
      fsyncdir?: (path: string, datasync: number, fd: number, cb: DoneCallback) => void;
      readdir?: (path: string, cb: (result: number, names?: string[], stats?: Stat[]) => void) => void;
      truncate?: (path: string, size: number, cb: DoneCallback) => void;
      ftruncate?: (path: string, fd: number, size: number, cb: DoneCallback) => void;
      utimens?: (path: string, atime: number, mtime: number, cb: DoneCallback) => void;
      readlink?: (path: string, cb: (result: number, linkname?: string) => void) => void;
      chown?: (path: string, uid: number, gid: number, cb: DoneCallback) => void;
      chmod?: (path: string, mode: number, cb: DoneCallback) => void;
      mknod?: (path: string, mode: number, dev: number, cb: DoneCallback) => void;
      setxattr?: (path: string, name: string, value: Buffer, position: number, flags: number, cb: DoneCallback) => void;
      getxattr?: (path: string, name: string, position: number, cb: (result: number, value?: Buffer) => void) => void;
      listxattr?: (path: string, cb: (result: number, list?: string[]) => void) => void;
      removexattr?: (path: string, name: string, cb: DoneCallback) => void;
      open?: (path: string, flags: number, cb: (result: number, fd?: number) => void) => void;
      opendir?: (path: string, flags: number, cb: (result: number, fd?: number) => void) => void;
      read?: (path: string, fd: number, buffer: Buffer, length: number, position: number, cb: DoneCallback) => void;
      write?: (path: string, fd: number, buffer: Buffer, length: number, position: number, cb: DoneCallback) => void;
      release?: (path: string, fd: number, cb: DoneCallback) => void;
      releasedir?: (path: string, fd: number, cb: DoneCallback) => void;
      create?: (path: string, mode: number, cb: (result: number, fd?: number) => void) => void;
      unlink?: (path: string, cb: DoneCallback) => void;
      rename?: (source: string, destination: string, cb: DoneCallback) => void;
      link?: (source: string, destination: string, cb: DoneCallback) => void;
      symlink?: (source: string, destination: string, cb: DoneCallback) => void;
      mkdir?: (path: string, mode: number, cb: DoneCallback) => void;
      rmdir?: (path: string, cb: DoneCallback) => void;
    }

    interface Options {
      /** `false`: no per-operation timeout (the default turns reads slower than 15 s into ETIMEDOUT). */
      timeout?: false | number;
      force?: boolean;
      mkdir?: boolean;
      debug?: boolean;
      allowOther?: boolean;
      fsname?: string;
      subtype?: string;
    }
  }

  class Fuse {
    constructor(mountpoint: string, ops: Fuse.Operations, options?: Fuse.Options);
    readonly mnt: string;
    mount(cb: (error: Error | null) => void): void;
    unmount(cb: (error: Error | null) => void): void;
    /** The `-o…` argument handed to libfuse's fuse_mount and fuse_new. */
    protected _fuseOptions(): string;
    static unmount(mountpoint: string, cb: (error: Error | null) => void): void;
  }

  export = Fuse;
}
