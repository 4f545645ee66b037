// SPDX-License-Identifier: MIT
/**
 * Parses and validates a .vhdx ([MS-VHDX] v20180912; structures in ./vhdx/): both headers and
 * region tables, the log's placement, the metadata, every BAT entry and the parent locator.
 * Strict: the spec lets a reader fall back to the other header or table copy; an inspector
 * should instead say that a copy is damaged.
 */
import { SynthvhdError } from '../errors/synthvhd-error.js';
import { guidEquals, isZeroGuid } from './guid.js';
import type { ContainerReader, ParsedVhdx } from './parsed-container.js';
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
  VHDX_FILE_PARAMETERS_GUID,
  VHDX_HEADER1_OFFSET,
  VHDX_HEADER2_OFFSET,
  VHDX_HEADER_SECTION_SIZE,
  VHDX_HEADER_SIZE,
  VHDX_METADATA_TABLE_SIZE,
  VHDX_REGION_TABLE1_OFFSET,
  VHDX_REGION_TABLE2_OFFSET,
  VHDX_REGION_TABLE_SIZE,
  VHDX_LOGICAL_SECTOR_SIZE_GUID,
  VHDX_PAGE83_DATA_GUID,
  VHDX_PARENT_LOCATOR_GUID,
  VHDX_PHYSICAL_SECTOR_SIZE_GUID,
  VHDX_SECTOR_BITMAP_BLOCK_SIZE,
  VHDX_VIRTUAL_DISK_SIZE_GUID,
} from './vhdx/constants.js';
import { decodeVhdxFileIdentifier } from './vhdx/file-identifier.js';
import { type VhdxHeader, decodeVhdxHeader } from './vhdx/header.js';
import { type VhdxMetadataEntry, decodeVhdxMetadataTable, decodeVhdxStandardMetadata } from './vhdx/metadata.js';
import { decodeVhdxParentLocator } from './vhdx/parent-locator.js';
import { type VhdxRegion, decodeVhdxRegionTable, findVhdxRegions } from './vhdx/region-table.js';

/** MS-VHDX 2.6.2: the metadata items a reader uses. */
const VHDX_KNOWN_METADATA_ITEMS = [
  VHDX_FILE_PARAMETERS_GUID,
  VHDX_VIRTUAL_DISK_SIZE_GUID,
  VHDX_PAGE83_DATA_GUID,
  VHDX_LOGICAL_SECTOR_SIZE_GUID,
  VHDX_PHYSICAL_SECTOR_SIZE_GUID,
  VHDX_PARENT_LOCATOR_GUID,
];

/** Parses the .vhdx whose first 64 KiB (the file identifier) are `fileIdBytes`. */
/** How a VHDX may end, beyond what MS-VHDX allows. */
export interface VhdxParseOptions {
  /**
   * The file ends at its last write, possibly inside its last payload block: urBackup's
   * compressed container (a .vhdxz) is as long as what was written into it, and a child's last
   * block is allocated at the end and written only where sectors changed
   * (docs/urbackup-image-formats.md §2). That block's bytes past the end read as zeros.
   */
  readonly endsAtLastWrite?: boolean;
}

export async function parseVhdx(reader: ContainerReader, fileIdBytes: Uint8Array, options: VhdxParseOptions = {}): Promise<ParsedVhdx> {
  const { creator, header, header1 } = await readVhdxHeaders(reader, fileIdBytes);

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
  // Only the items decodeVhdxStandardMetadata reads (the first system entry of each known id):
  // up to 2047 entries of up to 1 MiB each may all name the same bytes, and reading every one
  // would be 2 GiB from a 3 MiB file.
  const itemBytes = new Map<VhdxMetadataEntry, Uint8Array>();
  for (const id of VHDX_KNOWN_METADATA_ITEMS) {
    const entry = entries.find((candidate) => !candidate.isUser && guidEquals(candidate.itemId, id));
    if (entry === undefined) continue;
    itemBytes.set(entry, await reader.read(metadataRegion.fileOffset + entry.offset, entry.length, 'VHDX metadata item'));
  }
  const metadata = decodeVhdxStandardMetadata(entries, (entry) => itemBytes.get(entry) ?? new Uint8Array(0), 'VHDX metadata');
  const { fileParameters } = metadata;
  const type = fileParameters.hasParent ? 'differencing' : fileParameters.leaveBlockAllocated ? 'fixed' : 'dynamic';

  const { geometry, bytes: batBytes } = await checkVhdxBat(
    reader, bat, [metadataRegion], metadata.virtualDiskSize, fileParameters.blockSize, metadata.logicalSectorSize, type, options,
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

/**
 * The file identifier and both headers, and which header is current (MS-VHDX 2.1, 2.2): enough to
 * learn a file's DataWriteGuid (what a differencing child links to) before its regions, metadata
 * and BAT are read.
 */
export async function readVhdxHeaders(
  reader: ContainerReader,
  fileIdBytes: Uint8Array,
): Promise<{ creator: string; header: VhdxHeader; header1: VhdxHeader }> {
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
  return { creator, header, header1 };
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
  reader: ContainerReader,
  batRegion: VhdxRegion,
  otherRegions: readonly VhdxRegion[],
  virtualDiskSize: number,
  blockSize: number,
  logicalSectorSize: number,
  type: ParsedVhdx['type'],
  options: VhdxParseOptions,
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
    const block = index - Math.floor(index / (geometry.chunkRatio + 1));
    // A differencing BAT has entries for whole chunks (MS-VHDX 2.5: SectorBitmapBlocksCount x
    // (ChunkRatio + 1)); those of payload blocks past the disk's end are never read, and urBackup
    // leaves whatever its buffer held in the BAT pages it never changed (VHDXFile::syncInt).
    if (!isSectorBitmap && block >= geometry.dataBlockCount) continue;
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
    const end = entry.fileOffset + (isSectorBitmap ? VHDX_SECTOR_BITMAP_BLOCK_SIZE : Math.min(blockSize, virtualDiskSize - block * blockSize));
    const startsInside = entry.fileOffset < reader.size;
    if (end > reader.size && !(options.endsAtLastWrite === true && !isSectorBitmap && startsInside)) {
      throw new SynthvhdError('E_CONTAINER', `VHDX BAT ${what}: block at ${entry.fileOffset} ends beyond the file (${reader.size} bytes)`);
    }
    if (reserved.some((range) => entry.fileOffset < range.end && end > range.start)) {
      throw new SynthvhdError('E_CONTAINER', `VHDX BAT ${what}: block at ${entry.fileOffset} overlaps the headers or a region`);
    }
  }
  return { geometry, bytes: bat };
}
