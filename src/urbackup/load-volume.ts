// SPDX-License-Identifier: MIT
/**
 * Reads what composing a disk needs from one volume backup: its parsed `.raw.mbr`, where the
 * volume sits inside the `.raw` and how long it is, its boot sector, and which ranges of the
 * `.raw` hold data (the rest are holes: zeros that cost nothing). Sources are opened read-only.
 */
import type { FileHandle } from 'node:fs/promises';
import { fileError, isSynthvhdError } from '../errors/synthvhd-error.js';
import { openSourceFile, readSourceFile } from '../extents/confined-open.js';
import { dataRanges } from '../native/native.js';
import { type MbrData, parseMbrFile } from './mbr-data.js';
import type { VolumeBackup } from './backup-tree.js';
import { MBR_ENTRIES_OFFSET, MBR_TYPE_GPT_PROTECTIVE } from '../disk/mbr.js';

/** docs/urbackup-formats.md §2.2: the volume starts at a constant 512 KiB in every `.raw`. */
export const RAW_VOLUME_OFFSET = 524288;
/** Bytes of the volume's start kept for boot-sector checks (one 4Kn sector). */
const BOOT_SECTOR_BYTES = 4096;

export interface DataRange {
  readonly offset: number;
  readonly length: number;
}

export interface LoadedVolume {
  readonly backup: VolumeBackup;
  readonly mbrBytes: Uint8Array;
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
}

async function readExactly(handle: FileHandle, position: number, length: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  const { bytesRead } = await handle.read(buffer, 0, length, position);
  return buffer.subarray(0, bytesRead);
}

/**
 * Volume length inside a `.raw` (docs/urbackup-formats.md §2.3): `size - 512 KiB`, except for volumes over
 * 2 TiB, where urBackup (2.5.x) writes a protective MBR and its own GPT, whose single entry's
 * LastLBA is one past the volume's end, and puts a backup GPT after the volume.
 */
async function rawVolumeLength(raw: FileHandle, rawPath: string, rawSize: number): Promise<number> {
  if (rawSize <= RAW_VOLUME_OFFSET) {
    throw fileError('E_RAW_IMAGE', rawPath, `is ${rawSize} bytes: shorter than urBackup's 512 KiB header, no volume data`);
  }
  const head = await readExactly(raw, 0, 512 * 3);
  // Test the type byte itself: urBackup 2.5.x writes the 0xEE entry's sector count as
  // (unsigned int)(2 TiB / 512), which truncates to 0, so the entry looks empty.
  if (head[MBR_ENTRIES_OFFSET + 4] !== MBR_TYPE_GPT_PROTECTIVE) return rawSize - RAW_VOLUME_OFFSET;
  const view = new DataView(head.buffer, head.byteOffset, head.length);
  const tableLba = Number(view.getBigUint64(512 + 72, true));
  const entry = await readExactly(raw, tableLba * 512, 128);
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

export async function loadVolume(backup: VolumeBackup): Promise<LoadedVolume> {
  const confinement = { root: backup.root };
  const mbr = await readSourceFile(backup.mbrPath, confinement, { maxSize: MAX_MBR_FILE_SIZE, role: 'urBackup .raw.mbr' }).catch((error: unknown) => {
    if (isSynthvhdError(error) && error.code === 'E_UNSAFE_SOURCE') throw error;
    throw fileError('E_MBRDATA', backup.mbrPath, `cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, error);
  });
  const parsed = parseMbrFile(mbr.bytes, backup.mbrPath);
  let raw: FileHandle;
  try {
    raw = await openSourceFile(backup.rawPath, confinement, { role: 'urBackup .raw image' });
  } catch (error) {
    if (isSynthvhdError(error) && error.code === 'E_UNSAFE_SOURCE') throw error;
    const cause = isSynthvhdError(error) ? error.cause : error;
    throw fileError('E_RAW_IMAGE', backup.rawPath, `cannot read: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`, cause);
  }
  try {
    const rawStat = await raw.stat();
    const rawSize = rawStat.size;
    const mtimeMs = Math.max(rawStat.mtimeMs, mbr.mtimeMs);
    const wholeDisk = parsed.kind === 'whole-disk';
    const volumeOffset = wholeDisk ? 0 : RAW_VOLUME_OFFSET;
    const volumeLength = wholeDisk ? rawSize : await rawVolumeLength(raw, backup.rawPath, rawSize);
    const bootSector = await readExactly(raw, volumeOffset, BOOT_SECTOR_BYTES);
    const ranges = await dataRanges(raw.fd, volumeOffset, volumeOffset + volumeLength);
    return {
      backup,
      mbrBytes: mbr.bytes,
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
