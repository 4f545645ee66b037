// SPDX-License-Identifier: MIT
/**
 * The classic MBR partition table (LBA0). Layout: boot code [0, 446), four 16-byte entries at
 * 446, signature 55 AA at 510. Entry: status u8, CHS first (3), type u8, CHS last (3),
 * LBA first u32 LE, sector count u32 LE.
 */
import { fileError } from '../errors/synthvhd-error.js';
import type { Partition } from './partition.js';

export const MBR_SIGNATURE_OFFSET = 510;
export const MBR_ENTRIES_OFFSET = 446;
export const MBR_ENTRY_SIZE = 16;
/** Disk signature (Windows' MBR disk identity), bytes 440–443. */
export const MBR_DISK_SIGNATURE_OFFSET = 440;
/** Type 0xEE: protective MBR of a GPT disk (UEFI spec §5.2.3). */
export const MBR_TYPE_GPT_PROTECTIVE = 0xee;
/** Extended partition types (CHS, LBA, Linux): their logical partitions live in EBRs. */
const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);

export interface MbrEntry {
  readonly index: number;
  readonly type: number;
  readonly firstLba: number;
  readonly sectorCount: number;
}

export function hasMbrSignature(sector: Uint8Array): boolean {
  return sector[MBR_SIGNATURE_OFFSET] === 0x55 && sector[MBR_SIGNATURE_OFFSET + 1] === 0xaa;
}

export function mbrDiskSignature(sector: Uint8Array): number {
  return new DataView(sector.buffer, sector.byteOffset).getUint32(MBR_DISK_SIGNATURE_OFFSET, true);
}

/** The four primary entries; empty ones (type 0 or no sectors) are left out. */
export function parseMbrEntries(sector: Uint8Array): MbrEntry[] {
  const view = new DataView(sector.buffer, sector.byteOffset, 512);
  const entries: MbrEntry[] = [];
  for (let index = 0; index < 4; index++) {
    const at = MBR_ENTRIES_OFFSET + index * MBR_ENTRY_SIZE;
    const type = view.getUint8(at + 4);
    const firstLba = view.getUint32(at + 8, true);
    const sectorCount = view.getUint32(at + 12, true);
    if (type !== 0 && sectorCount !== 0) entries.push({ index, type, firstLba, sectorCount });
  }
  return entries;
}

export function isExtended(entry: MbrEntry): boolean {
  return EXTENDED_TYPES.has(entry.type);
}

/**
 * Primary partitions of an MBR disk in Windows numbering: Windows numbers the non-extended
 * primary entries 1, 2, … in table order; logical partitions inside an extended partition
 * come after them, but urBackup saves only LBA0, never the EBRs (docs/urbackup-formats.md §3.3 field 8),
 * so those cannot be placed.
 */
export function mbrPartitions(sector: Uint8Array, path: string): { partitions: Partition[]; hasExtended: boolean } {
  if (!hasMbrSignature(sector)) throw fileError('E_PARTITION_TABLE', path, 'saved MBR has no 55 AA signature');
  const entries = parseMbrEntries(sector);
  const partitions: Partition[] = [];
  for (const entry of entries) {
    if (isExtended(entry)) continue;
    partitions.push({
      number: partitions.length + 1,
      offset: entry.firstLba * 512,
      length: entry.sectorCount * 512,
      type: entry.type.toString(16).padStart(2, '0'),
      name: '',
    });
  }
  return { partitions, hasExtended: entries.some(isExtended) };
}

/** End of the furthest entry, extended partitions included (they occupy the disk too). */
export function mbrTableEnd(sector: Uint8Array): number {
  return Math.max(0, ...parseMbrEntries(sector).map((entry) => (entry.firstLba + entry.sectorCount) * 512));
}
