// SPDX-License-Identifier: MIT
/**
 * GUID Partition Table: parsing, CRC checks and regeneration of one copy from the other.
 * Spec: UEFI Specification 2.10, §5.3 "GUID Partition Table (GPT) Disk Layout".
 *
 * Header (§5.3.2, Table 5-5), little-endian:
 *   0 Signature "EFI PART" | 8 Revision u32 | 12 HeaderSize u32 | 16 HeaderCRC32 u32 |
 *   20 Reserved | 24 MyLBA u64 | 32 AlternateLBA u64 | 40 FirstUsableLBA u64 |
 *   48 LastUsableLBA u64 | 56 DiskGUID (16) | 72 PartitionEntryLBA u64 |
 *   80 NumberOfPartitionEntries u32 | 84 SizeOfPartitionEntry u32 | 88 PartitionEntryArrayCRC32 u32
 * Entry (§5.3.3, Table 5-6): 0 type GUID | 16 unique GUID | 32 StartingLBA u64 |
 *   40 EndingLBA u64 (inclusive) | 48 Attributes u64 | 56 name, 36 UTF-16LE code units.
 * CRC32 is the IEEE 802.3 CRC (zlib's), not CRC-32C.
 */
import { crc32 } from '@node-rs/crc32';
import type { Partition } from './partition.js';

const GPT_SIGNATURE = 'EFI PART';
const HEADER_CRC_OFFSET = 16;
const MIN_HEADER_SIZE = 92;

export interface GptHeader {
  readonly headerSize: number;
  readonly myLba: number;
  readonly alternateLba: number;
  readonly firstUsableLba: number;
  readonly lastUsableLba: number;
  /** DiskGUID as on disk (16 bytes, mixed-endian). */
  readonly diskGuid: Uint8Array;
  readonly entriesLba: number;
  readonly entryCount: number;
  readonly entrySize: number;
  readonly entriesCrc: number;
}

export type GptCheck = { readonly ok: true; readonly header: GptHeader } | { readonly ok: false; readonly problem: string };

function u64(view: DataView, at: number): number {
  return Number(view.getBigUint64(at, true));
}

function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** CRC32 of the header's first HeaderSize bytes with the CRC field zeroed (§5.3.2). */
export function gptHeaderCrc(sector: Uint8Array, headerSize: number): number {
  const copy = Uint8Array.from(sector.subarray(0, headerSize));
  copy.fill(0, HEADER_CRC_OFFSET, HEADER_CRC_OFFSET + 4);
  return crc32(bufferOf(copy));
}

/** Parses and checks a header sector; `table`, when given, is checked against its CRC too. */
export function checkGptHeader(sector: Uint8Array, table?: Uint8Array): GptCheck {
  if (sector.length < MIN_HEADER_SIZE) return { ok: false, problem: `header is ${sector.length} bytes` };
  if (new TextDecoder('latin1').decode(sector.subarray(0, 8)) !== GPT_SIGNATURE) {
    return { ok: false, problem: 'no "EFI PART" signature' };
  }
  const view = new DataView(sector.buffer, sector.byteOffset, sector.length);
  const headerSize = view.getUint32(12, true);
  if (headerSize < MIN_HEADER_SIZE || headerSize > sector.length) return { ok: false, problem: `bad header size ${headerSize}` };
  const storedCrc = view.getUint32(HEADER_CRC_OFFSET, true);
  if (gptHeaderCrc(sector, headerSize) !== storedCrc) return { ok: false, problem: 'header CRC32 mismatch' };
  const header: GptHeader = {
    headerSize,
    myLba: u64(view, 24),
    alternateLba: u64(view, 32),
    firstUsableLba: u64(view, 40),
    lastUsableLba: u64(view, 48),
    diskGuid: sector.slice(56, 72),
    entriesLba: u64(view, 72),
    entryCount: view.getUint32(80, true),
    entrySize: view.getUint32(84, true),
    entriesCrc: view.getUint32(88, true),
  };
  if (header.entrySize < 128 || header.entrySize % 8 !== 0) return { ok: false, problem: `bad entry size ${header.entrySize}` };
  if (table !== undefined) {
    const tableLength = header.entryCount * header.entrySize;
    if (table.length < tableLength) return { ok: false, problem: `partition array is ${table.length} bytes, header says ${tableLength}` };
    if (crc32(bufferOf(table.subarray(0, tableLength))) !== header.entriesCrc) {
      return { ok: false, problem: 'partition array CRC32 mismatch' };
    }
  }
  return { ok: true, header };
}

/**
 * The other copy of a header (§5.3.2: the backup has MyLBA and AlternateLBA swapped and its
 * own PartitionEntryLBA), with a fresh CRC. Everything else, reserved bytes included, is
 * kept, so regenerating a good copy reproduces it byte for byte.
 */
export function mirrorGptHeader(sector: Uint8Array, header: GptHeader, entriesLba: number): Uint8Array {
  const copy = Uint8Array.from(sector);
  const view = new DataView(copy.buffer);
  view.setBigUint64(24, BigInt(header.alternateLba), true);
  view.setBigUint64(32, BigInt(header.myLba), true);
  view.setBigUint64(72, BigInt(entriesLba), true);
  view.setUint32(HEADER_CRC_OFFSET, gptHeaderCrc(copy, header.headerSize), true);
  return copy;
}

const utf16 = new TextDecoder('utf-16le');

/** Formats a mixed-endian on-disk GUID as the usual lowercase string. */
export function formatGptGuid(bytes: Uint8Array): string {
  const hex = (from: number, to: number, reverse: boolean): string => {
    const part = Array.from(bytes.subarray(from, to));
    if (reverse) part.reverse();
    return part.map((byte) => byte.toString(16).padStart(2, '0')).join('');
  };
  return `${hex(0, 4, true)}-${hex(4, 6, true)}-${hex(6, 8, true)}-${hex(8, 10, false)}-${hex(10, 16, false)}`;
}

/**
 * Non-empty entries in table order, numbered 1, 2, … as Windows numbers GPT partitions
 * (IOCTL_DISK_GET_DRIVE_LAYOUT_EX lists the used entries in array order).
 */
export function gptPartitions(table: Uint8Array, header: GptHeader, sectorSize: number): Partition[] {
  const partitions: Partition[] = [];
  const view = new DataView(table.buffer, table.byteOffset, table.length);
  for (let index = 0; index < header.entryCount; index++) {
    const at = index * header.entrySize;
    if (at + 128 > table.length) break;
    const type = table.subarray(at, at + 16);
    if (type.every((byte) => byte === 0)) continue;
    const firstLba = u64(view, at + 32);
    const lastLba = u64(view, at + 40);
    const name = utf16.decode(table.subarray(at + 56, at + 128)).replace(/\0.*$/s, '');
    partitions.push({
      number: partitions.length + 1,
      offset: firstLba * sectorSize,
      length: (lastLba - firstLba + 1) * sectorSize,
      type: formatGptGuid(type),
      name,
    });
  }
  return partitions;
}
