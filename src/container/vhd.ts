// SPDX-License-Identifier: MIT
/**
 * A fixed VHD around a disk, as a Layout: the disk's extents, then a 512-byte footer.
 *
 * Spec: "Virtual Hard Disk Image Format Specification", Microsoft, version 1.0, October 11, 2006
 * (https://www.microsoft.com/en-us/download/details.aspx?id=23850). Section names below are
 * the spec's ("Hard Disk Footer Format", "Dynamic Disk Header Format", "Appendix: CHS
 * Calculation"). All integers are big-endian; a VHD sector is always 512 bytes. Tool behaviour
 * (qemu's size rule by creator application) is in docs/containers.md §2.
 *
 * The footer says creator `win ` so that qemu (and Windows) take the exact Current Size, not
 * the CHS-rounded size (docs/containers.md §2.3). Every field is derived from the disk: the
 * same disk always gives the same bytes (docs/containers.md §5).
 */
import type { DiskImage } from '../disk/disk-image.js';
import { SynthvhdError } from '../errors/synthvhd-error.js';
import type { Layout } from '../extents/extent.js';
import { LayoutBuilder } from '../extents/layout-builder.js';
import { copyBytes, decodeUtf16, describeSize, getAscii, getU64, hex32, setAscii, setU64, viewOf } from './binary.js';
import { GUID_LENGTH, deriveGuid } from './guid.js';

// ---- Hard Disk Footer Format ----

/** "Hard Disk Footer Format": the footer is 512 bytes (older writers used 511; we write 512). */
export const VHD_FOOTER_SIZE = 512;
/** Cookie: "conectix". */
export const VHD_FOOTER_COOKIE = 'conectix';
/** Features: bit 1 "Reserved. This bit must always be set to 1"; bit 0 Temporary. */
export const VHD_FEATURES_RESERVED = 0x00000002;
/** File Format Version: major 1, minor 0. */
export const VHD_FILE_FORMAT_VERSION = 0x00010000;
/** Data Offset: "For fixed disks, this field should be set to 0xFFFFFFFF" — all 64 bits are set, as Microsoft's tools expect (qemu vpc.c). */
export const VHD_FIXED_DATA_OFFSET = 0xffffffffffffffffn;
/** Time Stamp: seconds since January 1, 2000 12:00:00 AM UTC (= Unix time 946684800). */
export const VHD_EPOCH_UNIX_SECONDS = 946_684_800;
/** Creator Application `win ` (Windows): qemu then trusts Current Size (docs/containers.md §2.3). */
export const VHD_CREATOR_APPLICATION = 'win ';
/** Creator Version 10.0 (major << 16 | minor), a Windows-style value. */
export const VHD_CREATOR_VERSION = 0x000a0000;
/** Creator Host OS: "Wi2k" (0x5769326B) = Windows. */
export const VHD_CREATOR_HOST_OS = 'Wi2k';
/** Disk Type values. */
export const VHD_DISK_TYPE_FIXED = 2;
export const VHD_DISK_TYPE_DYNAMIC = 3;
export const VHD_DISK_TYPE_DIFFERENCING = 4;
/** "a VHD always has 512-byte sectors". */
export const VHD_SECTOR_SIZE = 512;
/**
 * The largest disk offered as .vhd: 2040 GiB, the limit of VHD in Windows/Hyper-V (the format's
 * 32-bit sector-based BAT allows ~2 TiB; Microsoft documents 2040 GB for VHD).
 */
export const VHD_MAX_DISK_SIZE = 2040 * 1024 ** 3;

// Footer field offsets ("Hard Disk Footer Format").
const COOKIE = 0; // 8
const FEATURES = 8; // 4
const FILE_FORMAT_VERSION = 12; // 4
const DATA_OFFSET = 16; // 8: absolute offset of the dynamic header; all ones for fixed
const TIME_STAMP = 24; // 4
const CREATOR_APPLICATION = 28; // 4
const CREATOR_VERSION = 32; // 4
const CREATOR_HOST_OS = 36; // 4
const ORIGINAL_SIZE = 40; // 8
const CURRENT_SIZE = 48; // 8
const DISK_GEOMETRY = 56; // 4: cylinders u16, heads u8, sectors per track u8
const DISK_TYPE = 60; // 4
const CHECKSUM = 64; // 4: ones' complement of the byte sum, this field zero
const UNIQUE_ID = 68; // 16
const SAVED_STATE = 84; // 1
// 85: 427 reserved zeros

export interface ChsGeometry {
  readonly cylinders: number;
  readonly heads: number;
  readonly sectorsPerTrack: number;
}

export interface VhdFooter {
  readonly features: number;
  readonly fileFormatVersion: number;
  /** u64; all ones (`VHD_FIXED_DATA_OFFSET`) for a fixed disk. */
  readonly dataOffset: bigint;
  /** Seconds since 2000-01-01 00:00:00 UTC. */
  readonly timeStamp: number;
  /** 4 characters, e.g. `win `. */
  readonly creatorApplication: string;
  readonly creatorVersion: number;
  /** 4 characters, e.g. `Wi2k`. */
  readonly creatorHostOs: string;
  readonly originalSize: number;
  readonly currentSize: number;
  readonly geometry: ChsGeometry;
  readonly diskType: number;
  /** 16 bytes, 'rfc' byte order (./guid.ts). */
  readonly uniqueId: Uint8Array;
  readonly savedState: number;
}

/**
 * "Appendix: CHS Calculation", exactly (integer divisions; docs/containers.md §2.2, the same as
 * qemu `calculate_geometry`). The product saturates at 65535 x 16 x 255 sectors (~127.5 GiB).
 */
export function chsGeometry(currentSize: number): ChsGeometry {
  let totalSectors = Math.floor(currentSize / VHD_SECTOR_SIZE);
  if (totalSectors > 65535 * 16 * 255) totalSectors = 65535 * 16 * 255;
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.floor((cylinderTimesHeads + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}

/**
 * "Hard Disk Footer Format" Checksum (also the dynamic header's): the ones' complement of the
 * sum of all bytes, with the 4 checksum bytes at `checksumOffset` taken as zero.
 */
export function vhdChecksum(bytes: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  for (let index = 0; index < bytes.length; index++) {
    if (index < checksumOffset || index >= checksumOffset + 4) sum += bytes[index] ?? 0;
  }
  return ~sum >>> 0;
}

export function encodeVhdFooter(footer: VhdFooter): Uint8Array {
  const bytes = new Uint8Array(VHD_FOOTER_SIZE);
  const view = viewOf(bytes);
  setAscii(bytes, COOKIE, VHD_FOOTER_COOKIE);
  view.setUint32(FEATURES, footer.features, false);
  view.setUint32(FILE_FORMAT_VERSION, footer.fileFormatVersion, false);
  view.setBigUint64(DATA_OFFSET, footer.dataOffset, false);
  view.setUint32(TIME_STAMP, footer.timeStamp, false);
  setAscii(bytes, CREATOR_APPLICATION, fourCharacters(footer.creatorApplication));
  view.setUint32(CREATOR_VERSION, footer.creatorVersion, false);
  setAscii(bytes, CREATOR_HOST_OS, fourCharacters(footer.creatorHostOs));
  setU64(view, ORIGINAL_SIZE, footer.originalSize, 'be');
  setU64(view, CURRENT_SIZE, footer.currentSize, 'be');
  view.setUint16(DISK_GEOMETRY, footer.geometry.cylinders, false);
  view.setUint8(DISK_GEOMETRY + 2, footer.geometry.heads);
  view.setUint8(DISK_GEOMETRY + 3, footer.geometry.sectorsPerTrack);
  view.setUint32(DISK_TYPE, footer.diskType, false);
  bytes.set(footer.uniqueId.subarray(0, GUID_LENGTH), UNIQUE_ID);
  view.setUint8(SAVED_STATE, footer.savedState);
  view.setUint32(CHECKSUM, vhdChecksum(bytes, CHECKSUM), false); // last: covers every field above
  return bytes;
}

/** True when `bytes` starts with the footer cookie `conectix`. */
export function isVhdFooter(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && getAscii(bytes, COOKIE, 8) === VHD_FOOTER_COOKIE;
}

/** Decodes and validates a footer (512 bytes): cookie and checksum. `where` names it in errors. */
export function decodeVhdFooter(bytes: Uint8Array, where = 'VHD footer'): VhdFooter {
  if (bytes.length < VHD_FOOTER_SIZE) throw new SynthvhdError('E_CONTAINER', `${where}: truncated`);
  const footer = bytes.subarray(0, VHD_FOOTER_SIZE);
  const view = viewOf(footer);
  if (!isVhdFooter(footer)) throw new SynthvhdError('E_CONTAINER', `${where}: no "conectix" cookie`);
  const stored = view.getUint32(CHECKSUM, false);
  const computed = vhdChecksum(footer, CHECKSUM);
  if (stored !== computed) {
    throw new SynthvhdError('E_CONTAINER', `${where}: checksum mismatch (stored ${hex32(stored)}, computed ${hex32(computed)})`);
  }
  return {
    features: view.getUint32(FEATURES, false),
    fileFormatVersion: view.getUint32(FILE_FORMAT_VERSION, false),
    dataOffset: view.getBigUint64(DATA_OFFSET, false),
    timeStamp: view.getUint32(TIME_STAMP, false),
    creatorApplication: getAscii(footer, CREATOR_APPLICATION, 4),
    creatorVersion: view.getUint32(CREATOR_VERSION, false),
    creatorHostOs: getAscii(footer, CREATOR_HOST_OS, 4),
    originalSize: getU64(view, ORIGINAL_SIZE, 'be', `${where}: Original Size`),
    currentSize: getU64(view, CURRENT_SIZE, 'be', `${where}: Current Size`),
    geometry: {
      cylinders: view.getUint16(DISK_GEOMETRY, false),
      heads: view.getUint8(DISK_GEOMETRY + 2),
      sectorsPerTrack: view.getUint8(DISK_GEOMETRY + 3),
    },
    diskType: view.getUint32(DISK_TYPE, false),
    uniqueId: copyBytes(footer, UNIQUE_ID, UNIQUE_ID + GUID_LENGTH),
    savedState: view.getUint8(SAVED_STATE),
  };
}

// ---- Dynamic Disk Header Format (read only: inspecting dynamic and differencing VHDs) ----

/** "Dynamic Disk Header Format": 1024 bytes, cookie "cxsparse", checksum at offset 36. */
export const VHD_DYNAMIC_HEADER_SIZE = 1024;
export const VHD_DYNAMIC_HEADER_COOKIE = 'cxsparse';

// Dynamic header field offsets.
const DH_COOKIE = 0; // 8
// 8: Data Offset, 8, unused (all ones)
const DH_TABLE_OFFSET = 16; // 8: absolute offset of the BAT
// 24: Header Version, 4 (0x00010000)
const DH_MAX_TABLE_ENTRIES = 28; // 4
const DH_BLOCK_SIZE = 32; // 4: default 2 MiB
const DH_CHECKSUM = 36; // 4
const DH_PARENT_UNIQUE_ID = 40; // 16: the parent's footer Unique Id
const DH_PARENT_TIME_STAMP = 56; // 4
// 60: 4 reserved
const DH_PARENT_UNICODE_NAME = 64; // 512: UTF-16 big-endian
const DH_PARENT_LOCATORS = 576; // 8 entries x 24 bytes
const DH_LOCATOR_SIZE = 24; // code u32, data space u32, data length u32, reserved u32, data offset u64

/** "Block Allocation Table": an entry of 0xFFFFFFFF means the block is not allocated. */
export const VHD_BAT_UNUSED = 0xffffffff;

/**
 * "Data Block" (dynamic header section): each allocated block starts with a sector bitmap of one
 * bit per 512-byte sector, padded to a 512-byte sector boundary (512 bytes for 2 MiB blocks).
 */
export function vhdBitmapSize(blockSize: number): number {
  return Math.ceil(blockSize / VHD_SECTOR_SIZE / 8 / VHD_SECTOR_SIZE) * VHD_SECTOR_SIZE;
}

export interface VhdParentLocator {
  /** Platform Code, 4 characters: `W2ru` (relative, UTF-16LE), `W2ku` (absolute, UTF-16LE), `Wi2r`, `Wi2k` (deprecated ANSI), `Mac `, `MacX` (UTF-8 file URL). */
  readonly platformCode: string;
  /** Platform Data Space, as stored (the spec says 512-byte sectors; some writers store bytes). */
  readonly dataSpace: number;
  readonly dataLength: number;
  readonly dataOffset: number;
}

export interface VhdDynamicHeader {
  readonly tableOffset: number;
  readonly maxTableEntries: number;
  readonly blockSize: number;
  readonly parentUniqueId: Uint8Array;
  readonly parentTimeStamp: number;
  readonly parentUnicodeName: string;
  readonly parentLocators: readonly VhdParentLocator[];
}

export function decodeVhdDynamicHeader(bytes: Uint8Array, where = 'VHD dynamic header'): VhdDynamicHeader {
  if (bytes.length < VHD_DYNAMIC_HEADER_SIZE) throw new SynthvhdError('E_CONTAINER', `${where}: truncated`);
  const header = bytes.subarray(0, VHD_DYNAMIC_HEADER_SIZE);
  const view = viewOf(header);
  if (getAscii(header, DH_COOKIE, 8) !== VHD_DYNAMIC_HEADER_COOKIE) {
    throw new SynthvhdError('E_CONTAINER', `${where}: no "cxsparse" cookie`);
  }
  const stored = view.getUint32(DH_CHECKSUM, false);
  const computed = vhdChecksum(header, DH_CHECKSUM);
  if (stored !== computed) {
    throw new SynthvhdError('E_CONTAINER', `${where}: checksum mismatch (stored ${hex32(stored)}, computed ${hex32(computed)})`);
  }
  const parentLocators: VhdParentLocator[] = [];
  for (let index = 0; index < 8; index++) {
    const at = DH_PARENT_LOCATORS + index * DH_LOCATOR_SIZE;
    if (view.getUint32(at, false) === 0) continue; // platform code 0 = none
    parentLocators.push({
      platformCode: getAscii(header, at, 4),
      dataSpace: view.getUint32(at + 4, false),
      dataLength: view.getUint32(at + 8, false),
      dataOffset: getU64(view, at + 16, 'be', `${where}: parent locator ${index} offset`),
    });
  }
  return {
    tableOffset: getU64(view, DH_TABLE_OFFSET, 'be', `${where}: Table Offset`),
    maxTableEntries: view.getUint32(DH_MAX_TABLE_ENTRIES, false),
    blockSize: view.getUint32(DH_BLOCK_SIZE, false),
    parentUniqueId: copyBytes(header, DH_PARENT_UNIQUE_ID, DH_PARENT_UNIQUE_ID + GUID_LENGTH),
    parentTimeStamp: view.getUint32(DH_PARENT_TIME_STAMP, false),
    parentUnicodeName: decodeUtf16(header.subarray(DH_PARENT_UNICODE_NAME, DH_PARENT_UNICODE_NAME + 512), 'be'),
    parentLocators,
  };
}

// ---- The fixed VHD of a disk ----

/** deriveGuid label of the footer Unique Id: never change it (it would change every VHD served). */
const UNIQUE_ID_LABEL = 'vhd-unique-id';

/** The footer Unique Id of the VHD of `disk` ('rfc' byte order). */
export function vhdUniqueId(disk: DiskImage): Uint8Array {
  return deriveGuid(disk.identity, UNIQUE_ID_LABEL, 'rfc');
}

/** `mtimeMs` as a VHD Time Stamp (seconds since 2000-01-01 UTC), clamped to the u32 range. */
export function vhdTimeStamp(mtimeMs: number): number {
  const seconds = Math.floor(mtimeMs / 1000) - VHD_EPOCH_UNIX_SECONDS;
  return Math.min(Math.max(seconds, 0), 0xffffffff);
}

/** Why `disk` cannot be served as a .vhd, or undefined when it can (callers list it). */
export function vhdLimitReason(disk: DiskImage): string | undefined {
  const size = disk.layout.size;
  if (disk.sectorSize !== VHD_SECTOR_SIZE) {
    return 'a VHD always has 512-byte sectors; this 4Kn disk can only be served as .vhdx';
  }
  if (size === 0) return 'the disk is empty';
  if (size % VHD_SECTOR_SIZE !== 0) return `disk size ${size} bytes is not a multiple of 512-byte sectors`;
  if (size > VHD_MAX_DISK_SIZE) {
    return `disk is ${size} bytes (${describeSize(size, 1024 ** 3, 'GiB')}): VHD is limited to 2040 GiB; use the .vhdx`;
  }
  return undefined;
}

/** The footer of the fixed VHD of `disk`. */
export function vhdFooterOf(disk: DiskImage): VhdFooter {
  const size = disk.layout.size;
  return {
    features: VHD_FEATURES_RESERVED,
    fileFormatVersion: VHD_FILE_FORMAT_VERSION,
    dataOffset: VHD_FIXED_DATA_OFFSET,
    timeStamp: vhdTimeStamp(disk.mtimeMs),
    creatorApplication: VHD_CREATOR_APPLICATION,
    creatorVersion: VHD_CREATOR_VERSION,
    creatorHostOs: VHD_CREATOR_HOST_OS,
    originalSize: size, // "Original Size": the size at creation, = Current Size
    currentSize: size, // exact, never CHS-rounded (docs/architecture.md §5)
    geometry: chsGeometry(size),
    diskType: VHD_DISK_TYPE_FIXED,
    uniqueId: vhdUniqueId(disk),
    savedState: 0,
  };
}

/** The fixed VHD of `disk`; fails with E_FORMAT_LIMIT when VHD cannot express it. */
export function buildVhdLayout(disk: DiskImage): Layout {
  const limit = vhdLimitReason(disk);
  if (limit !== undefined) throw new SynthvhdError('E_FORMAT_LIMIT', limit);
  const builder = new LayoutBuilder();
  for (const extent of disk.layout.extents) builder.append(extent);
  builder.bytes(encodeVhdFooter(vhdFooterOf(disk)), 'VHD footer');
  return builder.build();
}

function fourCharacters(text: string): string {
  return text.padEnd(4, ' ').slice(0, 4);
}
