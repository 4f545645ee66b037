// SPDX-License-Identifier: MIT
/**
 * The VHDX parent locator metadata item of a differencing VHDX.
 *
 * Spec: [MS-VHDX] v20180912 (VHDX Format Specification v1.00, 2012), 2.6.2.6 Parent Locator
 * (header, key-value entries, and the VHDX parent locator type with its keys).
 */
import { SynthvhdError, internalError } from '../../errors/synthvhd-error.js';
import { decodeUtf16, encodeUtf16, viewOf } from '../binary.js';
import { GUID_LENGTH, guidEquals, guidToString } from '../guid.js';
import { VHDX_PARENT_LOCATOR_TYPE_GUID } from './constants.js';

// MS-VHDX 2.6.2.6 Parent Locator Header (20 bytes).
const LOCATOR_TYPE = 0; // 16: B04AEFB7-D19E-4A81-B789-25B8E9445913 for a VHDX parent
// 16: 2 reserved
const KEY_VALUE_COUNT = 18; // 2
const HEADER_SIZE = 20;

// MS-VHDX 2.6.2.6 Parent Locator Entry (12 bytes); offsets from the start of the item.
const KEY_OFFSET = 0; // 4
const VALUE_OFFSET = 4; // 4
const KEY_LENGTH = 8; // 2, bytes
const VALUE_LENGTH = 10; // 2, bytes
const ENTRY_SIZE = 12;

/**
 * MS-VHDX 2.6.2.6 VHDX parent locator keys: `parent_linkage` (required: the parent's
 * DataWriteGuid, lowercase with braces), `parent_linkage2`, `relative_path`, `volume_path`,
 * `absolute_win32_path`.
 */
export type VhdxParentLocatorEntries = readonly (readonly [key: string, value: string])[];

/** Keys and values are UTF-16LE without a terminator (MS-VHDX 2.6.2.6). */
export function encodeVhdxParentLocator(entries: VhdxParentLocatorEntries): Uint8Array {
  const encoded = entries.map(([key, value]) => [encodeUtf16(key, 'le'), encodeUtf16(value, 'le')] as const);
  const tableEnd = HEADER_SIZE + entries.length * ENTRY_SIZE;
  const total = encoded.reduce((sum, [key, value]) => sum + key.length + value.length, tableEnd);
  const bytes = new Uint8Array(total);
  const view = viewOf(bytes);
  bytes.set(VHDX_PARENT_LOCATOR_TYPE_GUID, LOCATOR_TYPE);
  view.setUint16(KEY_VALUE_COUNT, entries.length, true);
  let dataOffset = tableEnd;
  encoded.forEach(([key, value], index) => {
    if (key.length > 0xffff || value.length > 0xffff) throw internalError('parent locator entry longer than 64 KiB');
    const at = HEADER_SIZE + index * ENTRY_SIZE;
    view.setUint32(at + KEY_OFFSET, dataOffset, true);
    view.setUint16(at + KEY_LENGTH, key.length, true);
    bytes.set(key, dataOffset);
    dataOffset += key.length;
    view.setUint32(at + VALUE_OFFSET, dataOffset, true);
    view.setUint16(at + VALUE_LENGTH, value.length, true);
    bytes.set(value, dataOffset);
    dataOffset += value.length;
  });
  return bytes;
}

export function decodeVhdxParentLocator(bytes: Uint8Array, where = 'VHDX parent locator'): Map<string, string> {
  if (bytes.length < HEADER_SIZE) throw new SynthvhdError('E_CONTAINER', `${where}: truncated`);
  const view = viewOf(bytes);
  const type = bytes.subarray(LOCATOR_TYPE, LOCATOR_TYPE + GUID_LENGTH);
  if (!guidEquals(type, VHDX_PARENT_LOCATOR_TYPE_GUID)) {
    throw new SynthvhdError('E_CONTAINER', `${where}: unknown LocatorType {${guidToString(type)}}`);
  }
  const count = view.getUint16(KEY_VALUE_COUNT, true);
  if (HEADER_SIZE + count * ENTRY_SIZE > bytes.length) throw new SynthvhdError('E_CONTAINER', `${where}: ${count} entries do not fit`);
  const result = new Map<string, string>();
  const text = (offset: number, length: number): string => {
    if (offset + length > bytes.length || length % 2 !== 0) {
      throw new SynthvhdError('E_CONTAINER', `${where}: string at ${offset} (+${length}) is outside the item`);
    }
    return decodeUtf16(bytes.subarray(offset, offset + length), 'le');
  };
  for (let index = 0; index < count; index++) {
    const at = HEADER_SIZE + index * ENTRY_SIZE;
    const key = text(view.getUint32(at + KEY_OFFSET, true), view.getUint16(at + KEY_LENGTH, true));
    const value = text(view.getUint32(at + VALUE_OFFSET, true), view.getUint16(at + VALUE_LENGTH, true));
    result.set(key, value);
  }
  return result;
}
