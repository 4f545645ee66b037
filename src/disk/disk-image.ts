// SPDX-License-Identifier: MIT
import type { Layout } from '../extents/extent.js';

/** A composed whole disk: what `disk/` hands to `container/`. */
export interface DiskImage {
  /** The disk's bytes, [0, size). Holes of the sources are already `zero` extents. */
  readonly layout: Layout;
  /** Logical sector size of the original disk: 512, or 4096 for 4Kn disks. */
  readonly sectorSize: 512 | 4096;
  /**
   * 32 bytes that identify the source (a hash of the `.raw.mbr` contents, `.raw` sizes and
   * mtimes). Every GUID and timestamp of a container is derived from it, so one backup
   * always yields the same bytes.
   */
  readonly identity: Uint8Array;
  /** Newest mtime of the sources, in ms since the epoch (container timestamps, FUSE mtime). */
  readonly mtimeMs: number;
}
