// SPDX-License-Identifier: MIT
/**
 * What a .vhd or .vhdx file's own structures say about each of its bytes, as a Layout of `file`
 * extents over the file itself (so it reads back as the file), each described: headers, region
 * tables, log, BAT, metadata items, every allocated block with the disk range it holds, and
 * `not referenced` for bytes no structure points at. `synthvhd inspect --map FILE` prints it
 * (docs/architecture.md §10). Pure: it works on what ./inspect.ts parsed and validated.
 *
 * Specs: [MS-VHDX] v20180912 (sections cited below); "Virtual Hard Disk Image Format
 * Specification" v1.0 (2006) for VHD (section titles cited below).
 */
import { internalError } from '../errors/synthvhd-error.js';
import type { Layout } from '../extents/extent.js';
import { LayoutBuilder } from '../extents/layout-builder.js';
import { guidEquals } from './guid.js';
import type { ParsedContainer, ParsedVhd, ParsedVhdx } from './inspect.js';
import { VHD_BAT_UNUSED, VHD_FOOTER_SIZE, VHD_DYNAMIC_HEADER_SIZE, VHD_SECTOR_SIZE, vhdBitmapSize } from './vhd.js';
import { readVhdxBatEntry } from './vhdx/bat.js';
import {
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  SB_BLOCK_PRESENT,
  VHDX_FILE_ID_OFFSET,
  VHDX_FILE_ID_SIZE,
  VHDX_FILE_PARAMETERS_GUID,
  VHDX_HEADER1_OFFSET,
  VHDX_HEADER2_OFFSET,
  VHDX_HEADER_SIZE,
  VHDX_LOGICAL_SECTOR_SIZE_GUID,
  VHDX_METADATA_TABLE_SIZE,
  VHDX_PAGE83_DATA_GUID,
  VHDX_PARENT_LOCATOR_GUID,
  VHDX_PHYSICAL_SECTOR_SIZE_GUID,
  VHDX_REGION_TABLE1_OFFSET,
  VHDX_REGION_TABLE2_OFFSET,
  VHDX_REGION_TABLE_SIZE,
  VHDX_SECTOR_BITMAP_BLOCK_SIZE,
  VHDX_VIRTUAL_DISK_SIZE_GUID,
} from './vhdx/constants.js';

interface Piece {
  readonly start: number;
  readonly length: number;
  readonly what: string;
}

/** The structure map of a parsed container file at `path` (used as the extents' source). */
export function containerStructureMap(parsed: ParsedContainer, path: string): Layout {
  const pieces = parsed.format === 'vhdx' ? vhdxPieces(parsed) : vhdPieces(parsed);
  const gap = parsed.format === 'vhdx' ? 'not referenced by the VHDX structures' : 'not referenced by the VHD structures';
  return piecesLayout(pieces, parsed.fileSize, path, gap);
}

/** Sorted pieces as `file` extents of `path`; bytes no piece covers are described by `gap`. */
function piecesLayout(pieces: readonly Piece[], fileSize: number, path: string, gap: string): Layout {
  const builder = new LayoutBuilder();
  for (const piece of [...pieces].sort((a, b) => a.start - b.start)) {
    const start = Math.max(piece.start, builder.size);
    const end = Math.min(piece.start + piece.length, fileSize);
    if (end <= start) continue; // validated files have no overlaps; never fail a map on one
    if (start > builder.size) builder.file(path, builder.size, start - builder.size, gap);
    builder.file(path, start, end - start, piece.what);
  }
  if (builder.size < fileSize) builder.file(path, builder.size, fileSize - builder.size, gap);
  if (builder.size !== fileSize) throw internalError(`structure map covers ${builder.size} of ${fileSize} bytes`);
  return builder.build();
}

function range(start: number, end: number): string {
  return `${start}..${end}`;
}

// ---- VHDX ----

const METADATA_ITEM_NAMES: readonly (readonly [Uint8Array, string])[] = [
  [VHDX_FILE_PARAMETERS_GUID, 'File Parameters'], // MS-VHDX 2.6.2.1
  [VHDX_VIRTUAL_DISK_SIZE_GUID, 'Virtual Disk Size'], // 2.6.2.2
  [VHDX_PAGE83_DATA_GUID, 'Page 83 Data'], // 2.6.2.3
  [VHDX_LOGICAL_SECTOR_SIZE_GUID, 'Logical Sector Size'], // 2.6.2.4
  [VHDX_PHYSICAL_SECTOR_SIZE_GUID, 'Physical Sector Size'], // 2.6.2.5
  [VHDX_PARENT_LOCATOR_GUID, 'Parent Locator'], // 2.6.2.6
];

function vhdxPieces(parsed: ParsedVhdx): Piece[] {
  const { geometry, batRegion, metadataRegion, header } = parsed;
  const current = (offset: number): string => (offset === parsed.currentHeaderOffset ? ', current' : '');
  const pieces: Piece[] = [
    { start: VHDX_FILE_ID_OFFSET, length: VHDX_FILE_ID_SIZE, what: 'VHDX file identifier' }, // 2.2.1
    { start: VHDX_HEADER1_OFFSET, length: VHDX_HEADER_SIZE, what: `VHDX header 1${current(VHDX_HEADER1_OFFSET)}` }, // 2.2.2
    { start: VHDX_HEADER2_OFFSET, length: VHDX_HEADER_SIZE, what: `VHDX header 2${current(VHDX_HEADER2_OFFSET)}` },
    { start: VHDX_REGION_TABLE1_OFFSET, length: VHDX_REGION_TABLE_SIZE, what: 'VHDX region table 1' }, // 2.2.3
    { start: VHDX_REGION_TABLE2_OFFSET, length: VHDX_REGION_TABLE_SIZE, what: 'VHDX region table 2' },
    { start: batRegion.fileOffset, length: batRegion.length, what: `VHDX BAT region (${geometry.entryCount} entries)` }, // 2.5
    { start: metadataRegion.fileOffset, length: VHDX_METADATA_TABLE_SIZE, what: 'VHDX metadata table' }, // 2.6.1
  ];
  if (header.logLength > 0) {
    // 2.3: a zero LogGuid means there is nothing to replay.
    const empty = header.logGuid.every((byte) => byte === 0);
    pieces.push({ start: header.logOffset, length: header.logLength, what: empty ? 'VHDX log (empty: LogGuid is zero)' : 'VHDX log' });
  }
  for (const entry of parsed.metadataEntries) {
    if (entry.length === 0) continue;
    const name = METADATA_ITEM_NAMES.find(([guid]) => guidEquals(guid, entry.itemId))?.[1] ?? 'unknown item';
    pieces.push({ start: metadataRegion.fileOffset + entry.offset, length: entry.length, what: `VHDX metadata item: ${name}` });
  }
  const { blockSize, chunkRatio } = geometry;
  const diskSize = parsed.metadata.virtualDiskSize;
  for (let index = 0; index < geometry.entryCount; index++) {
    const entry = readVhdxBatEntry(parsed.bat, index);
    if ((index + 1) % (chunkRatio + 1) === 0) {
      // 2.5: every (ChunkRatio + 1)-th entry is the sector bitmap block of a chunk.
      if (entry.state !== SB_BLOCK_PRESENT) continue;
      const chunk = (index + 1) / (chunkRatio + 1) - 1;
      const first = chunk * chunkRatio;
      const last = Math.min(geometry.dataBlockCount, first + chunkRatio) - 1;
      pieces.push({ start: entry.fileOffset, length: VHDX_SECTOR_BITMAP_BLOCK_SIZE, what: `VHDX sector bitmap block of chunk ${chunk} (payload blocks ${first}..${last})` });
      continue;
    }
    if (entry.state !== PAYLOAD_BLOCK_FULLY_PRESENT && entry.state !== PAYLOAD_BLOCK_PARTIALLY_PRESENT) continue;
    const block = index - Math.floor(index / (chunkRatio + 1));
    const diskStart = block * blockSize;
    const state = entry.state === PAYLOAD_BLOCK_FULLY_PRESENT ? 'fully present' : 'partially present';
    pieces.push({
      start: entry.fileOffset,
      length: blockSize,
      what: `VHDX payload block ${block} (disk ${range(diskStart, Math.min(diskSize, diskStart + blockSize))}), ${state}`,
    });
  }
  return pieces;
}

// ---- VHD ----

function vhdPieces(parsed: ParsedVhd): Piece[] {
  const footerStart = parsed.fileSize - VHD_FOOTER_SIZE;
  const footer: Piece = { start: footerStart, length: VHD_FOOTER_SIZE, what: 'VHD footer' }; // "Hard Disk Footer Format"
  const diskSize = parsed.footer.currentSize;
  const header = parsed.dynamicHeader;
  if (parsed.type === 'fixed' || header === undefined) {
    return [{ start: 0, length: diskSize, what: `VHD disk data (disk ${range(0, diskSize)})` }, footer];
  }
  const { blockSize, tableOffset } = header;
  const blockCount = Math.ceil(diskSize / blockSize);
  const batLength = Math.ceil((header.maxTableEntries * 4) / VHD_SECTOR_SIZE) * VHD_SECTOR_SIZE;
  const pieces: Piece[] = [
    { start: 0, length: VHD_FOOTER_SIZE, what: 'VHD footer copy' },
    { start: Number(parsed.footer.dataOffset), length: VHD_DYNAMIC_HEADER_SIZE, what: 'VHD dynamic disk header' },
    { start: tableOffset, length: batLength, what: `VHD block allocation table (${header.maxTableEntries} entries)` },
    footer,
  ];
  for (const locator of header.parentLocators) {
    if (locator.dataLength === 0) continue;
    pieces.push({ start: locator.dataOffset, length: locator.dataLength, what: `VHD parent locator ${locator.platformCode.trim()}` });
  }
  // "Block Allocation Table" / "Data Block": a sector bitmap, then the block's data.
  const bitmapSize = vhdBitmapSize(blockSize);
  const view = new DataView(parsed.bat.buffer, parsed.bat.byteOffset, parsed.bat.byteLength);
  for (let block = 0; block < blockCount; block++) {
    const entry = view.getUint32(block * 4, false);
    if (entry === VHD_BAT_UNUSED) continue;
    const start = entry * VHD_SECTOR_SIZE;
    const diskStart = block * blockSize;
    pieces.push({ start, length: bitmapSize, what: `VHD block ${block} sector bitmap` });
    pieces.push({ start: start + bitmapSize, length: blockSize, what: `VHD block ${block} data (disk ${range(diskStart, Math.min(diskSize, diskStart + blockSize))})` });
  }
  return pieces;
}
