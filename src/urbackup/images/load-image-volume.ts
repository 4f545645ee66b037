// SPDX-License-Identifier: MIT
/**
 * What composing a disk needs from an image backup stored as VHD/VHDZ/VHDX/VHDXZ (issue #15),
 * the counterpart of src/urbackup/load-volume.ts for `.raw`: the volume as extents (chains
 * resolved), its length, boot sector and modification time, and which parts of it this backup
 * run wrote itself (for backup-run diffs that read nothing). Every file is opened through the
 * caller's opener (the confined open in production).
 */
import { SynthvhdError } from '../../errors/synthvhd-error.js';
import { type Range, RangeSet } from '../../util/range-set.js';
import { ImageBytes } from './image-bytes.js';
import type { SourceOpener } from './image-file.js';
import { type ImageLayout } from './image-extent.js';
import { volumeLayout, volumeOffsetFromMbr } from './image-volume.js';
import { type ChainFile, type ChainLevel, type OpenedImageDisk, openImageDisk } from './open-image-backup.js';

/** Bytes of the volume's start kept for boot-sector checks (one 4Kn sector), as load-volume.ts. */
const BOOT_SECTOR_BYTES = 4096;

export type { Range } from '../../util/range-set.js';

export interface LoadedImageVolume {
  readonly path: string;
  readonly format: 'vhd' | 'vhdx';
  readonly compressed: boolean;
  readonly type: 'dynamic' | 'differencing';
  /** The volume, [0, volumeLength). */
  readonly volume: ImageLayout;
  readonly volumeLength: number;
  /** Where the volume starts in the image's disk (from its synthetic MBR; 0 for whole-disk). */
  readonly volumeOffset: number;
  readonly bootSector: Uint8Array;
  /** Newest mtime of the chain's files. */
  readonly mtimeMs: number;
  readonly chain: readonly ChainFile[];
  /** The opened disk (for changedSince). */
  readonly disk: OpenedImageDisk;
  readonly warnings: readonly string[];
}

/**
 * Loads the image at `imagePath`. `wholeDisk`: its `.mbr` is version 100 (the image is the disk,
 * no synthetic MBR).
 */
export async function loadImageVolume(imagePath: string, wholeDisk: boolean, opener: SourceOpener): Promise<LoadedImageVolume> {
  // Headers and BATs only (a VHD chain's sector bitmaps are read with its blocks): ls, doctor and
  // the mount open alike; reading the synthetic MBR and the boot sector decodes the first blocks.
  const disk = await openImageDisk(imagePath, opener);
  const reader = new ImageBytes(opener);
  try {
    const volumeOffset = wholeDisk ? 0 : volumeOffsetFromMbr(await reader.read(disk.disk, 0, 512), disk.disk.size);
    const volume = wholeDisk ? disk.disk : volumeLayout(disk.disk, volumeOffset);
    const bootSector = await reader.read(volume, 0, BOOT_SECTOR_BYTES);
    return {
      path: disk.path,
      format: disk.format,
      compressed: disk.compressed,
      type: disk.type,
      volume,
      volumeLength: volume.size,
      volumeOffset,
      bootSector,
      mtimeMs: Math.max(...disk.chain.map((file) => file.mtimeMs)),
      chain: disk.chain,
      disk,
      warnings: disk.warnings,
    };
  } finally {
    await reader.close();
  }
}

/**
 * The parts of the volume that may differ between `image` and the older backup `olderPath`,
 * from the chain's own BATs and bitmaps alone (nothing is read): the union of what every file
 * from `image` down to (not including) `olderPath` wrote. undefined when `olderPath` is not in
 * the chain (then only comparing data can tell).
 */
export async function changedSince(
  image: Pick<LoadedImageVolume, 'volumeOffset' | 'volumeLength'> & { readonly disk: ChainLevel },
  olderPath: string,
): Promise<Range[] | undefined> {
  const ranges = new RangeSet();
  let older: ChainLevel | undefined;
  for (let at: ChainLevel | undefined = image.disk; at !== undefined; at = at.parent) {
    if (at.path === olderPath) {
      older = at;
      break;
    }
    for (const [start, length] of await at.ownRanges()) {
      const from = Math.max(start, image.volumeOffset);
      const to = Math.min(start + length, image.volumeOffset + image.volumeLength);
      if (to > from) ranges.add(from - image.volumeOffset, to - from);
    }
  }
  if (older === undefined) return undefined;
  // A child larger than its parent: the grown part is new.
  if (older.size < image.volumeOffset + image.volumeLength) {
    const grownFrom = Math.max(0, older.size - image.volumeOffset);
    ranges.add(grownFrom, image.volumeLength - grownFrom);
  }
  return ranges.ranges();
}

/** Which `chunkSize` chunks of the volume `ranges` touch (true = changed). */
export function changedChunkFlags(ranges: readonly Range[], volumeLength: number, chunkSize: number): boolean[] {
  if (chunkSize <= 0) throw new SynthvhdError('E_INTERNAL', 'internal error (please report): chunk size');
  const flags = new Array<boolean>(Math.ceil(volumeLength / chunkSize)).fill(false);
  for (const [start, length] of ranges) {
    for (let chunk = Math.floor(start / chunkSize); chunk * chunkSize < start + length && chunk < flags.length; chunk++) flags[chunk] = true;
  }
  return flags;
}
