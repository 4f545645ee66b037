// SPDX-License-Identifier: MIT
/**
 * VHDX region table (two identical copies, at 192 KiB and 256 KiB).
 *
 * Spec: [MS-VHDX] v20180912 (VHDX Format Specification v1.00, 2012), 2.2.3 Region Table.
 */
import { SynthvhdError, internalError } from '../../errors/synthvhd-error.js';
import { copyBytes, getAscii, getU64, hex32, setAscii, setU64, viewOf } from '../binary.js';
import { GUID_LENGTH, guidEquals, guidToString } from '../guid.js';
import { checkVhdxChecksum, writeVhdxChecksum } from './checksum.js';
import {
  VHDX_ALIGNMENT,
  VHDX_BAT_REGION_GUID,
  VHDX_METADATA_REGION_GUID,
  VHDX_REGION_ENTRY_SIZE,
  VHDX_REGION_MAX_ENTRIES,
  VHDX_REGION_TABLE_HEADER_SIZE,
  VHDX_REGION_TABLE_SIGNATURE,
  VHDX_REGION_TABLE_SIZE,
} from './constants.js';

// MS-VHDX 2.2.3.1 Region Table Header.
const SIGNATURE = 0; // 4: "regi"
const CHECKSUM = 4; // 4: CRC-32C over the 64 KiB table, this field zero
const ENTRY_COUNT = 8; // 4: <= 2047
// 12: 4 reserved

// MS-VHDX 2.2.3.2 Region Table Entry (32 bytes).
const ENTRY_GUID = 0; // 16
const ENTRY_FILE_OFFSET = 16; // 8: multiple of 1 MiB, >= 1 MiB
const ENTRY_LENGTH = 24; // 4: multiple of 1 MiB
const ENTRY_REQUIRED = 28; // 4: bit 0 = Required (an unknown required region makes the file unreadable)

export interface VhdxRegion {
  readonly guid: Uint8Array;
  readonly fileOffset: number;
  readonly length: number;
  readonly required: boolean;
}

/** The full 64 KiB table with its checksum. */
export function encodeVhdxRegionTable(regions: readonly VhdxRegion[]): Uint8Array {
  if (regions.length > VHDX_REGION_MAX_ENTRIES) throw internalError(`${regions.length} VHDX regions`);
  const bytes = new Uint8Array(VHDX_REGION_TABLE_SIZE);
  const view = viewOf(bytes);
  setAscii(bytes, SIGNATURE, VHDX_REGION_TABLE_SIGNATURE);
  view.setUint32(ENTRY_COUNT, regions.length, true);
  regions.forEach((region, index) => {
    if (region.fileOffset % VHDX_ALIGNMENT !== 0 || region.length % VHDX_ALIGNMENT !== 0 || region.fileOffset < VHDX_ALIGNMENT) {
      throw internalError(`VHDX region at ${region.fileOffset} (+${region.length}) is not 1 MiB-aligned`);
    }
    const at = VHDX_REGION_TABLE_HEADER_SIZE + index * VHDX_REGION_ENTRY_SIZE;
    bytes.set(region.guid, at + ENTRY_GUID);
    setU64(view, at + ENTRY_FILE_OFFSET, region.fileOffset, 'le');
    view.setUint32(at + ENTRY_LENGTH, region.length, true);
    view.setUint32(at + ENTRY_REQUIRED, region.required ? 1 : 0, true);
  });
  writeVhdxChecksum(bytes, CHECKSUM); // last
  return bytes;
}

/** Decodes and validates one region table (64 KiB): signature, CRC-32C, count, alignment. */
export function decodeVhdxRegionTable(bytes: Uint8Array, where = 'VHDX region table'): VhdxRegion[] {
  if (bytes.length < VHDX_REGION_TABLE_SIZE) throw new SynthvhdError('E_CONTAINER', `${where}: truncated`);
  const table = bytes.subarray(0, VHDX_REGION_TABLE_SIZE);
  const view = viewOf(table);
  if (getAscii(table, SIGNATURE, 4) !== VHDX_REGION_TABLE_SIGNATURE) {
    throw new SynthvhdError('E_CONTAINER', `${where}: no "regi" signature`);
  }
  const { stored, computed } = checkVhdxChecksum(table, CHECKSUM);
  if (stored !== computed) {
    throw new SynthvhdError('E_CONTAINER', `${where}: CRC-32C mismatch (stored ${hex32(stored)}, computed ${hex32(computed)})`);
  }
  const count = view.getUint32(ENTRY_COUNT, true);
  if (count > VHDX_REGION_MAX_ENTRIES) throw new SynthvhdError('E_CONTAINER', `${where}: EntryCount ${count} > 2047`);
  const regions: VhdxRegion[] = [];
  for (let index = 0; index < count; index++) {
    const at = VHDX_REGION_TABLE_HEADER_SIZE + index * VHDX_REGION_ENTRY_SIZE;
    const region: VhdxRegion = {
      guid: copyBytes(table, at + ENTRY_GUID, at + ENTRY_GUID + GUID_LENGTH),
      fileOffset: getU64(view, at + ENTRY_FILE_OFFSET, 'le', `${where}: entry ${index} FileOffset`),
      length: view.getUint32(at + ENTRY_LENGTH, true),
      required: (view.getUint32(at + ENTRY_REQUIRED, true) & 1) === 1,
    };
    if (region.fileOffset % VHDX_ALIGNMENT !== 0 || region.fileOffset < VHDX_ALIGNMENT || region.length % VHDX_ALIGNMENT !== 0) {
      throw new SynthvhdError(
        'E_CONTAINER',
        `${where}: region {${guidToString(region.guid)}} at ${region.fileOffset} (+${region.length}) is not 1 MiB-aligned`,
      );
    }
    regions.push(region);
  }
  return regions;
}

/** The BAT and metadata regions of a decoded table; fails on a missing one or an unknown required one. */
export function findVhdxRegions(regions: readonly VhdxRegion[], where = 'VHDX region table'): { bat: VhdxRegion; metadata: VhdxRegion } {
  let bat: VhdxRegion | undefined;
  let metadata: VhdxRegion | undefined;
  for (const region of regions) {
    if (guidEquals(region.guid, VHDX_BAT_REGION_GUID)) bat = region;
    else if (guidEquals(region.guid, VHDX_METADATA_REGION_GUID)) metadata = region;
    else if (region.required) {
      // MS-VHDX 2.2.3.2: an implementation that does not recognize a required region MUST fail to load the file.
      throw new SynthvhdError('E_CONTAINER', `${where}: unknown required region {${guidToString(region.guid)}}`);
    }
  }
  if (bat === undefined) throw new SynthvhdError('E_CONTAINER', `${where}: no BAT region`);
  if (metadata === undefined) throw new SynthvhdError('E_CONTAINER', `${where}: no metadata region`);
  return { bat, metadata };
}
