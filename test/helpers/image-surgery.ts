// SPDX-License-Identifier: MIT
/**
 * Byte surgery on urBackup image files for the damaged-backup tests, written from the format
 * documents and specs, not from src/ (whose parsers these files attack):
 * - the compressed container (docs/urbackup-image-formats.md §2): header fields at 29 (int64
 *   index offset), 37 (int64 size), 45 (uint32 block size), all little-endian; the index of
 *   int64 record offsets (-1: a zero block); records of uint32 payload size, uint32 mode
 *   (0 stored, 1 zlib, 2 zstd) and the payload. `decodeContainer`/`encodeContainer` unwrap and
 *   rewrap the VHD/VHDX inside (zlib records, in block order), so its structures can be damaged
 *   and still reach the parsers behind the container.
 * - VHD (Virtual Hard Disk Image Format Specification, Microsoft, 2006): big-endian footer
 *   (cookie, data offset @16, current size @48, disk type @60, checksum @64, Unique Id @68) and
 *   dynamic disk header (table offset @16, max table entries @28, block size @32, checksum @36,
 *   parent Unique Id @40, parent time stamp @56, parent unicode name @64, UTF-16BE); the
 *   checksum is the ones' complement of the byte sum without the checksum field.
 * - VHDX ([MS-VHDX] 2.2): headers at 64 and 128 KiB and region tables at 192 and 256 KiB, each
 *   with a CRC-32C over its 4 KiB / 64 KiB with the checksum field zero; the metadata table
 *   (entries of item GUID, uint32 offset, uint32 length); BAT entries (state in bits 0-2, file
 *   offset in MiB in bits 20-63).
 * Mutations that must get past a checksum to reach a deeper parser fix the checksum afterwards.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { deflateSync, inflateSync } from 'node:zlib';

const MIB = 1024 * 1024;

// ---- compressed container -----------------------------------------------------------------

export const INDEX_OFFSET_AT = 29;
export const SIZE_AT = 37;
export const BLOCK_SIZE_AT = 45;
const MAGIC = 'URBACKUP COMPRESSED FILE#';

export interface ContainerView {
  readonly headerSize: number;
  readonly indexOffset: number;
  readonly size: number;
  readonly blockSize: number;
  /** Record offset per block, -1 for a zero block. */
  readonly offsets: readonly number[];
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Reads a well-formed container's header and index (throws on anything else: inputs are our own). */
export function readContainer(bytes: Uint8Array): ContainerView {
  const magic = new TextDecoder('latin1').decode(bytes.subarray(0, MAGIC.length + 4));
  if (magic !== `${MAGIC}1.1\0` && magic !== `${MAGIC}1.0\0`) throw new Error('not a urBackup compressed file');
  const headerSize = magic.endsWith('1.1\0') ? 50 : 49;
  const data = view(bytes);
  const indexOffset = Number(data.getBigInt64(INDEX_OFFSET_AT, true));
  const size = Number(data.getBigInt64(SIZE_AT, true));
  const blockSize = data.getUint32(BLOCK_SIZE_AT, true);
  const count = Math.ceil(size / blockSize);
  const offsets: number[] = [];
  for (let block = 0; block < count; block++) offsets.push(Number(data.getBigInt64(indexOffset + block * 8, true)));
  return { headerSize, indexOffset, size, blockSize, offsets };
}

export interface RecordView {
  readonly at: number;
  readonly payloadSize: number;
  readonly mode: number;
}

export function readRecord(bytes: Uint8Array, at: number): RecordView {
  const data = view(bytes);
  return { at, payloadSize: data.getUint32(at, true), mode: data.getUint32(at + 4, true) };
}

export function zstdCompress(bytes: Uint8Array, level = 3): Uint8Array {
  const result = spawnSync('zstd', [`-${level}`, '-c', '-q', '--no-check'], { input: bytes, maxBuffer: 256 * MIB });
  if (result.status !== 0) throw new Error(`zstd failed: ${result.stderr.toString()}`);
  return new Uint8Array(result.stdout);
}

function zstdDecompress(bytes: Uint8Array): Uint8Array {
  const result = spawnSync('zstd', ['-d', '-c', '-q'], { input: bytes, maxBuffer: 256 * MIB });
  if (result.status !== 0) throw new Error(`zstd -d failed: ${result.stderr.toString()}`);
  return new Uint8Array(result.stdout);
}

/** The file wrapped by a well-formed container (zero blocks as zeros, the size the header says). */
export function decodeContainer(bytes: Uint8Array): Uint8Array {
  const container = readContainer(bytes);
  const out = new Uint8Array(container.size);
  container.offsets.forEach((at, block) => {
    if (at === -1) return;
    const record = readRecord(bytes, at);
    const payload = bytes.subarray(at + 8, at + 8 + record.payloadSize);
    const decoded = record.mode === 2 ? zstdDecompress(payload) : record.mode === 1 ? new Uint8Array(inflateSync(payload)) : payload;
    const start = block * container.blockSize;
    out.set(decoded.subarray(0, Math.min(container.blockSize, container.size - start)), start);
  });
  return out;
}

/** Compressed blocks by content: mutations of one image share all but a block or two. */
const deflated = new Map<string, Uint8Array>();

function deflateBlock(block: Uint8Array): Uint8Array {
  const key = createHash('sha1').update(block).digest('hex');
  let payload = deflated.get(key);
  if (payload === undefined) {
    payload = new Uint8Array(deflateSync(block, { level: 1 }));
    if (deflated.size > 64) deflated.clear();
    deflated.set(key, payload);
  }
  return payload;
}

/** `inner` wrapped as a v1.1 container of 2 MiB zlib records in block order, index last. */
export function encodeContainer(inner: Uint8Array, blockSize = 2 * MIB): Uint8Array {
  const count = Math.ceil(inner.length / blockSize);
  const parts: Uint8Array[] = [];
  const offsets: number[] = [];
  let at = 50;
  for (let block = 0; block < count; block++) {
    const whole = new Uint8Array(blockSize); // urBackup compresses whole blocks, past the end too
    whole.set(inner.subarray(block * blockSize, (block + 1) * blockSize));
    const payload = deflateBlock(whole);
    const record = new Uint8Array(8 + payload.length);
    view(record).setUint32(0, payload.length, true);
    view(record).setUint32(4, 1, true);
    record.set(payload, 8);
    parts.push(record);
    offsets.push(at);
    at += record.length;
  }
  const header = new Uint8Array(50);
  header.set(new TextEncoder().encode(`${MAGIC}1.1\0`));
  view(header).setBigInt64(INDEX_OFFSET_AT, BigInt(at), true);
  view(header).setBigInt64(SIZE_AT, BigInt(inner.length), true);
  view(header).setUint32(BLOCK_SIZE_AT, blockSize, true);
  const index = new Uint8Array(count * 8);
  offsets.forEach((offset, block) => {
    view(index).setBigInt64(block * 8, BigInt(offset), true);
  });
  const out = new Uint8Array(at + index.length);
  out.set(header, 0);
  let position = 50;
  for (const part of parts) {
    out.set(part, position);
    position += part.length;
  }
  out.set(index, position);
  return out;
}

// ---- little helpers over a copy -----------------------------------------------------------

export function setU32LE(bytes: Uint8Array, at: number, value: number): void {
  view(bytes).setUint32(at, value >>> 0, true);
}

export function setU64LE(bytes: Uint8Array, at: number, value: bigint): void {
  view(bytes).setBigUint64(at, BigInt.asUintN(64, value), true);
}

export function setU32BE(bytes: Uint8Array, at: number, value: number): void {
  view(bytes).setUint32(at, value >>> 0, false);
}

export function setU64BE(bytes: Uint8Array, at: number, value: bigint): void {
  view(bytes).setBigUint64(at, BigInt.asUintN(64, value), false);
}

export function setU16LE(bytes: Uint8Array, at: number, value: number): void {
  view(bytes).setUint16(at, value & 0xffff, true);
}

export function getU32BE(bytes: Uint8Array, at: number): number {
  return view(bytes).getUint32(at, false);
}

export function getU64BE(bytes: Uint8Array, at: number): bigint {
  return view(bytes).getBigUint64(at, false);
}

export function getU64LE(bytes: Uint8Array, at: number): bigint {
  return view(bytes).getBigUint64(at, true);
}

export function getU32LE(bytes: Uint8Array, at: number): number {
  return view(bytes).getUint32(at, true);
}

// ---- VHD ------------------------------------------------------------------------------------

export const VHD_FOOTER = { dataOffset: 16, currentSize: 48, originalSize: 40, diskType: 60, checksum: 64, uniqueId: 68 } as const;
export const VHD_HEADER = { tableOffset: 16, maxTableEntries: 28, blockSize: 32, checksum: 36, parentUniqueId: 40, parentTimeStamp: 56, parentName: 64 } as const;

/** The spec's checksum: ones' complement of the sum of the bytes, the checksum field left out. */
function vhdChecksum(bytes: Uint8Array, checksumAt: number): number {
  let sum = 0;
  bytes.forEach((byte, index) => {
    if (index < checksumAt || index >= checksumAt + 4) sum += byte;
  });
  return ~sum >>> 0;
}

export interface VhdPlaces {
  /** The footer copies: at 0 and in the last 512 bytes. */
  readonly footers: readonly number[];
  readonly header: number;
  readonly batOffset: number;
  readonly batEntries: number;
  readonly blockSize: number;
}

export function vhdPlaces(bytes: Uint8Array): VhdPlaces {
  const header = Number(getU64BE(bytes, VHD_FOOTER.dataOffset));
  return {
    footers: [0, bytes.length - 512],
    header,
    batOffset: Number(getU64BE(bytes, header + VHD_HEADER.tableOffset)),
    batEntries: getU32BE(bytes, header + VHD_HEADER.maxTableEntries),
    blockSize: getU32BE(bytes, header + VHD_HEADER.blockSize),
  };
}

/** Recomputes the checksums of both footers and the dynamic header (after a field was changed). */
export function fixVhdChecksums(bytes: Uint8Array, places: VhdPlaces = vhdPlaces(bytes)): void {
  for (const at of places.footers) {
    const footer = bytes.subarray(at, at + 512);
    setU32BE(footer, VHD_FOOTER.checksum, vhdChecksum(footer, VHD_FOOTER.checksum));
  }
  const header = bytes.subarray(places.header, places.header + 1024);
  setU32BE(header, VHD_HEADER.checksum, vhdChecksum(header, VHD_HEADER.checksum));
}

/** Writes `name` as the dynamic header's parent unicode name (UTF-16BE, 512 bytes, zero padded). */
export function setVhdParentName(bytes: Uint8Array, name: string, places: VhdPlaces = vhdPlaces(bytes)): void {
  const field = bytes.subarray(places.header + VHD_HEADER.parentName, places.header + VHD_HEADER.parentName + 512);
  field.fill(0);
  for (let index = 0; index < name.length && index < 256; index++) view(field).setUint16(index * 2, name.charCodeAt(index), false);
}

// ---- VHDX -----------------------------------------------------------------------------------

export const VHDX_HEADERS = [64 * 1024, 128 * 1024] as const;
export const VHDX_REGION_TABLES = [192 * 1024, 256 * 1024] as const;
export const VHDX_HEADER = { sequenceNumber: 8, dataWriteGuid: 32, logGuid: 48, logVersion: 64, version: 66, logLength: 68, logOffset: 72 } as const;

/** A GUID's on-disk bytes ([MS-VHDX] 2.1: the first three fields little-endian). */
export function guidBytes(text: string): Uint8Array {
  const hex = text.replace(/-/g, '');
  const raw = Uint8Array.from({ length: 16 }, (_, index) => Number.parseInt(hex.slice(index * 2, index * 2 + 2), 16));
  return Uint8Array.from([raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], ...raw.subarray(8)] as number[]);
}

export const BAT_REGION = guidBytes('2DC27766-F623-4200-9D64-115E9BFD4A08');
export const METADATA_REGION = guidBytes('8B7CA206-4790-4B9A-B8FE-575F050F886E');
export const FILE_PARAMETERS = guidBytes('CAA16737-FA36-4D43-B3B6-33F0AA44E76B');
export const VIRTUAL_DISK_SIZE = guidBytes('2FA54224-CD1B-4876-B211-5DBED83BF4B8');
export const LOGICAL_SECTOR_SIZE = guidBytes('8141BF1D-A96F-4709-BA47-F233A8FAAB5F');
export const PARENT_LOCATOR = guidBytes('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C');

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}

/** Sets the CRC-32C of the 4 KiB header or 64 KiB region table at `at`. */
export function fixVhdxCrc(bytes: Uint8Array, at: number, length: number): void {
  const part = bytes.subarray(at, at + length);
  setU32LE(part, 4, 0);
  setU32LE(part, 4, crc32c(part));
}

export function fixVhdxHeaders(bytes: Uint8Array): void {
  for (const at of VHDX_HEADERS) fixVhdxCrc(bytes, at, 4096);
}

export function fixVhdxRegionTables(bytes: Uint8Array): void {
  for (const at of VHDX_REGION_TABLES) fixVhdxCrc(bytes, at, 64 * 1024);
}

/** File offset of the region table entry (in the first table) for `guid`. */
export function vhdxRegionEntry(bytes: Uint8Array, guid: Uint8Array): number {
  const table = VHDX_REGION_TABLES[0];
  const count = getU32LE(bytes, table + 8);
  for (let index = 0; index < count; index++) {
    const entry = table + 16 + index * 32;
    if (sameBytes(bytes.subarray(entry, entry + 16), guid)) return entry;
  }
  throw new Error('region not found');
}

export function vhdxRegionOffset(bytes: Uint8Array, guid: Uint8Array): number {
  return Number(getU64LE(bytes, vhdxRegionEntry(bytes, guid) + 16));
}

/** File offset of the metadata table entry for item `guid` (its offset field is at +16, length at +20). */
export function vhdxMetadataEntry(bytes: Uint8Array, guid: Uint8Array): number {
  const metadata = vhdxRegionOffset(bytes, METADATA_REGION);
  const count = view(bytes).getUint16(metadata + 10, true);
  for (let index = 0; index < count; index++) {
    const entry = metadata + 32 + index * 32;
    if (sameBytes(bytes.subarray(entry, entry + 16), guid)) return entry;
  }
  throw new Error('metadata item not found');
}

/** File offset of metadata item `guid`'s data. */
export function vhdxMetadataItem(bytes: Uint8Array, guid: Uint8Array): number {
  return vhdxRegionOffset(bytes, METADATA_REGION) + getU32LE(bytes, vhdxMetadataEntry(bytes, guid) + 16);
}

/** File offset of BAT entry `index`. */
export function vhdxBatEntry(bytes: Uint8Array, index: number): number {
  return vhdxRegionOffset(bytes, BAT_REGION) + index * 8;
}

/** A BAT entry of `state` at file offset `megabytes` MiB. */
export function vhdxBatValue(state: number, megabytes: bigint): bigint {
  return (megabytes << 20n) | BigInt(state);
}
