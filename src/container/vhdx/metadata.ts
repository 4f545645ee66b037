// SPDX-License-Identifier: MIT
/**
 * VHDX metadata region: the metadata table and the known items.
 *
 * Spec: [MS-VHDX] v20180912 (VHDX Format Specification v1.00, 2012), 2.6 Metadata Region,
 * 2.6.1 Metadata Table, 2.6.2 Known Metadata Items.
 */
import { SynthvhdError, internalError } from '../../errors/synthvhd-error.js';
import { copyBytes, getAscii, getU64, isPowerOfTwo, setAscii, setU64, viewOf } from '../binary.js';
import { GUID_LENGTH, guidEquals, guidToString } from '../guid.js';
import {
  VHDX_FILE_PARAMETERS_GUID,
  VHDX_FILE_PARAMETERS_HAS_PARENT,
  VHDX_FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED,
  VHDX_LOGICAL_SECTOR_SIZE_GUID,
  VHDX_MAX_BLOCK_SIZE,
  VHDX_MAX_VIRTUAL_DISK_SIZE,
  VHDX_METADATA_ENTRY_SIZE,
  VHDX_METADATA_FLAG_IS_REQUIRED,
  VHDX_METADATA_FLAG_IS_USER,
  VHDX_METADATA_FLAG_IS_VIRTUAL_DISK,
  VHDX_METADATA_ITEM_MAX_LENGTH,
  VHDX_METADATA_ITEMS_OFFSET,
  VHDX_METADATA_MAX_ENTRIES,
  VHDX_METADATA_SIGNATURE,
  VHDX_METADATA_TABLE_HEADER_SIZE,
  VHDX_METADATA_TABLE_SIZE,
  VHDX_MIN_BLOCK_SIZE,
  VHDX_PAGE83_DATA_GUID,
  VHDX_PARENT_LOCATOR_GUID,
  VHDX_PHYSICAL_SECTOR_SIZE_GUID,
  VHDX_SECTOR_SIZES,
  VHDX_VIRTUAL_DISK_SIZE_GUID,
} from './constants.js';

// MS-VHDX 2.6.1.1 Metadata Table Header (32 bytes).
const SIGNATURE = 0; // 8: "metadata"
// 8: 2 reserved
const ENTRY_COUNT = 10; // 2: <= 2047
// 12: 20 reserved

// MS-VHDX 2.6.1.2 Metadata Table Entry (32 bytes).
const ENTRY_ITEM_ID = 0; // 16
const ENTRY_OFFSET = 16; // 4: from the start of the region, >= 64 KiB (0 iff Length is 0)
const ENTRY_LENGTH = 20; // 4: <= 1 MiB
const ENTRY_FLAGS = 24; // 4: bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired
// 28: 4 reserved

export interface VhdxMetadataItem {
  readonly itemId: Uint8Array;
  readonly isUser: boolean;
  readonly isVirtualDisk: boolean;
  readonly isRequired: boolean;
  readonly data: Uint8Array;
}

/** A decoded table entry: where an item's data lies inside the metadata region. */
export interface VhdxMetadataEntry {
  readonly itemId: Uint8Array;
  readonly offset: number;
  readonly length: number;
  readonly isUser: boolean;
  readonly isVirtualDisk: boolean;
  readonly isRequired: boolean;
}

/**
 * The table (32-byte header + 32 bytes per item; the rest of its 64 KiB is zero) and the item
 * data, packed in order from region offset 64 KiB (as qemu does: docs/containers.md §3.5).
 * The caller places `table` at the region start and `itemData` at region + 64 KiB.
 */
export function encodeVhdxMetadata(items: readonly VhdxMetadataItem[]): { table: Uint8Array; itemData: Uint8Array } {
  if (items.length > VHDX_METADATA_MAX_ENTRIES) throw internalError(`${items.length} VHDX metadata items`);
  const table = new Uint8Array(VHDX_METADATA_TABLE_HEADER_SIZE + items.length * VHDX_METADATA_ENTRY_SIZE);
  const view = viewOf(table);
  setAscii(table, SIGNATURE, VHDX_METADATA_SIGNATURE);
  view.setUint16(ENTRY_COUNT, items.length, true);
  const itemData = new Uint8Array(items.reduce((sum, item) => sum + item.data.length, 0));
  let dataOffset = 0;
  items.forEach((item, index) => {
    if (item.data.length > VHDX_METADATA_ITEM_MAX_LENGTH) throw internalError(`VHDX metadata item of ${item.data.length} bytes`);
    const at = VHDX_METADATA_TABLE_HEADER_SIZE + index * VHDX_METADATA_ENTRY_SIZE;
    table.set(item.itemId, at + ENTRY_ITEM_ID);
    view.setUint32(at + ENTRY_OFFSET, item.data.length === 0 ? 0 : VHDX_METADATA_ITEMS_OFFSET + dataOffset, true);
    view.setUint32(at + ENTRY_LENGTH, item.data.length, true);
    view.setUint32(
      at + ENTRY_FLAGS,
      (item.isUser ? VHDX_METADATA_FLAG_IS_USER : 0) |
        (item.isVirtualDisk ? VHDX_METADATA_FLAG_IS_VIRTUAL_DISK : 0) |
        (item.isRequired ? VHDX_METADATA_FLAG_IS_REQUIRED : 0),
      true,
    );
    itemData.set(item.data, dataOffset);
    dataOffset += item.data.length;
  });
  return { table, itemData };
}

/** Decodes the metadata table (the first 64 KiB of the region). */
export function decodeVhdxMetadataTable(bytes: Uint8Array, regionLength: number, where = 'VHDX metadata table'): VhdxMetadataEntry[] {
  if (bytes.length < VHDX_METADATA_TABLE_SIZE) throw new SynthvhdError('E_CONTAINER', `${where}: truncated`);
  const view = viewOf(bytes);
  if (getAscii(bytes, SIGNATURE, 8) !== VHDX_METADATA_SIGNATURE) {
    throw new SynthvhdError('E_CONTAINER', `${where}: no "metadata" signature`);
  }
  const count = view.getUint16(ENTRY_COUNT, true);
  if (count > VHDX_METADATA_MAX_ENTRIES) throw new SynthvhdError('E_CONTAINER', `${where}: EntryCount ${count} > 2047`);
  const entries: VhdxMetadataEntry[] = [];
  for (let index = 0; index < count; index++) {
    const at = VHDX_METADATA_TABLE_HEADER_SIZE + index * VHDX_METADATA_ENTRY_SIZE;
    const flags = view.getUint32(at + ENTRY_FLAGS, true);
    const entry: VhdxMetadataEntry = {
      itemId: copyBytes(bytes, at + ENTRY_ITEM_ID, at + ENTRY_ITEM_ID + GUID_LENGTH),
      offset: view.getUint32(at + ENTRY_OFFSET, true),
      length: view.getUint32(at + ENTRY_LENGTH, true),
      isUser: (flags & VHDX_METADATA_FLAG_IS_USER) !== 0,
      isVirtualDisk: (flags & VHDX_METADATA_FLAG_IS_VIRTUAL_DISK) !== 0,
      isRequired: (flags & VHDX_METADATA_FLAG_IS_REQUIRED) !== 0,
    };
    const badPlace =
      entry.length === 0
        ? entry.offset !== 0
        : entry.offset < VHDX_METADATA_ITEMS_OFFSET || entry.length > VHDX_METADATA_ITEM_MAX_LENGTH || entry.offset + entry.length > regionLength;
    if (badPlace) {
      throw new SynthvhdError(
        'E_CONTAINER',
        `${where}: item {${guidToString(entry.itemId)}} at ${entry.offset} (+${entry.length}) is outside the metadata region`,
      );
    }
    entries.push(entry);
  }
  return entries;
}

// ---- Known items (MS-VHDX 2.6.2) ----

export interface VhdxFileParameters {
  /** MS-VHDX 2.6.2.1: power of two, 1 MiB..256 MiB. */
  readonly blockSize: number;
  /** MS-VHDX 2.6.2.1 bit 0: a fixed VHDX (blocks stay allocated). */
  readonly leaveBlockAllocated: boolean;
  /** MS-VHDX 2.6.2.1 bit 1: a differencing VHDX. */
  readonly hasParent: boolean;
}

/** MS-VHDX 2.6.2.1: u32 BlockSize, u32 flags. */
export function encodeVhdxFileParameters(parameters: VhdxFileParameters): Uint8Array {
  const bytes = new Uint8Array(8);
  const view = viewOf(bytes);
  view.setUint32(0, parameters.blockSize, true);
  view.setUint32(
    4,
    (parameters.leaveBlockAllocated ? VHDX_FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED : 0) |
      (parameters.hasParent ? VHDX_FILE_PARAMETERS_HAS_PARENT : 0),
    true,
  );
  return bytes;
}

export function decodeVhdxFileParameters(bytes: Uint8Array, where = 'VHDX File Parameters'): VhdxFileParameters {
  if (bytes.length < 8) throw new SynthvhdError('E_CONTAINER', `${where}: ${bytes.length} bytes, expected 8`);
  const view = viewOf(bytes);
  const blockSize = view.getUint32(0, true);
  const flags = view.getUint32(4, true);
  if (!isPowerOfTwo(blockSize) || blockSize < VHDX_MIN_BLOCK_SIZE || blockSize > VHDX_MAX_BLOCK_SIZE) {
    throw new SynthvhdError('E_CONTAINER', `${where}: BlockSize ${blockSize} is not a power of two in 1 MiB..256 MiB`);
  }
  return {
    blockSize,
    leaveBlockAllocated: (flags & VHDX_FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED) !== 0,
    hasParent: (flags & VHDX_FILE_PARAMETERS_HAS_PARENT) !== 0,
  };
}

/** MS-VHDX 2.6.2.2: u64 VirtualDiskSize. */
export function encodeVhdxU64(value: number): Uint8Array {
  const bytes = new Uint8Array(8);
  setU64(viewOf(bytes), 0, value, 'le');
  return bytes;
}

/** MS-VHDX 2.6.2.4 / 2.6.2.5: u32 sector sizes. */
export function encodeVhdxU32(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  viewOf(bytes).setUint32(0, value, true);
  return bytes;
}

export interface VhdxStandardMetadata {
  readonly fileParameters: VhdxFileParameters;
  readonly virtualDiskSize: number;
  /** MS-VHDX 2.6.2.3: 16 bytes, the SCSI page 0x83 identifier ('ms' byte order). */
  readonly page83: Uint8Array;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  /** MS-VHDX 2.6.2.6, differencing only: the encoded parent locator (./parent-locator.ts). */
  readonly parentLocator?: Uint8Array;
}

/**
 * The known items with the flags MS-VHDX 2.6.2 gives them (and qemu writes): File Parameters
 * Required; Virtual Disk Size, Page 83 Data, Logical and Physical Sector Size
 * VirtualDisk + Required; Parent Locator Required.
 */
export function vhdxStandardMetadataItems(metadata: VhdxStandardMetadata): VhdxMetadataItem[] {
  const system = { isUser: false, isVirtualDisk: false, isRequired: true };
  const virtualDisk = { isUser: false, isVirtualDisk: true, isRequired: true };
  const items: VhdxMetadataItem[] = [
    { itemId: VHDX_FILE_PARAMETERS_GUID, ...system, data: encodeVhdxFileParameters(metadata.fileParameters) },
    { itemId: VHDX_VIRTUAL_DISK_SIZE_GUID, ...virtualDisk, data: encodeVhdxU64(metadata.virtualDiskSize) },
    { itemId: VHDX_PAGE83_DATA_GUID, ...virtualDisk, data: new Uint8Array(metadata.page83) },
    { itemId: VHDX_LOGICAL_SECTOR_SIZE_GUID, ...virtualDisk, data: encodeVhdxU32(metadata.logicalSectorSize) },
    { itemId: VHDX_PHYSICAL_SECTOR_SIZE_GUID, ...virtualDisk, data: encodeVhdxU32(metadata.physicalSectorSize) },
  ];
  if (metadata.parentLocator !== undefined) {
    items.push({ itemId: VHDX_PARENT_LOCATOR_GUID, ...system, data: metadata.parentLocator });
  }
  return items;
}

/**
 * Decodes the known items from a metadata region given as `item(entry)` reads, validating
 * their values. Unknown items flagged Required make the file unreadable (MS-VHDX 2.6.1.2).
 */
export function decodeVhdxStandardMetadata(
  entries: readonly VhdxMetadataEntry[],
  itemData: (entry: VhdxMetadataEntry) => Uint8Array,
  where = 'VHDX metadata',
): VhdxStandardMetadata {
  const find = (id: Uint8Array): VhdxMetadataEntry | undefined => entries.find((entry) => !entry.isUser && guidEquals(entry.itemId, id));
  for (const entry of entries) {
    const known = [
      VHDX_FILE_PARAMETERS_GUID,
      VHDX_VIRTUAL_DISK_SIZE_GUID,
      VHDX_PAGE83_DATA_GUID,
      VHDX_LOGICAL_SECTOR_SIZE_GUID,
      VHDX_PHYSICAL_SECTOR_SIZE_GUID,
      VHDX_PARENT_LOCATOR_GUID,
    ].some((id) => guidEquals(id, entry.itemId));
    if (!known && entry.isRequired && !entry.isUser) {
      throw new SynthvhdError('E_CONTAINER', `${where}: unknown required item {${guidToString(entry.itemId)}}`);
    }
  }
  const required = (id: Uint8Array, name: string, length: number): Uint8Array => {
    const entry = find(id);
    if (entry === undefined) throw new SynthvhdError('E_CONTAINER', `${where}: no ${name} item`);
    const data = itemData(entry);
    if (data.length < length) throw new SynthvhdError('E_CONTAINER', `${where}: ${name} has ${data.length} bytes, expected ${length}`);
    return data;
  };
  const fileParameters = decodeVhdxFileParameters(required(VHDX_FILE_PARAMETERS_GUID, 'File Parameters', 8), `${where}: File Parameters`);
  const virtualDiskSize = getU64(viewOf(required(VHDX_VIRTUAL_DISK_SIZE_GUID, 'Virtual Disk Size', 8)), 0, 'le', `${where}: VirtualDiskSize`);
  const page83 = copyBytes(required(VHDX_PAGE83_DATA_GUID, 'Page 83 Data', GUID_LENGTH), 0, GUID_LENGTH);
  const logicalSectorSize = viewOf(required(VHDX_LOGICAL_SECTOR_SIZE_GUID, 'Logical Sector Size', 4)).getUint32(0, true);
  const physicalSectorSize = viewOf(required(VHDX_PHYSICAL_SECTOR_SIZE_GUID, 'Physical Sector Size', 4)).getUint32(0, true);
  if (!VHDX_SECTOR_SIZES.includes(logicalSectorSize)) {
    throw new SynthvhdError('E_CONTAINER', `${where}: LogicalSectorSize ${logicalSectorSize} is not 512 or 4096`);
  }
  if (!VHDX_SECTOR_SIZES.includes(physicalSectorSize)) {
    throw new SynthvhdError('E_CONTAINER', `${where}: PhysicalSectorSize ${physicalSectorSize} is not 512 or 4096`);
  }
  if (virtualDiskSize === 0 || virtualDiskSize % logicalSectorSize !== 0 || virtualDiskSize > VHDX_MAX_VIRTUAL_DISK_SIZE) {
    throw new SynthvhdError(
      'E_CONTAINER',
      `${where}: VirtualDiskSize ${virtualDiskSize} is not a non-zero multiple of ${logicalSectorSize} up to 64 TiB`,
    );
  }
  const parentEntry = find(VHDX_PARENT_LOCATOR_GUID);
  const base = { fileParameters, virtualDiskSize, page83, logicalSectorSize, physicalSectorSize };
  if (fileParameters.hasParent && parentEntry === undefined) {
    throw new SynthvhdError('E_CONTAINER', `${where}: HasParent is set but there is no Parent Locator item`);
  }
  return parentEntry === undefined ? base : { ...base, parentLocator: itemData(parentEntry) };
}
