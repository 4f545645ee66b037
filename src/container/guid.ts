// SPDX-License-Identifier: MIT
/**
 * GUIDs of the containers: deterministic derivation, and text <-> bytes in the two on-disk byte
 * orders.
 *
 * - `'ms'` (mixed-endian): Data1 u32, Data2 u16 and Data3 u16 little-endian, then Data4's 8 bytes
 *   as they are. This is how [MS-VHDX] v20180912 stores every GUID ([MS-DTYP] 2.3.4.2 "GUID
 *   packet representation"; qemu `block/vhdx.h` MSGUID).
 * - `'rfc'` (big-endian, RFC 4122 §4.1.2 order): the VHD footer's Unique Id, which libvhdi reads
 *   as a big-endian UUID ("Virtual Hard Disk Image Format Specification" v1.0 2006, "Hard Disk
 *   Footer Format": "Unique Id ... a 128-bit universally unique identifier (UUID)").
 *
 * Every GUID synthvhd writes is derived from the source identity (docs/containers.md
 * §5), so one backup always yields the same bytes. Hashing is not I/O: this module stays pure.
 */
import { createHash } from 'node:crypto';
import { internalError } from '../errors/synthvhd-error.js';

export type GuidByteOrder = 'ms' | 'rfc';

export const GUID_LENGTH = 16;

/** The all-zero GUID (VHDX LogGuid "no log", MS-VHDX 2.2.2). Shared: never write into it. */
export const ZERO_GUID: Uint8Array = new Uint8Array(GUID_LENGTH);

/** Domain separator for `deriveGuid`, so these hashes never collide with other uses of the identity. */
const DERIVE_PREFIX = 'synthvhd guid\u0000';

/**
 * A 16-byte GUID derived from `identity` and `label`: the first 16 bytes of
 * SHA-256("synthvhd guid\0" || label || "\0" || identity), with the RFC 4122 §4.1.3 version
 * (4, random) and §4.1.1 variant (10xx) bits set so that tools show it as an ordinary v4 UUID.
 * `order` says how the result is laid out in bytes (see the file comment): 'rfc' for the VHD
 * unique id, 'ms' for VHDX.
 */
export function deriveGuid(identity: Uint8Array, label: string, order: GuidByteOrder = 'rfc'): Uint8Array {
  const hash = createHash('sha256');
  hash.update(DERIVE_PREFIX);
  hash.update(label);
  hash.update('\u0000');
  hash.update(identity);
  const rfc = new Uint8Array(hash.digest().subarray(0, GUID_LENGTH));
  rfc[6] = ((rfc[6] ?? 0) & 0x0f) | 0x40; // RFC 4122 §4.1.3: version 4 in the high nibble of time_hi
  rfc[8] = ((rfc[8] ?? 0) & 0x3f) | 0x80; // RFC 4122 §4.1.1: variant 10xx in clock_seq_hi
  return order === 'rfc' ? rfc : swapGuidByteOrder(rfc);
}

/**
 * Converts between the 'rfc' and 'ms' byte orders (the swap is its own inverse): reverses the
 * first 4 bytes, the next 2 and the next 2; the last 8 stay.
 */
export function swapGuidByteOrder(bytes: Uint8Array): Uint8Array {
  checkLength(bytes);
  const out = Uint8Array.from(bytes);
  for (const [start, end] of [[0, 4], [4, 6], [6, 8]] as const) {
    for (let index = start; index < end; index++) out[index] = bytes[start + end - 1 - index] ?? 0;
  }
  return out;
}

/** Lowercase `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` of 16 bytes stored in `order`. */
export function guidToString(bytes: Uint8Array, order: GuidByteOrder = 'ms'): string {
  const rfc = order === 'rfc' ? checkLength(bytes) : swapGuidByteOrder(bytes);
  const hex = Buffer.from(rfc.buffer, rfc.byteOffset, GUID_LENGTH).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * `{xxxxxxxx-...}` in lowercase: the form of the VHDX parent locator's `parent_linkage` value
 * (MS-VHDX 2.6.2.6 parent locator keys: "encoded as a lowercase string with enclosing braces"; libvhdi 20210425
 * fails to parse uppercase, see docs/containers.md §4.2).
 */
export function guidToBracedLowercase(bytes: Uint8Array, order: GuidByteOrder = 'ms'): string {
  return `{${guidToString(bytes, order)}}`;
}

const GUID_TEXT = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i;

/**
 * Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (braces optional, any case) into 16 bytes in
 * `order`. Returns undefined when the text is not a GUID.
 */
export function guidFromString(text: string, order: GuidByteOrder = 'ms'): Uint8Array | undefined {
  const match = GUID_TEXT.exec(text.trim());
  if (match === null) return undefined;
  if (text.trim().startsWith('{') !== text.trim().endsWith('}')) return undefined;
  const rfc = new Uint8Array(Buffer.from(match.slice(1).join(''), 'hex'));
  return order === 'rfc' ? rfc : swapGuidByteOrder(rfc);
}

/** `guidFromString` for constants in source code: a typo is a bug, not a user error. */
export function guidConstant(text: string, order: GuidByteOrder = 'ms'): Uint8Array {
  const bytes = guidFromString(text, order);
  if (bytes === undefined) throw internalError(`bad GUID constant ${text}`);
  return bytes;
}

export function guidEquals(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== GUID_LENGTH || b.length !== GUID_LENGTH) return false;
  for (let index = 0; index < GUID_LENGTH; index++) if (a[index] !== b[index]) return false;
  return true;
}

export function isZeroGuid(bytes: Uint8Array): boolean {
  return guidEquals(bytes, ZERO_GUID);
}

function checkLength(bytes: Uint8Array): Uint8Array {
  if (bytes.length !== GUID_LENGTH) throw internalError(`a GUID has 16 bytes, got ${bytes.length}`);
  return bytes;
}
