// SPDX-License-Identifier: MIT
/**
 * One block record of a urBackup compressed file, the unit a `compressed` extent
 * (./extent.ts) points at: uint32 stored size, uint32 mode (0 stored, 1 zlib, 2 zstd), then the
 * payload, all little-endian (uroni/urbackup_backend `fsimageplugin/CompressedFile.cpp`,
 * evictFromLruCache and fillCache; docs/urbackup-image-formats.md §2).
 *
 * Records are decoded by the product's one codec, native/src/record_codec.cc, reached through the
 * addon's decodeRecord on the libuv pool (src/native/native.ts): the FUSE session, compose,
 * materialize, blocklists and diffs all decode the same way and with the same bounds. The bounds
 * below are that codec's, repeated here so that parsers stay pure; a test checks them against the
 * addon.
 */
import type { FileHandle } from 'node:fs/promises';
import { fileError } from '../errors/synthvhd-error.js';
import { isNativeError } from '../native/native-error.js';
import { decodeRecordUpTo } from '../native/native.js';

/** CompressedFile.cpp `c_blockbufHeadersize`: uint32 size + uint32 mode (record_codec.h kRecordHeaderBytes). */
export const RECORD_HEADER_SIZE = 8;
/** CompressedFile.cpp `mode_none`, `mode_zlib`, `mode_zstd`. */
export const MODE_STORED = 0;
export const MODE_ZLIB = 1;
export const MODE_ZSTD = 2;

/**
 * The one bound on the size a record decodes to, i.e. on a compressed file's block size
 * (record_codec.h kMaxDecodedBytes). urBackup writes 2 MiB blocks (`c_cacheBuffersize`); its
 * reader takes the block size from the header; docs/urbackup-image-formats.md §2 "Bounds".
 */
export const MAX_DECODED_BYTES = 64 * 1024 * 1024;

/**
 * The one bound on a record's stored payload for a block of `decodedLength` bytes
 * (record_codec.cc MaxStoredBytes): the larger of what ZSTD_compress (zstd.h
 * ZSTD_COMPRESSBOUND) and miniz's mz_compress (mz_compressBound) can write for that input.
 */
export function maxStoredBytes(decodedLength: number): number {
  const n = decodedLength;
  const zstd = n + Math.floor(n / 256) + (n < 128 * 1024 ? Math.floor((128 * 1024 - n) / 2048) : 0);
  const miniz = Math.max(128 + Math.floor((n * 110) / 100), 128 + n + (Math.floor(n / (31 * 1024)) + 1) * 5);
  return Math.max(zstd, miniz);
}

export interface RecordHeader {
  readonly storedSize: number;
  readonly mode: number;
}

export function parseRecordHeader(bytes: Uint8Array): RecordHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { storedSize: view.getUint32(0, true), mode: view.getUint32(4, true) };
}

/**
 * Reads and decodes the block record at `record` of compressed file `path` (open as `handle`,
 * which must stay open until this settles) to exactly `blockLength` bytes, or, with `atLeast`, to
 * any length in [atLeast, blockLength] (a file's last block: the result is as long as it decoded).
 * Decodes into `into` when given (at least `blockLength` bytes; the result is a view of it),
 * else into a new buffer. Errors are E_IO and name the file and the record.
 */
export async function readCompressedRecord(handle: FileHandle, path: string, record: number, blockLength: number, atLeast?: number, into?: Uint8Array): Promise<Uint8Array> {
  if (!Number.isSafeInteger(blockLength) || blockLength < 0 || blockLength > MAX_DECODED_BYTES) {
    throw fileError('E_IO', path, `block record at ${record}: a block of ${blockLength} bytes is larger than the ${MAX_DECODED_BYTES}-byte bound`);
  }
  // Not zero-filled: the codec writes every byte it reports, and only those are returned.
  const block = into !== undefined && into.length >= blockLength ? into : Buffer.allocUnsafeSlow(blockLength);
  let length: number;
  try {
    length = await decodeRecordUpTo(handle.fd, record, atLeast ?? blockLength, blockLength, block);
  } catch (error) {
    if (isNativeError(error, 'EIO')) throw fileError('E_IO', path, `block record at ${record}: corrupt compressed block: ${error.reason ?? error.message}`, error);
    if (isNativeError(error)) throw fileError('E_IO', path, `block record at ${record}: ${error.reason ?? error.message}`, error);
    throw error;
  }
  const bytes = new Uint8Array(block.buffer, block.byteOffset, length);
  return bytes;
}
