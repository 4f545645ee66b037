// SPDX-License-Identifier: MIT
/**
 * Stable inode numbers. Samba identifies a file by (st_dev, st_ino) for locks, oplocks and
 * leases, so a file must keep its number across lookups, `forget`s and remounts. The FUSE
 * session reports st_ino exactly as getattr gives it (its own node ids are separate). Numbers
 * stay within 32 bits, as they were when fuse-native could only pass 32, so a file keeps the
 * id Samba knows it by across synthvhd versions. Three disjoint ranges:
 *
 *   [1, 2^30)       a real file or directory on the backup root's own file system: its inode
 *   [2^30, 2^31)    a real entry elsewhere (another file system below the root, e.g. a btrfs
 *                   subvolume per backup, whose inode numbers repeat): hash of (st_dev, st_ino)
 *   [2^31, 2^32)    a virtual disk file: hash of its path relative to the root
 *
 * Hashes can collide (p ~ n^2 / 2^31); a collision only makes Samba treat two files as one for
 * locking, never mixes their bytes.
 */
import { createHash } from 'node:crypto';

const RANGE_OWN = 2 ** 30;
const RANGE_HASHED = 2 ** 30;
const RANGE_VIRTUAL = 2 ** 31;

function hash32(text: string): number {
  return createHash('sha256').update(text).digest().readUInt32LE(0);
}

/** Inode of a real entry: `dev`/`ino` from lstat, `rootDev` the backup root's st_dev. */
export function realInode(dev: number, ino: number, rootDev: number): number {
  if (dev === rootDev && ino > 0 && ino < RANGE_OWN) return ino;
  return RANGE_HASHED + (hash32(`real\0${dev}\0${ino}`) % RANGE_HASHED);
}

/** Inode of a virtual file, from its mount-relative path (`/client/folder/name`). */
export function virtualInode(path: string): number {
  return RANGE_VIRTUAL + (hash32(`virtual\0${path}`) % RANGE_VIRTUAL);
}
