// SPDX-License-Identifier: MIT
/**
 * Recognizes and validates a .vhd or .vhdx through a read callback (pure: the caller does the
 * I/O and adds the file name to errors). `parseContainer` keeps the decoded structures for the
 * disk-layout reader (./disk-layout.ts); `inspectContainer` describes them for `inspect`.
 *
 * Specs: "Virtual Hard Disk Image Format Specification" v1.0 (Microsoft, 2006) for VHD (./vhd.ts);
 * [MS-VHDX] v20180912 / "VHDX Format Specification v1.00" (Microsoft, 2012) for VHDX (./vhdx/).
 *
 * Validation is strict: every checksum (VHD footer and its copy, dynamic header; both VHDX
 * headers and both region tables) must be right. The spec lets a VHDX reader fall back to the
 * other header or table copy; an inspector should instead say that a copy is damaged.
 */
import { SynthvhdError } from '../errors/synthvhd-error.js';
import { getAscii, isPowerOfTwo, viewOf } from './binary.js';
import { guidToString, isZeroGuid } from './guid.js';
import {
  VHD_DISK_TYPE_DIFFERENCING,
  VHD_DISK_TYPE_DYNAMIC,
  VHD_DISK_TYPE_FIXED,
  VHD_DYNAMIC_HEADER_SIZE,
  VHD_FIXED_DATA_OFFSET,
  VHD_FOOTER_SIZE,
  VHD_BAT_UNUSED,
  VHD_SECTOR_SIZE,
  type VhdDynamicHeader,
  type VhdFooter,
  decodeVhdDynamicHeader,
  decodeVhdFooter,
  isVhdFooter,
  vhdBitmapSize,
} from './vhd.js';
import { type VhdxBatGeometry, readVhdxBatEntry, vhdxBatGeometry } from './vhdx/bat.js';
import {
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_UNDEFINED,
  PAYLOAD_BLOCK_UNMAPPED,
  PAYLOAD_BLOCK_ZERO,
  SB_BLOCK_NOT_PRESENT,
  SB_BLOCK_PRESENT,
  VHDX_ALIGNMENT,
  VHDX_FILE_ID_SIZE,
  VHDX_HEADER1_OFFSET,
  VHDX_HEADER2_OFFSET,
  VHDX_HEADER_SECTION_SIZE,
  VHDX_HEADER_SIZE,
  VHDX_METADATA_TABLE_SIZE,
  VHDX_REGION_TABLE1_OFFSET,
  VHDX_REGION_TABLE2_OFFSET,
  VHDX_REGION_TABLE_SIZE,
  VHDX_SECTOR_BITMAP_BLOCK_SIZE,
} from './vhdx/constants.js';
import { decodeVhdxFileIdentifier, isVhdxFileIdentifier } from './vhdx/file-identifier.js';
import { type VhdxHeader, decodeVhdxHeader } from './vhdx/header.js';
import { type VhdxMetadataEntry, type VhdxStandardMetadata, decodeVhdxMetadataTable, decodeVhdxStandardMetadata } from './vhdx/metadata.js';
import { decodeVhdxParentLocator } from './vhdx/parent-locator.js';
import { type VhdxRegion, decodeVhdxRegionTable, findVhdxRegions } from './vhdx/region-table.js';

/** Reads `length` bytes at `position` of the file being inspected. */
export type ReadFunction = (position: number, length: number) => Promise<Uint8Array>;

export interface ContainerInfo {
  readonly format: 'vhd' | 'vhdx';
  readonly type: 'fixed' | 'dynamic' | 'differencing';
  /** Bytes of the virtual disk (VHD Current Size, VHDX VirtualDiskSize). */
  readonly virtualSize: number;
  /** Dynamic/differencing block size (VHD dynamic header, VHDX File Parameters). */
  readonly blockSize?: number;
  readonly logicalSectorSize: number;
  /** VHDX only (MS-VHDX 2.6.2.5). */
  readonly physicalSectorSize?: number;
  /** VHD footer Unique Id, lowercase, RFC 4122 order. */
  readonly uniqueId?: string;
  /** VHDX current header's DataWriteGuid (what differencing children link to), lowercase. */
  readonly dataWriteGuid?: string;
  readonly fileWriteGuid?: string;
  /** VHDX Page 83 Data (virtual disk id), lowercase. */
  readonly page83?: string;
  readonly parent?: {
    /** VHDX `parent_linkage` as stored; VHD: the parent's Unique Id, lowercase. */
    readonly linkage?: string;
    /** VHDX locator keys (`relative_path`, ...); VHD platform codes (`W2ru`, ...) and `ParentUnicodeName`. */
    readonly paths: Record<string, string>;
  };
  /** VHD: creator application, version and host; VHDX: the File Type Identifier's Creator. */
  readonly creator?: string;
}

/**
 * A validated .vhd: what the disk-layout reader (./disk-layout.ts) and `inspect` need. Every
 * structure was checked (checksums, and every allocated BAT entry lies inside the file).
 */
export interface ParsedVhd {
  readonly format: 'vhd';
  readonly type: 'fixed' | 'dynamic' | 'differencing';
  readonly fileSize: number;
  readonly footer: VhdFooter;
  /** Dynamic and differencing disks only. */
  readonly dynamicHeader: VhdDynamicHeader | undefined;
  /** Dynamic and differencing disks: the BAT, MaxTableEntries u32 big-endian sector numbers. */
  readonly bat: Uint8Array;
  /** Differencing only: parent locator data by platform code (`W2ru`, `W2ku`, ...) and `ParentUnicodeName`. */
  readonly parentPaths: Readonly<Record<string, string>>;
}

/** A validated .vhdx (headers, region tables, metadata and BAT all checked). */
export interface ParsedVhdx {
  readonly format: 'vhdx';
  readonly type: 'fixed' | 'dynamic' | 'differencing';
  readonly fileSize: number;
  readonly creator: string;
  /** The current header (MS-VHDX 2.2.2: the valid one with the greater SequenceNumber). */
  readonly header: VhdxHeader;
  readonly metadata: VhdxStandardMetadata;
  readonly geometry: VhdxBatGeometry;
  /** The BAT's `geometry.entryCount` entries (MS-VHDX 2.5). */
  readonly bat: Uint8Array;
  /** Differencing only: the VHDX parent locator's key/value pairs (MS-VHDX 2.6.2.6.3). */
  readonly parentLocator: ReadonlyMap<string, string> | undefined;
  /** Where the structures lie, for the structure map (./structure-map.ts): the current header's slot, */
  readonly currentHeaderOffset: number;
  /** the BAT and metadata regions (MS-VHDX 2.2.3.2), */
  readonly batRegion: VhdxRegion;
  readonly metadataRegion: VhdxRegion;
  /** and the metadata table's entries (MS-VHDX 2.6.1.2). */
  readonly metadataEntries: readonly VhdxMetadataEntry[];
}

export type ParsedContainer = ParsedVhd | ParsedVhdx;

/** Recognizes and validates a .vhd or .vhdx; see ParsedVhd / ParsedVhdx. */
export async function parseContainer(read: ReadFunction, size: number): Promise<ParsedContainer> {
  const reader = new Reader(read, size);
  if (size >= VHDX_FILE_ID_SIZE) {
    const start = await reader.read(0, VHDX_FILE_ID_SIZE, 'file identifier');
    if (isVhdxFileIdentifier(start)) return parseVhdx(reader, start);
  }
  if (size >= VHD_FOOTER_SIZE) {
    const footer = await reader.read(size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, 'VHD footer');
    if (isVhdFooter(footer)) return parseVhd(reader, footer);
    const start = await reader.read(0, VHD_FOOTER_SIZE, 'VHD footer copy');
    if (isVhdFooter(start)) {
      throw new SynthvhdError('E_CONTAINER', 'VHD footer copy at offset 0, but no footer at the end of the file (truncated?)');
    }
  }
  throw new SynthvhdError(
    'E_CONTAINER',
    'not a VHD or VHDX file (no "vhdxfile" signature at offset 0, no "conectix" footer at the end)',
  );
}

export async function inspectContainer(read: ReadFunction, size: number): Promise<ContainerInfo> {
  return describeContainer(await parseContainer(read, size));
}

/** What a parsed container says about itself (the `inspect` command's answer). */
export function describeContainer(parsed: ParsedContainer): ContainerInfo {
  return parsed.format === 'vhd' ? describeVhd(parsed) : describeVhdx(parsed);
}

class Reader {
  constructor(
    private readonly readCallback: ReadFunction,
    readonly size: number,
  ) {}

  async read(position: number, length: number, what: string): Promise<Uint8Array> {
    if (position < 0 || position + length > this.size) {
      throw new SynthvhdError('E_CONTAINER', `${what} at ${position} (+${length}) is beyond the end of the file (${this.size} bytes)`);
    }
    const bytes = await this.readCallback(position, length);
    if (bytes.length < length) {
      throw new SynthvhdError('E_CONTAINER', `${what}: short read at ${position} (${bytes.length} of ${length} bytes)`);
    }
    return bytes.subarray(0, length);
  }
}

// ---- VHD ----

async function parseVhd(reader: Reader, footerBytes: Uint8Array): Promise<ParsedVhd> {
  const footerOffset = reader.size - VHD_FOOTER_SIZE;
  const footer = decodeVhdFooter(footerBytes, `VHD footer (offset ${footerOffset})`);
  const base = { format: 'vhd' as const, fileSize: reader.size, footer, parentPaths: {} };
  if (footer.currentSize % VHD_SECTOR_SIZE !== 0) {
    throw new SynthvhdError('E_CONTAINER', `VHD footer: Current Size ${footer.currentSize} is not a multiple of 512`);
  }
  if (footer.diskType === VHD_DISK_TYPE_FIXED) {
    if (footerOffset < footer.currentSize) {
      throw new SynthvhdError(
        'E_CONTAINER',
        `fixed VHD: footer says ${footer.currentSize} bytes but the file holds ${footerOffset} bytes of disk (truncated?)`,
      );
    }
    return { ...base, type: 'fixed', dynamicHeader: undefined, bat: new Uint8Array(0) };
  }
  if (footer.diskType !== VHD_DISK_TYPE_DYNAMIC && footer.diskType !== VHD_DISK_TYPE_DIFFERENCING) {
    throw new SynthvhdError('E_CONTAINER', `VHD footer: unknown Disk Type ${footer.diskType}`);
  }
  // "Hard Disk Footer Format": dynamic and differencing disks keep a copy of the footer at offset 0.
  decodeVhdFooter(await reader.read(0, VHD_FOOTER_SIZE, 'VHD footer copy'), 'VHD footer copy (offset 0)');
  if (footer.dataOffset === VHD_FIXED_DATA_OFFSET || footer.dataOffset > BigInt(reader.size)) {
    throw new SynthvhdError('E_CONTAINER', `VHD footer: Data Offset ${footer.dataOffset} does not point into the file`);
  }
  const headerOffset = Number(footer.dataOffset);
  const header = decodeVhdDynamicHeader(
    await reader.read(headerOffset, VHD_DYNAMIC_HEADER_SIZE, 'VHD dynamic header'),
    `VHD dynamic header (offset ${headerOffset})`,
  );
  const bat = await readVhdBat(reader, footer, header);
  const type = footer.diskType === VHD_DISK_TYPE_DYNAMIC ? 'dynamic' : 'differencing';
  if (type === 'dynamic') return { ...base, type, dynamicHeader: header, bat };

  const parentPaths: Record<string, string> = {};
  if (header.parentUnicodeName !== '') parentPaths.ParentUnicodeName = header.parentUnicodeName;
  for (const locator of header.parentLocators) {
    if (locator.dataLength === 0) continue;
    const data = await reader.read(locator.dataOffset, locator.dataLength, `VHD parent locator ${locator.platformCode}`);
    parentPaths[locator.platformCode.trim()] = decodeVhdLocatorData(locator.platformCode, data);
  }
  return { ...base, type, dynamicHeader: header, bat, parentPaths };
}

/**
 * "Dynamic Disk Header Format" / "Block Allocation Table": Max Table Entries u32 big-endian
 * sector offsets of each block's bitmap, 0xFFFFFFFF when the block is not allocated. Every
 * allocated block (bitmap + data) must lie before the footer at the end of the file.
 */
async function readVhdBat(reader: Reader, footer: VhdFooter, header: VhdDynamicHeader): Promise<Uint8Array> {
  const { blockSize, maxTableEntries, tableOffset } = header;
  if (!isPowerOfTwo(blockSize) || blockSize < VHD_SECTOR_SIZE) {
    throw new SynthvhdError('E_CONTAINER', `VHD dynamic header: Block Size ${blockSize} is not a power of two`);
  }
  const needed = Math.ceil(footer.currentSize / blockSize);
  if (maxTableEntries < needed) {
    throw new SynthvhdError('E_CONTAINER', `VHD dynamic header: Max Table Entries ${maxTableEntries} < ${needed} blocks of the ${footer.currentSize}-byte disk`);
  }
  const bat = await reader.read(tableOffset, needed * 4, 'VHD block allocation table');
  const view = viewOf(bat);
  const blockEnd = vhdBitmapSize(blockSize) + blockSize;
  const dataEnd = reader.size - VHD_FOOTER_SIZE;
  for (let index = 0; index < needed; index++) {
    const entry = view.getUint32(index * 4, false);
    if (entry === VHD_BAT_UNUSED) continue;
    if (entry * VHD_SECTOR_SIZE + blockEnd > dataEnd) {
      throw new SynthvhdError(
        'E_CONTAINER',
        `VHD BAT entry ${index}: block at ${entry * VHD_SECTOR_SIZE} ends beyond the data of the file (${dataEnd} bytes before the footer; truncated?)`,
      );
    }
  }
  return bat;
}

function describeVhd(parsed: ParsedVhd): ContainerInfo {
  const { footer } = parsed;
  const common = {
    format: 'vhd' as const,
    virtualSize: footer.currentSize,
    logicalSectorSize: VHD_SECTOR_SIZE,
    uniqueId: guidToString(footer.uniqueId, 'rfc'),
    creator: vhdCreator(footer),
  };
  if (parsed.type === 'fixed' || parsed.dynamicHeader === undefined) return { ...common, type: 'fixed' };
  const blockSize = parsed.dynamicHeader.blockSize;
  if (parsed.type === 'dynamic') return { ...common, type: 'dynamic', blockSize };
  return {
    ...common,
    type: 'differencing',
    blockSize,
    parent: { linkage: guidToString(parsed.dynamicHeader.parentUniqueId, 'rfc'), paths: { ...parsed.parentPaths } },
  };
}

function vhdCreator(footer: VhdFooter): string {
  const application = stripTrailing(footer.creatorApplication, ' \u0000');
  const version = `${footer.creatorVersion >>> 16}.${footer.creatorVersion & 0xffff}`;
  return `${application} ${version} on ${stripTrailing(footer.creatorHostOs, ' \u0000')}`;
}

/** `text` without trailing characters from `characters` (NUL padding, space padding). */
function stripTrailing(text: string, characters: string): string {
  let end = text.length;
  while (end > 0 && characters.includes(text.charAt(end - 1))) end--;
  return text.slice(0, end);
}

/** Parent locator data by platform code ("Dynamic Disk Header Format", Parent Locator Entries). */
function decodeVhdLocatorData(platformCode: string, data: Uint8Array): string {
  switch (platformCode) {
    case 'W2ru': // Windows relative path, UTF-16LE
    case 'W2ku': // Windows absolute path, UTF-16LE
      return stripTrailing(Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf16le'), '\u0000');
    case 'MacX': // file URL, UTF-8
      return stripTrailing(Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf8'), '\u0000');
    default: // 'Wi2r', 'Wi2k' (deprecated ANSI), 'Mac ' (an alias blob): shown as Latin-1
      return stripTrailing(getAscii(data, 0, data.length), '\u0000');
  }
}

// ---- VHDX ----

async function parseVhdx(reader: Reader, fileIdBytes: Uint8Array): Promise<ParsedVhdx> {
  const { creator } = decodeVhdxFileIdentifier(fileIdBytes, 'VHDX file identifier');
  const header1 = decodeVhdxHeader(
    await reader.read(VHDX_HEADER1_OFFSET, VHDX_HEADER_SIZE, 'VHDX header 1'),
    `VHDX header 1 (offset ${VHDX_HEADER1_OFFSET})`,
  );
  const header2 = decodeVhdxHeader(
    await reader.read(VHDX_HEADER2_OFFSET, VHDX_HEADER_SIZE, 'VHDX header 2'),
    `VHDX header 2 (offset ${VHDX_HEADER2_OFFSET})`,
  );
  const header = currentHeader(header1, header2);
  checkLog(header, reader.size);

  const regions1 = decodeVhdxRegionTable(
    await reader.read(VHDX_REGION_TABLE1_OFFSET, VHDX_REGION_TABLE_SIZE, 'VHDX region table 1'),
    `VHDX region table 1 (offset ${VHDX_REGION_TABLE1_OFFSET})`,
  );
  decodeVhdxRegionTable(
    await reader.read(VHDX_REGION_TABLE2_OFFSET, VHDX_REGION_TABLE_SIZE, 'VHDX region table 2'),
    `VHDX region table 2 (offset ${VHDX_REGION_TABLE2_OFFSET})`,
  );
  const { bat, metadata: metadataRegion } = findVhdxRegions(regions1, 'VHDX region table 1');
  for (const [name, region] of [['BAT', bat], ['metadata', metadataRegion]] as const) {
    if (region.fileOffset + region.length > reader.size || region.length === 0) {
      throw new SynthvhdError(
        'E_CONTAINER',
        `VHDX ${name} region at ${region.fileOffset} (+${region.length}) is outside the file (${reader.size} bytes)`,
      );
    }
  }

  const entries = decodeVhdxMetadataTable(
    await reader.read(metadataRegion.fileOffset, Math.min(VHDX_METADATA_TABLE_SIZE, metadataRegion.length), 'VHDX metadata table'),
    metadataRegion.length,
    `VHDX metadata table (offset ${metadataRegion.fileOffset})`,
  );
  const itemBytes = new Map<VhdxMetadataEntry, Uint8Array>();
  for (const entry of entries) {
    itemBytes.set(entry, await reader.read(metadataRegion.fileOffset + entry.offset, entry.length, 'VHDX metadata item'));
  }
  const metadata = decodeVhdxStandardMetadata(entries, (entry) => itemBytes.get(entry) ?? new Uint8Array(0), 'VHDX metadata');
  const { fileParameters } = metadata;
  const type = fileParameters.hasParent ? 'differencing' : fileParameters.leaveBlockAllocated ? 'fixed' : 'dynamic';

  const { geometry, bytes: batBytes } = await checkVhdxBat(
    reader, bat, [metadataRegion], metadata.virtualDiskSize, fileParameters.blockSize, metadata.logicalSectorSize, type,
  );
  const parentLocator = metadata.parentLocator === undefined ? undefined : decodeVhdxParentLocator(metadata.parentLocator, 'VHDX parent locator');
  if (type === 'differencing' && parentLocator?.get('parent_linkage') === undefined) {
    // MS-VHDX 2.6.2.6.3: "The parent_linkage entry MUST be present".
    throw new SynthvhdError('E_CONTAINER', 'VHDX parent locator: no parent_linkage entry');
  }
  return {
    format: 'vhdx', type, fileSize: reader.size, creator, header, metadata, geometry, bat: batBytes, parentLocator,
    currentHeaderOffset: header === header1 ? VHDX_HEADER1_OFFSET : VHDX_HEADER2_OFFSET,
    batRegion: bat,
    metadataRegion,
    metadataEntries: entries,
  };
}

function describeVhdx(parsed: ParsedVhdx): ContainerInfo {
  const { header, metadata, creator } = parsed;
  const info: ContainerInfo = {
    format: 'vhdx',
    type: parsed.type,
    virtualSize: metadata.virtualDiskSize,
    blockSize: metadata.fileParameters.blockSize,
    logicalSectorSize: metadata.logicalSectorSize,
    physicalSectorSize: metadata.physicalSectorSize,
    dataWriteGuid: guidToString(header.dataWriteGuid, 'ms'),
    fileWriteGuid: guidToString(header.fileWriteGuid, 'ms'),
    page83: guidToString(metadata.page83, 'ms'),
    ...(creator === '' ? {} : { creator }),
  };
  const locator = parsed.parentLocator;
  if (locator === undefined) return info;
  const paths: Record<string, string> = {};
  for (const [key, value] of locator) if (!key.startsWith('parent_linkage')) paths[key] = value;
  const linkage = locator.get('parent_linkage');
  return { ...info, parent: linkage === undefined ? { paths } : { linkage, paths } };
}

/** MS-VHDX 2.2.2: the valid header with the greater SequenceNumber is current. */
function currentHeader(header1: VhdxHeader, header2: VhdxHeader): VhdxHeader {
  if (header1.sequenceNumber === header2.sequenceNumber) {
    // qemu accepts equal numbers only for identical headers (the Disk2VHD case); so do we.
    const same =
      header1.fileWriteGuid.every((byte, index) => byte === header2.fileWriteGuid[index]) &&
      header1.dataWriteGuid.every((byte, index) => byte === header2.dataWriteGuid[index]) &&
      header1.logGuid.every((byte, index) => byte === header2.logGuid[index]);
    if (!same) {
      throw new SynthvhdError(
        'E_CONTAINER',
        `VHDX headers: both have SequenceNumber ${header1.sequenceNumber.toString()} but differ, so neither is current`,
      );
    }
  }
  return header1.sequenceNumber > header2.sequenceNumber ? header1 : header2;
}

/** MS-VHDX 2.2.2: LogOffset and LogLength are 1 MiB multiples; qemu checks this even without a log. */
function checkLog(header: VhdxHeader, fileSize: number): void {
  if (header.logOffset % VHDX_ALIGNMENT !== 0 || header.logOffset < VHDX_HEADER_SECTION_SIZE || header.logLength % VHDX_ALIGNMENT !== 0) {
    throw new SynthvhdError('E_CONTAINER', `VHDX header: log at ${header.logOffset} (+${header.logLength}) is not 1 MiB-aligned`);
  }
  if (!isZeroGuid(header.logGuid) && header.logOffset + header.logLength > fileSize) {
    throw new SynthvhdError('E_CONTAINER', `VHDX header: the log at ${header.logOffset} (+${header.logLength}) is outside the file`);
  }
}

/**
 * MS-VHDX 2.5.1: every payload entry has a state valid for the disk type and, when allocated, a
 * 1 MiB-aligned block inside the file that does not overlap the header section or a region.
 */
async function checkVhdxBat(
  reader: Reader,
  batRegion: VhdxRegion,
  otherRegions: readonly VhdxRegion[],
  virtualDiskSize: number,
  blockSize: number,
  logicalSectorSize: number,
  type: ContainerInfo['type'],
): Promise<{ geometry: VhdxBatGeometry; bytes: Uint8Array }> {
  const differencing = type === 'differencing';
  const geometry = vhdxBatGeometry(virtualDiskSize, blockSize, logicalSectorSize, differencing);
  if (geometry.entryCount * 8 > batRegion.length) {
    throw new SynthvhdError(
      'E_CONTAINER',
      `VHDX BAT region holds ${batRegion.length / 8} entries, ${geometry.entryCount} are needed for ${virtualDiskSize} bytes`,
    );
  }
  const bat = await reader.read(batRegion.fileOffset, geometry.entryCount * 8, 'VHDX BAT');
  const reserved = [{ start: 0, end: VHDX_HEADER_SECTION_SIZE }, ...[batRegion, ...otherRegions].map((r) => ({ start: r.fileOffset, end: r.fileOffset + r.length }))];
  const payloadStates = differencing
    ? [PAYLOAD_BLOCK_NOT_PRESENT, PAYLOAD_BLOCK_UNDEFINED, PAYLOAD_BLOCK_ZERO, PAYLOAD_BLOCK_UNMAPPED, PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT]
    : [PAYLOAD_BLOCK_NOT_PRESENT, PAYLOAD_BLOCK_UNDEFINED, PAYLOAD_BLOCK_ZERO, PAYLOAD_BLOCK_UNMAPPED, PAYLOAD_BLOCK_FULLY_PRESENT];
  const sectorBitmapStates = differencing ? [SB_BLOCK_NOT_PRESENT, SB_BLOCK_PRESENT] : [SB_BLOCK_NOT_PRESENT];
  for (let index = 0; index < geometry.entryCount; index++) {
    const isSectorBitmap = index % (geometry.chunkRatio + 1) === geometry.chunkRatio;
    const entry = readVhdxBatEntry(bat, index);
    const what = isSectorBitmap ? `sector bitmap entry ${index}` : `payload entry ${index}`;
    if (!(isSectorBitmap ? sectorBitmapStates : payloadStates).includes(entry.state)) {
      throw new SynthvhdError('E_CONTAINER', `VHDX BAT ${what}: state ${entry.state} is not valid in a ${type} VHDX`);
    }
    const allocated = isSectorBitmap
      ? entry.state === SB_BLOCK_PRESENT
      : entry.state === PAYLOAD_BLOCK_FULLY_PRESENT || entry.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT;
    if (!allocated) continue;
    // A payload block only needs to hold the disk's bytes: qemu writes the last block of a fixed
    // VHDX only up to the disk's end (docs/containers.md §8), and reads it fine.
    const block = index - Math.floor(index / (geometry.chunkRatio + 1));
    const end = entry.fileOffset + (isSectorBitmap ? VHDX_SECTOR_BITMAP_BLOCK_SIZE : Math.min(blockSize, virtualDiskSize - block * blockSize));
    if (end > reader.size) {
      throw new SynthvhdError('E_CONTAINER', `VHDX BAT ${what}: block at ${entry.fileOffset} ends beyond the file (${reader.size} bytes)`);
    }
    if (reserved.some((range) => entry.fileOffset < range.end && end > range.start)) {
      throw new SynthvhdError('E_CONTAINER', `VHDX BAT ${what}: block at ${entry.fileOffset} overlaps the headers or a region`);
    }
  }
  return { geometry, bytes: bat };
}
