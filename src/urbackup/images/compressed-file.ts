// SPDX-License-Identifier: MIT
/**
 * urBackup's compressed container (`.vhdz`, `.vhdxz`): a VHD or VHDX cut into fixed blocks,
 * each compressed on its own. Pure functions over bytes; docs/urbackup-image-formats.md §2.
 *
 * Learned from uroni/urbackup_backend `fsimageplugin/CompressedFile.cpp` (dev @90da741):
 * - header (readHeader, writeHeader): the magic `URBACKUP COMPRESSED FILE#`, the version `1.1`
 *   and a NUL, int64 index offset @29, int64 logical size @37, uint32 block size @45, all
 *   little-endian; `c_header_size` is 50, so byte 49 is written uninitialised. Before 2020
 *   (commit 16b80c08) the magic was `URBACKUP COMPRESSED FILE#1.0` + NUL and the header 49 bytes:
 *   the fields sit at the same offsets, only the first record moves.
 * - the index (readIndex, writeIndex): ceil(size / blockSize) int64 offsets of block records,
 *   -1 for a block never written (fillCache reads it as zeros).
 * - a block record (evictFromLruCache, fillCache): uint32 payload size, uint32 mode (0 stored,
 *   1 zlib, 2 zstd), the payload. Records are appended as blocks leave a 5-block LRU, from
 *   several threads, and a block evicted twice leaves its older record behind: only the index
 *   says which record is current. The header's version does not name the codec.
 * - fillCache accepts a decoded block shorter than blockSize only for the last block.
 */
import { type CompressedIndex, type CompressedSink, ZERO_BLOCK, mapCompressedRange } from '../../extents/compressed-index.js';
import { SynthvhdError } from '../../errors/synthvhd-error.js';
import { getAscii, viewOf } from '../../container/binary.js';

/** CompressedFile.cpp `headerMagic` (without its NUL). */
export const COMPRESSED_MAGIC = 'URBACKUP COMPRESSED FILE#';
/** Bytes to read to recognise and parse any header version. */
export const COMPRESSED_HEADER_READ = 50;
import { MAX_DECODED_BYTES, RECORD_HEADER_SIZE } from '../../extents/compressed-record.js';
export { MODE_STORED, MODE_ZLIB, MODE_ZSTD, RECORD_HEADER_SIZE, parseRecordHeader, type RecordHeader } from '../../extents/compressed-record.js';

const INDEX_OFFSET_AT = 29;
const LOGICAL_SIZE_AT = 37;
const BLOCK_SIZE_AT = 45;

export interface CompressedHeader {
  readonly version: '1.0' | '1.1';
  /** 49 (v1.0) or 50 (v1.1): no record can start before this. */
  readonly headerSize: number;
  readonly indexOffset: number;
  /** The size of the wrapped VHD/VHDX. */
  readonly logicalSize: number;
  readonly blockSize: number;
}

/** True when `bytes` start with urBackup's compressed-file magic (VHDFile::check_if_compressed). */
export function isCompressedFile(bytes: Uint8Array): boolean {
  return bytes.length >= COMPRESSED_MAGIC.length && getAscii(bytes, 0, COMPRESSED_MAGIC.length) === COMPRESSED_MAGIC;
}

function safeInt64(view: DataView, at: number, what: string): number {
  const value = view.getBigInt64(at, true);
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new SynthvhdError('E_CONTAINER', `urBackup compressed file: ${what} is ${value}`);
  }
  return Number(value);
}

/**
 * The header of a compressed file of `fileSize` bytes. A header whose logical size is 0 is the
 * one written at creation (the constructor's writeHeader): urBackup never finished the file.
 */
export function parseCompressedHeader(bytes: Uint8Array, fileSize: number): CompressedHeader {
  if (!isCompressedFile(bytes)) throw new SynthvhdError('E_CONTAINER', 'not a urBackup compressed file (no "URBACKUP COMPRESSED FILE#" magic)');
  const versionText = getAscii(bytes, COMPRESSED_MAGIC.length, 4);
  if (versionText !== '1.0\0' && versionText !== '1.1\0') {
    throw new SynthvhdError('E_CONTAINER', `urBackup compressed file: unknown version ${JSON.stringify(versionText.replace(/\0+$/, ''))}`);
  }
  const version = versionText === '1.0\0' ? '1.0' : '1.1';
  const headerSize = version === '1.0' ? 49 : 50;
  if (bytes.length < headerSize || fileSize < headerSize) {
    throw new SynthvhdError('E_CONTAINER', `urBackup compressed file: truncated header (${Math.min(bytes.length, fileSize)} of ${headerSize} bytes)`);
  }
  const view = viewOf(bytes);
  const indexOffset = safeInt64(view, INDEX_OFFSET_AT, 'index offset');
  const logicalSize = safeInt64(view, LOGICAL_SIZE_AT, 'size');
  const blockSize = view.getUint32(BLOCK_SIZE_AT, true);
  if (logicalSize === 0) {
    throw new SynthvhdError('E_INCOMPLETE', 'urBackup compressed file was never finished (its header still says size 0, no index): urBackup did not complete this backup');
  }
  if (blockSize === 0 || blockSize % 512 !== 0 || blockSize > MAX_DECODED_BYTES) {
    throw new SynthvhdError('E_CONTAINER', `urBackup compressed file: block size ${blockSize} is not a plausible block size`);
  }
  const header = { version, headerSize, indexOffset, logicalSize, blockSize } as const;
  const indexEnd = indexOffset + indexLength(header);
  if (indexOffset < headerSize || indexEnd > fileSize) {
    throw new SynthvhdError(
      'E_CONTAINER',
      `urBackup compressed file: index at ${indexOffset} (+${indexLength(header)} bytes) is not inside the ${fileSize}-byte file (truncated?)`,
    );
  }
  return header;
}

/** Number of blocks (CompressedFile::readIndex `nOffsetItems`). */
export function blockCount(header: CompressedHeader): number {
  return Math.ceil(header.logicalSize / header.blockSize);
}

/** Bytes of the index. */
export function indexLength(header: CompressedHeader): number {
  return blockCount(header) * 8;
}

/**
 * The index: one record offset per block, -1 for a zero block. Every record must start after the
 * header and leave room for its 8-byte record header before the index (records are appended
 * before writeIndex runs; the index is the last thing in the file).
 */
export function parseCompressedIndex(bytes: Uint8Array, header: CompressedHeader): number[] {
  const count = blockCount(header);
  if (bytes.length < count * 8) throw new SynthvhdError('E_CONTAINER', 'urBackup compressed file: index truncated');
  const view = viewOf(bytes);
  const offsets: number[] = new Array<number>(count);
  for (let block = 0; block < count; block++) {
    const value = view.getBigInt64(block * 8, true);
    if (value === BigInt(ZERO_BLOCK)) {
      offsets[block] = ZERO_BLOCK;
      continue;
    }
    if (value < BigInt(header.headerSize) || value + BigInt(RECORD_HEADER_SIZE) > BigInt(header.indexOffset)) {
      throw new SynthvhdError(
        'E_CONTAINER',
        `urBackup compressed file: block ${block} record at ${value} is ${value < BigInt(header.headerSize) ? 'inside the header' : 'past the data (at or after the index)'}`,
      );
    }
    offsets[block] = Number(value);
  }
  return offsets;
}

/** What `mapLogicalRange` needs of a parsed container. */
export interface CompressedContainer {
  readonly path: string;
  readonly header: CompressedHeader;
  readonly offsets: readonly number[];
  /**
   * What the last block decodes to. urBackup compresses whole blocks (evictFromLruCache passes
   * `blocksize`), so it is usually blockSize even past the logical end; the reader learns it when
   * it decodes that block for the VHD footer, which lives there.
   */
  readonly lastBlockLength: number;
}

/** The container's index in the form the extent readers use (src/extents/compressed-index.ts). */
export function indexOf(container: CompressedContainer): CompressedIndex {
  const { blockSize, logicalSize } = container.header;
  return { blockSize, logicalSize, lastBlockLength: container.lastBlockLength, offsets: container.offsets };
}

/**
 * Appends logical bytes [offset, offset + length) of the wrapped file to `to`: one piece per
 * container block touched (an extent never spans two blocks), zeros for -1 index entries.
 */
export function mapLogicalRange(container: CompressedContainer, offset: number, length: number, to: CompressedSink, what: string): void {
  mapCompressedRange(container.path, indexOf(container), offset, length, to, what);
}
