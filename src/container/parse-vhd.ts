// SPDX-License-Identifier: MIT
/**
 * Parses and validates a .vhd ("Virtual Hard Disk Image Format Specification" v1.0, Microsoft
 * 2006; constants in ./vhd.ts): footer and its copy, dynamic header, BAT and parent locators.
 * Strict: every checksum must be right.
 */
import { SynthvhdError } from '../errors/synthvhd-error.js';
import { getAscii, isPowerOfTwo, viewOf } from './binary.js';
import type { ContainerReader, ParsedVhd } from './parsed-container.js';
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
  vhdBitmapSize,
} from './vhd.js';

/** Parses the .vhd whose footer (the file's last 512 bytes) is `footerBytes`. */
export async function parseVhd(reader: ContainerReader, footerBytes: Uint8Array): Promise<ParsedVhd> {
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
async function readVhdBat(reader: ContainerReader, footer: VhdFooter, header: VhdDynamicHeader): Promise<Uint8Array> {
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

/** `text` without trailing characters from `characters` (NUL padding, space padding). */
export function stripTrailing(text: string, characters: string): string {
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
