// SPDX-License-Identifier: MIT
/**
 * Small helpers for explicit-endian field access in the container encoders and decoders (VHD is
 * big-endian, VHDX little-endian: every call states which). No format knowledge here.
 */
import { SynthvhdError, internalError } from '../errors/synthvhd-error.js';

export type Endian = 'le' | 'be';

/** A DataView over exactly the bytes of `bytes` (respects subarray offsets). */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * A copy of bytes [start, end) as a plain Uint8Array. (`Buffer#slice` returns a view, not a
 * copy: decoders that keep bytes use this so a Buffer input can never alias their result.)
 */
export function copyBytes(bytes: Uint8Array, start: number, end: number): Uint8Array {
  return new Uint8Array(bytes.subarray(start, end));
}

/** Writes a non-negative safe integer as a u64. */
export function setU64(view: DataView, offset: number, value: number, endian: Endian): void {
  if (!Number.isSafeInteger(value) || value < 0) throw internalError(`u64 field value ${value} is not a safe integer`);
  view.setBigUint64(offset, BigInt(value), endian === 'le');
}

/**
 * Reads a u64 as a number. Values above 2^53 cannot be byte offsets or sizes of anything
 * synthvhd handles: they are reported as an invalid container (`what` names the field).
 */
export function getU64(view: DataView, offset: number, endian: Endian, what: string): number {
  const value = view.getBigUint64(offset, endian === 'le');
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new SynthvhdError('E_CONTAINER', `${what} is ${value}, beyond what any real disk uses`);
  }
  return Number(value);
}

/** Writes `text` as ASCII (every code point < 0x80, checked). */
export function setAscii(bytes: Uint8Array, offset: number, text: string): void {
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code >= 0x80) throw internalError(`non-ASCII signature ${JSON.stringify(text)}`);
    bytes[offset + index] = code;
  }
}

/** Reads `length` bytes at `offset` as Latin-1 text (signatures, cookies, creator codes). */
export function getAscii(bytes: Uint8Array, offset: number, length: number): string {
  let text = '';
  for (let index = 0; index < length; index++) text += String.fromCharCode(bytes[offset + index] ?? 0);
  return text;
}

/** UTF-16 code units of `text`, in the given byte order, without a terminator. */
export function encodeUtf16(text: string, endian: Endian): Uint8Array {
  const bytes = new Uint8Array(text.length * 2);
  const view = viewOf(bytes);
  for (let index = 0; index < text.length; index++) view.setUint16(index * 2, text.charCodeAt(index), endian === 'le');
  return bytes;
}

/** UTF-16 text of `bytes` in the given byte order, cut at the first NUL code unit. */
export function decodeUtf16(bytes: Uint8Array, endian: Endian): string {
  const view = viewOf(bytes);
  const units: number[] = [];
  for (let index = 0; index + 1 < bytes.length; index += 2) {
    const unit = view.getUint16(index, endian === 'le');
    if (unit === 0) break;
    units.push(unit);
  }
  let text = '';
  for (let start = 0; start < units.length; start += 4096) {
    text += String.fromCharCode(...units.slice(start, start + 4096));
  }
  return text;
}

export function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && 2 ** Math.round(Math.log2(value)) === value;
}

export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

/** `0x` and 8 hex digits: how checksums appear in messages. */
export function hex32(value: number): string {
  return `0x${(value >>> 0).toString(16).padStart(8, '0')}`;
}

/** `size` in whole `unitName`s plus the exact remainder: "2040 GiB", "64 TiB + 512 bytes". */
export function describeSize(size: number, unit: number, unitName: string): string {
  const whole = Math.floor(size / unit);
  const rest = size - whole * unit;
  return rest === 0 ? `${whole} ${unitName}` : `${whole} ${unitName} + ${rest} bytes`;
}
