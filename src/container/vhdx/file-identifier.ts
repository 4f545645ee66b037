// SPDX-License-Identifier: MIT
/**
 * VHDX File Type Identifier (first 64 KiB slot of the header section).
 *
 * Spec: [MS-VHDX] v20180912 (VHDX Format Specification v1.00, 2012), 2.2.1 File Type Identifier.
 */
import { SynthvhdError } from '../../errors/synthvhd-error.js';
import { decodeUtf16, encodeUtf16, getAscii, setAscii } from '../binary.js';
import {
  VHDX_FILE_ID_CREATOR_LENGTH,
  VHDX_FILE_ID_CREATOR_OFFSET,
  VHDX_FILE_ID_SIGNATURE,
  VHDX_FILE_ID_SIZE,
} from './constants.js';

/**
 * Signature "vhdxfile" then Creator (MS-VHDX 2.2.1: UTF-16, 512 bytes, "MAY be used ... to
 * identify the application that created the file", not validated by readers). `creator` is cut
 * to 255 code units so a NUL always follows. Returns the 520 meaningful bytes; the rest of the
 * 64 KiB slot is zero.
 */
export function encodeVhdxFileIdentifier(creator: string): Uint8Array {
  const bytes = new Uint8Array(VHDX_FILE_ID_SIZE);
  setAscii(bytes, 0, VHDX_FILE_ID_SIGNATURE);
  const maxUnits = VHDX_FILE_ID_CREATOR_LENGTH / 2 - 1;
  bytes.set(encodeUtf16(creator.slice(0, maxUnits), 'le'), VHDX_FILE_ID_CREATOR_OFFSET);
  return bytes;
}

/** True when `bytes` starts with the VHDX signature. */
export function isVhdxFileIdentifier(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && getAscii(bytes, 0, 8) === VHDX_FILE_ID_SIGNATURE;
}

/** The Creator string of a File Type Identifier (at least `VHDX_FILE_ID_SIZE` bytes). */
export function decodeVhdxFileIdentifier(bytes: Uint8Array, where = 'VHDX file identifier'): { creator: string } {
  if (bytes.length < VHDX_FILE_ID_SIZE || !isVhdxFileIdentifier(bytes)) {
    throw new SynthvhdError('E_CONTAINER', `${where}: no "vhdxfile" signature`);
  }
  const creatorBytes = bytes.subarray(VHDX_FILE_ID_CREATOR_OFFSET, VHDX_FILE_ID_CREATOR_OFFSET + VHDX_FILE_ID_CREATOR_LENGTH);
  return { creator: decodeUtf16(creatorBytes, 'le') };
}
