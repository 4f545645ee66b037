// SPDX-License-Identifier: MIT
/**
 * One block record of a urBackup compressed file, the unit a `compressed` extent
 * (./extent.ts) points at: uint32 stored size, uint32 mode (0 stored, 1 zlib, 2 zstd), then the
 * payload, all little-endian (uroni/urbackup_backend `fsimageplugin/CompressedFile.cpp`,
 * evictFromLruCache and fillCache; docs/urbackup-image-formats.md §2).
 */

/** CompressedFile.cpp `c_blockbufHeadersize`: uint32 size + uint32 mode. */
export const RECORD_HEADER_SIZE = 8;
/** CompressedFile.cpp `mode_none`, `mode_zlib`, `mode_zstd`. */
export const MODE_STORED = 0;
export const MODE_ZLIB = 1;
export const MODE_ZSTD = 2;

export interface RecordHeader {
  readonly storedSize: number;
  readonly mode: number;
}

export function parseRecordHeader(bytes: Uint8Array): RecordHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { storedSize: view.getUint32(0, true), mode: view.getUint32(4, true) };
}
