// SPDX-License-Identifier: MIT
/**
 * Who may read a virtual file, as one owner, group and mode (docs/architecture.md "Who may read
 * what"). A virtual disk serves bytes of several source files (every placed volume's `.raw` and
 * `.raw.mbr`, for a diff those of two backups); reaching each of them also takes search
 * permission on every folder from the backup root down to it. The kernel checks a FUSE file
 * with `default_permissions` against the owner, group and mode we report, so those must grant
 * a read only to a user who could read every source.
 *
 * POSIX checks exactly one class of a file's mode for a user: owner if the user owns it, else
 * group if the user is in its group, else other. For a class of the virtual file we do not know
 * the members (group membership is not ours to look up, and changes), so a class is granted on
 * a source only when every class of that source a member could fall into grants it:
 *
 * - the virtual owner U: the source's owner class if U owns it, else its group and other classes;
 * - a member of the virtual group G: the source's owner class unless U owns the source (a member
 *   may own it), its group class, and its other class unless the source's group is G;
 * - anyone else: the source's owner class unless U owns it, its group class unless the source's
 *   group is G, and its other class.
 *
 * The result can only be narrower than the truth, never wider. root reads everything anyway.
 */

/** One file or folder a virtual file depends on: a source it reads, or a folder on the way. */
export interface SourceObject {
  readonly uid: number;
  readonly gid: number;
  /** st_mode (permission bits are taken from it). */
  readonly mode: number;
  /** Folders need search (x) permission, files read (r). */
  readonly isDirectory: boolean;
}

export interface VirtualAccess {
  readonly uid: number;
  readonly gid: number;
  /** Permission bits only: read bits for the classes that may read (0o440, 0o400, …). */
  readonly mode: number;
}

type PermissionClass = 'owner' | 'group' | 'other';
const SHIFT: Record<PermissionClass, number> = { owner: 6, group: 3, other: 0 };

function grants(object: SourceObject, permissionClass: PermissionClass): boolean {
  const needed = object.isDirectory ? 1 : 4;
  return ((object.mode >> SHIFT[permissionClass]) & needed) !== 0;
}

/** The classes of `object` a member of the virtual file's class `of` could be checked against. */
function classesFor(object: SourceObject, of: PermissionClass, owner: number, group: number): PermissionClass[] {
  const ownsIt = object.uid === owner;
  switch (of) {
    case 'owner':
      return ownsIt ? ['owner'] : ['group', 'other'];
    case 'group':
      return [...(ownsIt ? [] : ['owner' as const]), 'group', ...(object.gid === group ? [] : ['other' as const])];
    case 'other':
      return [...(ownsIt ? [] : ['owner' as const]), ...(object.gid === group ? [] : ['group' as const]), 'other'];
  }
}

/** Owner `uid`/`gid` and the read bits of a virtual file that depends on `objects`. */
export function virtualAccess(objects: readonly SourceObject[], uid: number, gid: number): VirtualAccess {
  let mode = 0;
  for (const permissionClass of ['owner', 'group', 'other'] as const) {
    const allowed = objects.every((object) => classesFor(object, permissionClass, uid, gid).every((sourceClass) => grants(object, sourceClass)));
    if (allowed) mode |= 4 << SHIFT[permissionClass];
  }
  return { uid, gid, mode };
}

/** A mirrored source entry's permission bits: its own, without write (and set-id) bits. */
export function mirroredMode(mode: number): number {
  return mode & 0o1555;
}
