// SPDX-License-Identifier: MIT
/**
 * Reads what composing a disk needs from one volume backup: its parsed `.raw.mbr`, where the
 * volume sits inside the `.raw` and how long it is, its boot sector, and which ranges of the
 * `.raw` hold data (the rest are holes: zeros that cost nothing). Sources are opened read-only.
 */
import { fileError, isSynthvhdError } from '../errors/synthvhd-error.js';
import { type MbrData, parseMbrFile } from './mbr-data.js';
import type { VolumeBackup } from './backup-tree.js';
import { nodeBackupFs, type BackupFs, type BackupImageFile } from './backup-fs.js';
import type { Layout } from '../extents/extent.js';
import { openSourceFile } from '../extents/confined-open.js';
import { type LoadedImageVolume, loadImageVolume } from './images/load-image-volume.js';

/** docs/urbackup-formats.md §2.2: the volume starts at a constant 512 KiB in every `.raw`. */
export const RAW_VOLUME_OFFSET = 524288;
/**
 * urBackup's own header of a `.raw` whose volume is over 2 TiB (docs/urbackup-formats.md §2.3) is
 * a protective MBR: the type byte of its first entry (446 + 4) is 0xEE. Read here in urBackup's
 * terms, so that reading inputs does not depend on composing disks (src/disk/ depends on us).
 */
const RAW_HEADER_FIRST_TYPE_BYTE = 446 + 4;
const RAW_HEADER_GPT_PROTECTIVE = 0xee;
/** Bytes of the volume's start kept for boot-sector checks (one 4Kn sector). */
const BOOT_SECTOR_BYTES = 4096;

export interface DataRange {
  readonly offset: number;
  readonly length: number;
}

export interface LoadedVolume {
  readonly backup: VolumeBackup;
  /**
   * The `.raw.mbr` file, part of the disk's identity (src/disk/compose-disk.ts; docs/containers.md
   * §5). undefined in a summary (`holes: false`: ls, doctor), which derives no identity: a scan
   * of 10 000 disks then keeps none of the 20 000 files it reads (it reads them all into one
   * buffer, src/urbackup/backup-fs.ts).
   */
  readonly mbrBytes: Uint8Array | undefined;
  /** undefined for a whole-disk image (`.raw.mbr` version 100, docs/urbackup-formats.md §2.5). */
  readonly mbrData: MbrData | undefined;
  readonly rawSize: number;
  /** Newest mtime of `.raw` and `.raw.mbr`. */
  readonly mtimeMs: number;
  /** Where the volume starts inside the `.raw` (0 for whole-disk images). */
  readonly volumeOffset: number;
  readonly volumeLength: number;
  readonly bootSector: Uint8Array;
  /** Ranges of the `.raw` (file offsets) inside the volume that hold data, sorted. */
  readonly dataRanges: readonly DataRange[];
  /**
   * A `.vhd`/`.vhdz`/`.vhdx`/`.vhdxz` backup (docs/urbackup-image-formats.md): the volume as
   * extents, [0, volumeLength), with its chain resolved; `volumeOffset` is then 0 and
   * `dataRanges` are offsets into this layout. undefined for a `.raw`.
   */
  readonly image?: { readonly layout: Layout; readonly loaded: LoadedImageVolume };
}


/**
 * Volume length inside a `.raw` (docs/urbackup-formats.md §2.3): `size - 512 KiB`, except for volumes over
 * 2 TiB, where urBackup (2.5.x) writes a protective MBR and its own GPT, whose single entry's
 * LastLBA is one past the volume's end, and puts a backup GPT after the volume.
 */
async function rawVolumeLength(raw: BackupImageFile, rawPath: string, rawSize: number): Promise<number> {
  if (rawSize <= RAW_VOLUME_OFFSET) {
    throw fileError('E_RAW_IMAGE', rawPath, `is ${rawSize} bytes: shorter than urBackup's 512 KiB header, no volume data`);
  }
  // docs/urbackup-formats.md §2.3: the own GPT only when drivesize > 2 TiB, so a .raw of at most
  // 524288 + 2 TiB bytes has none (and its head need not be read).
  if (rawSize - RAW_VOLUME_OFFSET <= 2 * 1024 ** 4) return rawSize - RAW_VOLUME_OFFSET;
  const head = await raw.read(0, 512 * 3);
  // Test the type byte itself: urBackup 2.5.x writes the 0xEE entry's sector count as
  // (unsigned int)(2 TiB / 512), which truncates to 0, so the entry looks empty.
  if (head[RAW_HEADER_FIRST_TYPE_BYTE] !== RAW_HEADER_GPT_PROTECTIVE) return rawSize - RAW_VOLUME_OFFSET;
  const view = new DataView(head.buffer, head.byteOffset, head.length);
  const tableLba = Number(view.getBigUint64(512 + 72, true));
  const entry = await raw.read(tableLba * 512, 128);
  if (entry.length < 128) throw fileError('E_RAW_IMAGE', rawPath, 'truncated inside its own GPT (volume over 2 TiB)');
  const lastLba = Number(new DataView(entry.buffer, entry.byteOffset).getBigUint64(40, true));
  const length = lastLba * 512 - RAW_VOLUME_OFFSET;
  if (length <= 0 || RAW_VOLUME_OFFSET + length > rawSize) {
    throw fileError('E_RAW_IMAGE', rawPath, `its GPT says the volume ends at byte ${lastLba * 512}, the file has ${rawSize}`);
  }
  return length;
}

/**
 * Largest `.raw.mbr` accepted (docs/urbackup-formats.md): SMBRData holds sector 0, for GPT disks
 * two headers and two 128-entry arrays (at most 4 × 16 KiB with 4 KiB sectors) and a few short
 * strings. 1 MiB leaves ample room and keeps a planted huge file from being read into memory.
 */
export const MAX_MBR_FILE_SIZE = 1024 * 1024;

export interface LoadOptions {
  /**
   * Find the holes of the `.raw` (SEEK_DATA/SEEK_HOLE, default true). Without, the whole volume
   * counts as data: the disk's size, table and placement are the same, its layout just has no
   * zero extents for the holes. `ls` and `doctor` need no more. A VHD/VHDZ/VHDX(Z) backup is
   * loaded the same either way (headers and BATs: src/urbackup/images/load-image-volume.ts).
   */
  readonly holes?: boolean;
}

/** Loads one volume backup through `fs` (the real file system unless a test gives another). */
export async function loadVolume(backup: VolumeBackup, fs: BackupFs = nodeBackupFs, options: LoadOptions = {}): Promise<LoadedVolume> {
  const confinement = { root: backup.root };
  const mbr = await fs
    .parseSmallFile(backup.mbrPath, confinement, { maxSize: MAX_MBR_FILE_SIZE, role: 'urBackup .raw.mbr' }, (bytes) => ({
      parsed: parseMbrFile(bytes, backup.mbrPath),
      kept: options.holes === false ? undefined : new Uint8Array(bytes),
    }))
    .catch((error: unknown) => {
      // A refused source, or the file read but not understood: as they are.
      if (isSynthvhdError(error) && (error.code === 'E_UNSAFE_SOURCE' || error.code === 'E_MBRDATA')) throw error;
      throw fileError('E_MBRDATA', backup.mbrPath, `cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, error);
    });
  const { parsed } = mbr.value;
  if (backup.format !== undefined && backup.format !== 'raw') {
    // Every file of the chain is opened through the confined open (parents too).
    const opener = (path: string, role: string): ReturnType<typeof openSourceFile> => openSourceFile(path, confinement, { role });
    const loaded = await loadImageVolume(backup.rawPath, parsed.kind === 'whole-disk', opener);
    const layout = loaded.volume;
    const ranges: DataRange[] = [];
    for (const extent of layout.extents) {
      if (extent.kind === 'zero') continue;
      const last = ranges.at(-1);
      if (last !== undefined && last.offset + last.length === extent.start) ranges[ranges.length - 1] = { offset: last.offset, length: last.length + extent.length };
      else ranges.push({ offset: extent.start, length: extent.length });
    }
    return {
      backup,
      mbrBytes: mbr.value.kept,
      mbrData: parsed.kind === 'whole-disk' ? undefined : parsed.data,
      rawSize: loaded.chain[0]?.fileSize ?? 0,
      mtimeMs: Math.max(loaded.mtimeMs, mbr.mtimeMs),
      volumeOffset: 0,
      volumeLength: loaded.volumeLength,
      bootSector: loaded.bootSector,
      dataRanges: ranges,
      image: { layout, loaded },
    };
  }
  let raw: BackupImageFile;
  try {
    raw = await fs.openImage(backup.rawPath, confinement, { role: 'urBackup .raw image' });
  } catch (error) {
    if (isSynthvhdError(error) && error.code === 'E_UNSAFE_SOURCE') throw error;
    const cause = isSynthvhdError(error) ? error.cause : error;
    throw fileError('E_RAW_IMAGE', backup.rawPath, `cannot read: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`, cause);
  }
  try {
    const rawSize = raw.size;
    const mtimeMs = Math.max(raw.mtimeMs, mbr.mtimeMs);
    const wholeDisk = parsed.kind === 'whole-disk';
    const volumeOffset = wholeDisk ? 0 : RAW_VOLUME_OFFSET;
    const volumeLength = wholeDisk ? rawSize : await rawVolumeLength(raw, backup.rawPath, rawSize);
    const bootSector = await raw.read(volumeOffset, BOOT_SECTOR_BYTES);
    const ranges = options.holes === false ? [[volumeOffset, volumeLength] as const] : await raw.dataRanges(volumeOffset, volumeOffset + volumeLength);
    return {
      backup,
      mbrBytes: mbr.value.kept,
      mbrData: wholeDisk ? undefined : parsed.data,
      rawSize,
      mtimeMs,
      volumeOffset,
      volumeLength,
      bootSector,
      dataRanges: ranges.map(([offset, length]) => ({ offset, length })),
    };
  } finally {
    await raw.close();
  }
}
