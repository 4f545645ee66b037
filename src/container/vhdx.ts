// SPDX-License-Identifier: MIT
/**
 * A dynamic VHDX around a disk, as a Layout.
 *
 * Spec: [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format" v20180912
 * (https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx/), the successor of
 * the "VHDX Format Specification v1.00" (Microsoft, 2012-08-25). Structure encoders live in
 * ./vhdx/ (one structure per file); the layout is docs/containers.md §3.1:
 *
 *   0        File Type Identifier (creator "synthvhd")                     MS-VHDX 2.2.1
 *   64 KiB   Header 1, SequenceNumber 1                                    MS-VHDX 2.2.2
 *   128 KiB  Header 2, SequenceNumber 2 (current), same GUIDs              MS-VHDX 2.2.2
 *   192 KiB  Region table 1; 256 KiB region table 2 (BAT, metadata)        MS-VHDX 2.2.3
 *   1 MiB    Log, 1 MiB of zeros (LogGuid zero: nothing to replay)         MS-VHDX 2.3
 *   2 MiB    BAT, roundUp(entries * 8, 1 MiB)                              MS-VHDX 2.5
 *   then     Metadata region, 1 MiB: table, then items at +64 KiB          MS-VHDX 2.6
 *   then     payload blocks in disk order, 1 MiB-aligned, full BlockSize   MS-VHDX 2.4.1
 *
 * A block whose disk range is all `zero` extents is PAYLOAD_BLOCK_ZERO and takes no room; every
 * other block is FULLY_PRESENT and its content is the disk's own extents (sliceLayout), so `file`
 * extents of the disk stay `file` extents of the container, with the disk's descriptions (`C: .raw`,
 * `backup GPT header`; docs/architecture.md §10). Everything is derived from the disk
 * identity: the same disk always gives the same bytes (docs/containers.md §5).
 */
import type { DiskImage } from '../disk/disk-image.js';
import { SynthvhdError } from '../errors/synthvhd-error.js';
import { type Extent, type Layout, sliceLayout } from '../extents/extent.js';
import { LayoutBuilder } from '../extents/layout-builder.js';
import { describeSize, isPowerOfTwo } from './binary.js';
import { ZERO_GUID, deriveGuid } from './guid.js';
import { type VhdxBatGeometry, vhdxBatGeometry, payloadBatIndex, writeVhdxBatEntry } from './vhdx/bat.js';
import {
  MIB,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_ZERO,
  TIB,
  VHDX_BAT_OFFSET,
  VHDX_BAT_REGION_GUID,
  VHDX_BAT_ENTRY_SIZE,
  VHDX_FILE_ID_OFFSET,
  VHDX_HEADER1_OFFSET,
  VHDX_HEADER2_OFFSET,
  VHDX_HEADER_SECTION_SIZE,
  VHDX_HEADER_VERSION,
  VHDX_LOG_LENGTH,
  VHDX_LOG_OFFSET,
  VHDX_LOG_VERSION,
  VHDX_MAX_BLOCK_SIZE,
  VHDX_MAX_VIRTUAL_DISK_SIZE,
  VHDX_METADATA_ITEMS_OFFSET,
  VHDX_METADATA_REGION_GUID,
  VHDX_METADATA_REGION_LENGTH,
  VHDX_MIN_BLOCK_SIZE,
  VHDX_REGION_TABLE1_OFFSET,
  VHDX_REGION_TABLE2_OFFSET,
  VHDX_REGION_TABLE_HEADER_SIZE,
  VHDX_REGION_ENTRY_SIZE,
} from './vhdx/constants.js';
import { encodeVhdxFileIdentifier } from './vhdx/file-identifier.js';
import { encodeVhdxHeader } from './vhdx/header.js';
import { encodeVhdxMetadata, vhdxStandardMetadataItems } from './vhdx/metadata.js';
import { encodeVhdxRegionTable } from './vhdx/region-table.js';

/** Hyper-V's default block size (docs/containers.md §3.5); `--block-size` overrides it. */
export const VHDX_DEFAULT_BLOCK_SIZE = 32 * MIB;

/** MS-VHDX 2.2.1 Creator: diagnostic text naming the writer. */
export const VHDX_CREATOR = 'synthvhd';

/**
 * Physical Sector Size of every VHDX synthvhd writes (MS-VHDX 2.6.2.5): 4096 tells the guest to
 * align its writes to 4 KiB, which suits every modern disk and file system.
 */
export const VHDX_PHYSICAL_SECTOR_SIZE = 4096;

export interface VhdxOptions {
  /** Payload block size in bytes: a power of two, 1 MiB..256 MiB (MS-VHDX 2.6.2.1). */
  readonly blockSize?: number;
  /**
   * Identities to use instead of the ones derived from the disk identity ('ms' byte order). A
   * merged image (src/blocklist/merge.ts) keeps its parent's Page 83 Data: it is the same disk.
   */
  readonly fileWriteGuid?: Uint8Array;
  readonly dataWriteGuid?: Uint8Array;
  readonly page83?: Uint8Array;
}

// Labels for deriveGuid: changing one changes every VHDX ever served (and orphans differencing
// children, which link to the DataWriteGuid): never change them.
const FILE_WRITE_GUID_LABEL = 'vhdx-file-write-guid';
const DATA_WRITE_GUID_LABEL = 'vhdx-data-write-guid';
const PAGE83_LABEL = 'vhdx-page83';

/**
 * The DataWriteGuid of the VHDX of `disk` ('ms' byte order): what a differencing child's
 * `parent_linkage` names (MS-VHDX 2.6.2.6). It depends only on the disk identity (not on the
 * block size): the disk's data is the same whatever the container layout.
 */
export function vhdxDataWriteGuid(disk: DiskImage): Uint8Array {
  return deriveGuid(disk.identity, DATA_WRITE_GUID_LABEL, 'ms');
}

/** The FileWriteGuid of the VHDX of `disk` ('ms' byte order), MS-VHDX 2.2.2. */
export function vhdxFileWriteGuid(disk: DiskImage): Uint8Array {
  return deriveGuid(disk.identity, FILE_WRITE_GUID_LABEL, 'ms');
}

/** The Page 83 Data (virtual disk id) of the VHDX of `disk` ('ms' byte order), MS-VHDX 2.6.2.3. */
export function vhdxPage83(disk: DiskImage): Uint8Array {
  return deriveGuid(disk.identity, PAGE83_LABEL, 'ms');
}

/** Fails with E_USAGE unless `blockSize` is a valid VHDX block size. */
export function checkVhdxBlockSize(blockSize: number): void {
  if (!isPowerOfTwo(blockSize) || blockSize < VHDX_MIN_BLOCK_SIZE || blockSize > VHDX_MAX_BLOCK_SIZE) {
    throw new SynthvhdError(
      'E_USAGE',
      `VHDX block size ${blockSize} is not a power of two between 1 MiB and 256 MiB (MS-VHDX 2.6.2.1)`,
    );
  }
}

/** Why `disk` cannot be served as a .vhdx, or undefined when it can. */
export function vhdxLimitReason(disk: DiskImage): string | undefined {
  const size = disk.layout.size;
  if (size === 0) return 'the disk is empty';
  if (size % disk.sectorSize !== 0) {
    return `disk size ${size} bytes is not a multiple of its ${disk.sectorSize}-byte sectors`;
  }
  if (size > VHDX_MAX_VIRTUAL_DISK_SIZE) {
    return `disk is ${size} bytes (${describeSize(size, TIB, 'TiB')}): VHDX is limited to 64 TiB`;
  }
  return undefined;
}

/** The dynamic VHDX of `disk`; fails with E_FORMAT_LIMIT when VHDX cannot express it. */
export function buildVhdxLayout(disk: DiskImage, options: VhdxOptions = {}): Layout {
  const blockSize = options.blockSize ?? VHDX_DEFAULT_BLOCK_SIZE;
  checkVhdxBlockSize(blockSize);
  const limit = vhdxLimitReason(disk);
  if (limit !== undefined) throw new SynthvhdError('E_FORMAT_LIMIT', limit);

  const diskSize = disk.layout.size;
  const geometry = vhdxBatGeometry(diskSize, blockSize, disk.sectorSize);

  // Layout first: decide each block's state and file offset (MS-VHDX 2.5.1.1). Sector bitmap
  // entries stay 0 = SB_BLOCK_NOT_PRESENT, the only valid state outside differencing (2.5.1.2).
  const bat = new Uint8Array(geometry.entryCount * VHDX_BAT_ENTRY_SIZE);
  const batView = new DataView(bat.buffer);
  const blocks: VhdxFileBlock[] = [];
  let nextOffset = vhdxPayloadStart(geometry);
  const diskExtents = disk.layout.extents;
  let extentIndex = 0;
  for (let block = 0; block < geometry.dataBlockCount; block++) {
    const diskStart = block * blockSize;
    const blockLength = Math.min(blockSize, diskSize - diskStart);
    const index = payloadBatIndex(block, geometry.chunkRatio);
    // Blocks inside one zero extent (most of a big disk) are decided without slicing: a 500 GB
    // disk has 15 000 blocks, and building throw-away extent lists for each cost 30 ms of GC.
    while ((diskExtents[extentIndex]?.start ?? Infinity) + (diskExtents[extentIndex]?.length ?? 0) <= diskStart) extentIndex++;
    const covering = diskExtents[extentIndex];
    const insideZero = covering?.kind === 'zero' && covering.start + covering.length >= diskStart + blockLength;
    const extents = insideZero ? [] : sliceLayout(disk.layout, diskStart, blockLength, 0);
    if (insideZero || extents.every((extent) => extent.kind === 'zero')) {
      writeVhdxBatEntry(batView, index, PAYLOAD_BLOCK_ZERO, 0); // FileOffsetMB reserved: 0
    } else {
      writeVhdxBatEntry(batView, index, PAYLOAD_BLOCK_FULLY_PRESENT, nextOffset);
      blocks.push({ fileOffset: nextOffset, length: blockSize, extents });
      nextOffset += blockSize; // MS-VHDX 2.4.1: blocks are BlockSize; 1 MiB-aligned as BlockSize is
    }
  }
  return assembleVhdxLayout({
    geometry,
    virtualDiskSize: diskSize,
    fileWriteGuid: options.fileWriteGuid ?? vhdxFileWriteGuid(disk),
    dataWriteGuid: options.dataWriteGuid ?? vhdxDataWriteGuid(disk),
    page83: options.page83 ?? vhdxPage83(disk),
    bat,
    blocks,
  });
}

/** A block of a VHDX file after the metadata region: payload (BlockSize) or sector bitmap (1 MiB). */
export interface VhdxFileBlock {
  /** 1 MiB-aligned, increasing from block to block. */
  readonly fileOffset: number;
  /** Bytes the block takes in the file; shorter `extents` are padded with zeros. */
  readonly length: number;
  /** The block's content, starting at 0 (re-based by the assembly). */
  readonly extents: readonly Extent[];
}

export interface VhdxAssembly {
  readonly geometry: VhdxBatGeometry;
  readonly virtualDiskSize: number;
  readonly fileWriteGuid: Uint8Array;
  readonly dataWriteGuid: Uint8Array;
  readonly page83: Uint8Array;
  /** MS-VHDX 2.6.2.6: the encoded parent locator of a differencing VHDX (sets HasParent). */
  readonly parentLocator?: Uint8Array;
  /** geometry.entryCount entries (MS-VHDX 2.5). */
  readonly bat: Uint8Array;
  readonly blocks: readonly VhdxFileBlock[];
}

/** Where payload and sector bitmap blocks may start: after the BAT and the metadata region. */
export function vhdxPayloadStart(geometry: VhdxBatGeometry): number {
  return VHDX_BAT_OFFSET + geometry.regionLength + VHDX_METADATA_REGION_LENGTH;
}

/**
 * The whole VHDX file around a BAT and its blocks (docs/containers.md §3.1): file identifier,
 * two headers, two region tables, the zeroed log, the BAT, the metadata region, then the blocks.
 * Shared by the dynamic writer above and the differencing writer (./vhdx-differencing.ts).
 */
export function assembleVhdxLayout(assembly: VhdxAssembly): Layout {
  const { geometry } = assembly;
  const batLength = geometry.regionLength;
  const metadataOffset = VHDX_BAT_OFFSET + batLength;
  const payloadStart = vhdxPayloadStart(geometry);
  // Content second: the headers and tables, checksums computed by their encoders last.
  const header = (sequenceNumber: bigint): Uint8Array =>
    encodeVhdxHeader({
      sequenceNumber,
      fileWriteGuid: assembly.fileWriteGuid,
      dataWriteGuid: assembly.dataWriteGuid,
      logGuid: ZERO_GUID, // MS-VHDX 2.2.2: zero = no log to replay
      logVersion: VHDX_LOG_VERSION,
      version: VHDX_HEADER_VERSION,
      logLength: VHDX_LOG_LENGTH,
      logOffset: VHDX_LOG_OFFSET,
    });
  const regionTable = encodeVhdxRegionTable([
    // MS-VHDX 2.2.3.2: both regions are required (qemu writes 0; both readers accept 1).
    { guid: VHDX_BAT_REGION_GUID, fileOffset: VHDX_BAT_OFFSET, length: batLength, required: true },
    { guid: VHDX_METADATA_REGION_GUID, fileOffset: metadataOffset, length: VHDX_METADATA_REGION_LENGTH, required: true },
  ]).slice(0, VHDX_REGION_TABLE_HEADER_SIZE + 2 * VHDX_REGION_ENTRY_SIZE); // the rest is zero (and checksummed as such)
  const hasParent = assembly.parentLocator !== undefined;
  const metadata = encodeVhdxMetadata(
    vhdxStandardMetadataItems({
      fileParameters: { blockSize: geometry.blockSize, leaveBlockAllocated: false, hasParent },
      virtualDiskSize: assembly.virtualDiskSize,
      page83: assembly.page83,
      logicalSectorSize: geometry.logicalSectorSize,
      physicalSectorSize: VHDX_PHYSICAL_SECTOR_SIZE,
      ...(assembly.parentLocator === undefined ? {} : { parentLocator: assembly.parentLocator }),
    }),
  );

  const reserved = 'zeros: VHDX header section (reserved)';
  const builder = new LayoutBuilder();
  builder.zeroTo(VHDX_FILE_ID_OFFSET, reserved).bytes(encodeVhdxFileIdentifier(VHDX_CREATOR), 'VHDX file identifier');
  builder.zeroTo(VHDX_HEADER1_OFFSET, reserved).bytes(header(1n), 'VHDX header 1');
  builder.zeroTo(VHDX_HEADER2_OFFSET, reserved).bytes(header(2n), 'VHDX header 2');
  builder.zeroTo(VHDX_REGION_TABLE1_OFFSET, reserved).bytes(regionTable, 'VHDX region table 1');
  builder.zeroTo(VHDX_REGION_TABLE2_OFFSET, reserved).bytes(regionTable, 'VHDX region table 2');
  builder.zeroTo(VHDX_HEADER_SECTION_SIZE, reserved); // reserved up to 1 MiB, then the zeroed log
  builder.zeroTo(VHDX_LOG_OFFSET + VHDX_LOG_LENGTH, 'zeros: VHDX log (empty)');
  builder.zeroTo(VHDX_BAT_OFFSET, 'zeros: VHDX log (empty)').bytes(assembly.bat, 'VHDX BAT');
  builder.zeroTo(metadataOffset, 'zeros: rest of the VHDX BAT region').bytes(metadata.table, 'VHDX metadata table');
  builder.zeroTo(metadataOffset + VHDX_METADATA_ITEMS_OFFSET, 'zeros: rest of the VHDX metadata table').bytes(metadata.itemData, 'VHDX metadata items');
  builder.zeroTo(payloadStart, 'zeros: rest of the VHDX metadata region');
  for (const block of assembly.blocks) {
    builder.zeroTo(block.fileOffset, 'zeros: between VHDX blocks');
    for (const extent of block.extents) builder.append(extent);
    builder.zeroTo(block.fileOffset + block.length, 'zeros: rest of the VHDX block'); // the last block is padded to a full block
  }
  return builder.build();
}
