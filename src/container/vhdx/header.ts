// SPDX-License-Identifier: MIT
/**
 * VHDX header (two copies, at 64 KiB and 128 KiB).
 *
 * Spec: [MS-VHDX] v20180912 (VHDX Format Specification v1.00, 2012), 2.2.2 Headers.
 */
import { SynthvhdError, internalError } from '../../errors/synthvhd-error.js';
import { copyBytes, getAscii, getU64, hex32, setAscii, setU64, viewOf } from '../binary.js';
import { GUID_LENGTH } from '../guid.js';
import { checkVhdxChecksum, writeVhdxChecksum } from './checksum.js';
import { VHDX_HEADER_SIGNATURE, VHDX_HEADER_SIZE, VHDX_HEADER_VERSION, VHDX_LOG_VERSION } from './constants.js';

// MS-VHDX 2.2.2 field offsets.
const SIGNATURE = 0; // 4: "head"
const CHECKSUM = 4; // 4: CRC-32C over the 4 KiB header, this field zero
const SEQUENCE_NUMBER = 8; // 8: the valid header with the greater number is current
const FILE_WRITE_GUID = 16; // 16: changes when the file is first opened for writing
const DATA_WRITE_GUID = 32; // 16: changes when the virtual disk's data is first written; children link to it
const LOG_GUID = 48; // 16: zero = no log to replay
const LOG_VERSION = 64; // 2: MUST be 0
const VERSION = 66; // 2: MUST be 1
const LOG_LENGTH = 68; // 4: multiple of 1 MiB
const LOG_OFFSET = 72; // 8: multiple of 1 MiB, >= 1 MiB

export interface VhdxHeader {
  /** u64; a bigint because Hyper-V may bump it for the life of the file. */
  readonly sequenceNumber: bigint;
  readonly fileWriteGuid: Uint8Array;
  readonly dataWriteGuid: Uint8Array;
  readonly logGuid: Uint8Array;
  readonly logVersion: number;
  readonly version: number;
  readonly logLength: number;
  readonly logOffset: number;
}

/** The 4 KiB header with its checksum; the rest of the 64 KiB slot is zero. */
export function encodeVhdxHeader(header: VhdxHeader): Uint8Array {
  const bytes = new Uint8Array(VHDX_HEADER_SIZE);
  const view = viewOf(bytes);
  setAscii(bytes, SIGNATURE, VHDX_HEADER_SIGNATURE);
  view.setBigUint64(SEQUENCE_NUMBER, header.sequenceNumber, true);
  bytes.set(guid(header.fileWriteGuid), FILE_WRITE_GUID);
  bytes.set(guid(header.dataWriteGuid), DATA_WRITE_GUID);
  bytes.set(guid(header.logGuid), LOG_GUID);
  view.setUint16(LOG_VERSION, header.logVersion, true);
  view.setUint16(VERSION, header.version, true);
  view.setUint32(LOG_LENGTH, header.logLength, true);
  setU64(view, LOG_OFFSET, header.logOffset, 'le');
  writeVhdxChecksum(bytes, CHECKSUM); // last: covers every field above
  return bytes;
}

/**
 * Decodes and validates one header (at least 4 KiB): signature, CRC-32C, Version 1 and
 * LogVersion 0. `where` names it in errors ("VHDX header 1 (offset 65536)").
 */
export function decodeVhdxHeader(bytes: Uint8Array, where = 'VHDX header'): VhdxHeader {
  if (bytes.length < VHDX_HEADER_SIZE) throw new SynthvhdError('E_CONTAINER', `${where}: truncated`);
  const header = bytes.subarray(0, VHDX_HEADER_SIZE);
  const view = viewOf(header);
  if (getAscii(header, SIGNATURE, 4) !== VHDX_HEADER_SIGNATURE) {
    throw new SynthvhdError('E_CONTAINER', `${where}: no "head" signature`);
  }
  const { stored, computed } = checkVhdxChecksum(header, CHECKSUM);
  if (stored !== computed) {
    throw new SynthvhdError('E_CONTAINER', `${where}: CRC-32C mismatch (stored ${hex32(stored)}, computed ${hex32(computed)})`);
  }
  const decoded: VhdxHeader = {
    sequenceNumber: view.getBigUint64(SEQUENCE_NUMBER, true),
    fileWriteGuid: copyBytes(header, FILE_WRITE_GUID, FILE_WRITE_GUID + GUID_LENGTH),
    dataWriteGuid: copyBytes(header, DATA_WRITE_GUID, DATA_WRITE_GUID + GUID_LENGTH),
    logGuid: copyBytes(header, LOG_GUID, LOG_GUID + GUID_LENGTH),
    logVersion: view.getUint16(LOG_VERSION, true),
    version: view.getUint16(VERSION, true),
    logLength: view.getUint32(LOG_LENGTH, true),
    logOffset: getU64(view, LOG_OFFSET, 'le', `${where}: LogOffset`),
  };
  if (decoded.version !== VHDX_HEADER_VERSION) {
    throw new SynthvhdError('E_CONTAINER', `${where}: Version is ${decoded.version}, expected ${VHDX_HEADER_VERSION}`);
  }
  if (decoded.logVersion !== VHDX_LOG_VERSION) {
    throw new SynthvhdError('E_CONTAINER', `${where}: LogVersion is ${decoded.logVersion}, expected ${VHDX_LOG_VERSION}`);
  }
  return decoded;
}

function guid(bytes: Uint8Array): Uint8Array {
  if (bytes.length !== GUID_LENGTH) throw internalError(`GUID of ${bytes.length} bytes`);
  return bytes;
}
