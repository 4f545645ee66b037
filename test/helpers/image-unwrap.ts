// SPDX-License-Identifier: MIT
/**
 * Independent readers for the urBackup image tests (no src/ import, no fixture-writer import):
 * - urBackup's compressed container (`.vhdz`/`.vhdxz`), read from docs/urbackup-image-formats.md
 *   §2 and urBackup's `fsimageplugin/CompressedFile.cpp` (readHeader, readIndex, fillCache):
 *   the header, the index, every record in the file in file order (current and stale), each
 *   record decoded by the `zstd` CLI (mode 2) or node:zlib inflate (mode 1), and the plain file
 *   the container wraps, rebuilt from the records the index names;
 * - the fields of a VHD footer and dynamic header at the VHD spec's offsets ("Hard Disk Footer
 *   Format", "Dynamic Disk Header Format"), and a VHD's disk as urBackup's `VHDFile::Read` gives
 *   it (a sector comes from the file only when its block is allocated and its bitmap bit is set,
 *   MSB first), for differencing chains too;
 * - the VHDX header's DataWriteGuid (MS-VHDX 2.2.2).
 */
import { spawnSync } from 'node:child_process';
import { inflateSync } from 'node:zlib';

const MIB = 1024 * 1024;

export interface ContainerHeader {
  readonly version: string;
  /** 49 bytes for "1.0", 50 for "1.1" (CompressedFile.cpp `c_header_size`). */
  readonly headerSize: number;
  readonly indexOffset: number;
  readonly size: number;
  readonly blockSize: number;
}

export interface ContainerRecord {
  /** File offset of the record (its 8-byte head). */
  readonly at: number;
  /** 0 stored, 1 zlib, 2 zstd. */
  readonly mode: number;
  readonly payload: Uint8Array;
}

const MAGIC = 'URBACKUP COMPRESSED FILE#';

export function isContainer(bytes: Uint8Array): boolean {
  return Buffer.from(bytes.subarray(0, MAGIC.length)).toString('latin1') === MAGIC;
}

/** The header: magic, version and NUL, int64 index offset at 29, int64 size at 37, uint32 block size at 45. */
export function containerHeader(bytes: Uint8Array): ContainerHeader {
  if (!isContainer(bytes)) throw new Error('not an urBackup compressed file');
  const version = Buffer.from(bytes.subarray(25, 28)).toString('latin1');
  if (bytes[28] !== 0) throw new Error('version not NUL-terminated');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    version,
    headerSize: version === '1.0' ? 49 : 50,
    indexOffset: Number(view.getBigInt64(29, true)),
    size: Number(view.getBigInt64(37, true)),
    blockSize: view.getUint32(45, true),
  };
}

/** ceil(size / block size) int64 record offsets, −1 for a block never written. */
export function containerIndex(bytes: Uint8Array, header: ContainerHeader): number[] {
  const count = Math.ceil(header.size / header.blockSize);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const index: number[] = [];
  for (let block = 0; block < count; block++) index.push(Number(view.getBigInt64(header.indexOffset + block * 8, true)));
  return index;
}

/** Every record between the header and the index, in file order: records are appended back to back. */
export function containerRecords(bytes: Uint8Array, header: ContainerHeader): ContainerRecord[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: ContainerRecord[] = [];
  let at = header.headerSize;
  while (at < header.indexOffset) {
    const length = view.getUint32(at, true);
    const mode = view.getUint32(at + 4, true);
    if (at + 8 + length > header.indexOffset) throw new Error(`record at ${at} runs into the index`);
    records.push({ at, mode, payload: bytes.subarray(at + 8, at + 8 + length) });
    at += 8 + length;
  }
  return records;
}

/** The `zstd` CLI's decoding of one payload. */
export function zstdCli(payload: Uint8Array): Uint8Array {
  const result = spawnSync('zstd', ['-d', '-c', '-q'], { input: payload, maxBuffer: 64 * MIB });
  if (result.status !== 0) throw new Error(`zstd -d failed: ${result.stderr.toString()}`);
  return new Uint8Array(result.stdout);
}

/** A record's block, decoded by a codec that is not synthvhd's. */
export function decodeRecord(record: ContainerRecord): Uint8Array {
  if (record.mode === 2) return zstdCli(record.payload);
  if (record.mode === 1) return new Uint8Array(inflateSync(record.payload));
  if (record.mode === 0) return record.payload.slice();
  throw new Error(`record at ${record.at}: unknown mode ${record.mode}`);
}

/** The plain file a container wraps: each block from the record the index names, zeros for −1. */
export function unwrapContainer(bytes: Uint8Array): Uint8Array {
  const header = containerHeader(bytes);
  const index = containerIndex(bytes, header);
  const byOffset = new Map(containerRecords(bytes, header).map((record) => [record.at, record]));
  const out = new Uint8Array(index.length * header.blockSize);
  index.forEach((offset, block) => {
    if (offset === -1) return;
    const record = byOffset.get(offset);
    if (record === undefined) throw new Error(`block ${block}: index names ${offset}, where no record starts`);
    const decoded = decodeRecord(record);
    if (decoded.length !== header.blockSize) throw new Error(`block ${block}: decoded to ${decoded.length} bytes`);
    out.set(decoded, block * header.blockSize);
  });
  return out.slice(0, header.size);
}

// ---- VHD (the VHD spec, big-endian) ----

export interface VhdFields {
  readonly footer: {
    readonly cookie: string;
    readonly dataOffset: bigint;
    readonly timeStamp: number;
    readonly creatorApplication: string;
    readonly currentSize: number;
    readonly diskType: number;
    readonly uniqueId: Uint8Array;
    readonly checksumOk: boolean;
  };
  readonly header: {
    readonly cookie: string;
    readonly tableOffset: number;
    readonly maxTableEntries: number;
    readonly blockSize: number;
    readonly parentUniqueId: Uint8Array;
    readonly parentTimeStamp: number;
    /** Parent Unicode Name: UTF-16 big-endian, up to the first NUL. */
    readonly parentUnicodeName: string;
    readonly locators: readonly { readonly code: string; readonly space: number; readonly length: number; readonly offset: number }[];
    readonly checksumOk: boolean;
  };
  readonly bat: readonly number[];
}

function onesComplement(bytes: Uint8Array, checksumAt: number): number {
  let sum = 0;
  bytes.forEach((byte, index) => {
    if (index < checksumAt || index >= checksumAt + 4) sum += byte;
  });
  return ~sum >>> 0;
}

/** Footer at the end (the copy at 0 must be equal), dynamic header at Data Offset, BAT at Table Offset. */
export function vhdFields(file: Uint8Array): VhdFields {
  const buffer = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const footerBytes = buffer.subarray(buffer.length - 512);
  if (!footerBytes.equals(buffer.subarray(0, 512))) throw new Error('the footer copy at 0 differs from the footer');
  const dataOffset = footerBytes.readBigUInt64BE(16);
  const headerBytes = buffer.subarray(Number(dataOffset), Number(dataOffset) + 1024);
  const nameBytes = Buffer.from(headerBytes.subarray(64, 576));
  let end = 0;
  while (end < nameBytes.length && (nameBytes[end] !== 0 || nameBytes[end + 1] !== 0)) end += 2;
  const locators = [];
  for (let index = 0; index < 8; index++) {
    const at = 576 + index * 24;
    const code = headerBytes.subarray(at, at + 4).toString('latin1');
    if (headerBytes.readUInt32BE(at) === 0) continue;
    locators.push({ code, space: headerBytes.readUInt32BE(at + 4), length: headerBytes.readUInt32BE(at + 8), offset: Number(headerBytes.readBigUInt64BE(at + 16)) });
  }
  const tableOffset = Number(headerBytes.readBigUInt64BE(16));
  const maxTableEntries = headerBytes.readUInt32BE(28);
  const bat: number[] = [];
  for (let block = 0; block < maxTableEntries; block++) bat.push(buffer.readUInt32BE(tableOffset + block * 4));
  return {
    footer: {
      cookie: footerBytes.subarray(0, 8).toString('latin1'),
      dataOffset,
      timeStamp: footerBytes.readUInt32BE(24),
      creatorApplication: footerBytes.subarray(28, 32).toString('latin1'),
      currentSize: Number(footerBytes.readBigUInt64BE(48)),
      diskType: footerBytes.readUInt32BE(60),
      uniqueId: new Uint8Array(footerBytes.subarray(68, 84)),
      checksumOk: footerBytes.readUInt32BE(64) === onesComplement(footerBytes, 64),
    },
    header: {
      cookie: headerBytes.subarray(0, 8).toString('latin1'),
      tableOffset,
      maxTableEntries,
      blockSize: headerBytes.readUInt32BE(32),
      parentUniqueId: new Uint8Array(headerBytes.subarray(40, 56)),
      parentTimeStamp: headerBytes.readUInt32BE(56),
      parentUnicodeName: nameBytes.subarray(0, end).swap16().toString('utf16le'),
      locators,
      checksumOk: headerBytes.readUInt32BE(36) === onesComplement(headerBytes, 36),
    },
    bat,
  };
}

/**
 * The disk of a dynamic or differencing VHD as urBackup's VHDFile::Read returns it: for each
 * sector, the file's when its block is allocated and its bitmap bit (MSB first) is set, else the
 * parent's (`parentDisk`), else zeros.
 */
export function vhdDisk(file: Uint8Array, parentDisk?: Uint8Array): Uint8Array {
  const fields = vhdFields(file);
  const size = fields.footer.currentSize;
  const blockSize = fields.header.blockSize;
  const bitmapSize = Math.ceil(blockSize / 512 / 8 / 512) * 512;
  const disk = new Uint8Array(size);
  if (parentDisk !== undefined) disk.set(parentDisk.subarray(0, size));
  fields.bat.forEach((entry, block) => {
    if (entry === 0xffffffff) return;
    const bitmapAt = entry * 512;
    for (let sector = 0; sector < blockSize / 512; sector++) {
      const diskAt = block * blockSize + sector * 512;
      if (diskAt >= size) break;
      if (((file[bitmapAt + (sector >> 3)] ?? 0) & (0x80 >> (sector & 7))) === 0) continue;
      const fileAt = bitmapAt + bitmapSize + sector * 512;
      disk.set(file.subarray(fileAt, fileAt + 512), diskAt);
    }
  });
  return disk;
}

/** MS-VHDX 2.2.2: the current header (greater SequenceNumber of the two) and its DataWriteGuid. */
export function vhdxDataWriteGuid(file: Uint8Array): Uint8Array {
  const buffer = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const [first, second] = [buffer.subarray(64 * 1024, 68 * 1024), buffer.subarray(128 * 1024, 132 * 1024)];
  if (first.subarray(0, 4).toString('latin1') !== 'head' || second.subarray(0, 4).toString('latin1') !== 'head') throw new Error('VHDX header signature');
  const current = second.readBigUInt64LE(8) > first.readBigUInt64LE(8) ? second : first;
  return new Uint8Array(current.subarray(32, 48));
}

/** MS-VHDX's GUID text: the first three fields little-endian on disk, lowercase, braced. */
export function vhdxGuidText(guid: Uint8Array): string {
  const b = Buffer.from(guid);
  const hex = (bytes: Buffer): string => bytes.toString('hex');
  return `{${hex(Buffer.from(b.subarray(0, 4)).reverse())}-${hex(Buffer.from(b.subarray(4, 6)).reverse())}-${hex(Buffer.from(b.subarray(6, 8)).reverse())}-${hex(b.subarray(8, 10))}-${hex(b.subarray(10, 16))}}`;
}
