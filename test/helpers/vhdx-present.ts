// SPDX-License-Identifier: MIT
/**
 * Which byte ranges of its virtual disk a VHDX file holds itself (for a differencing VHDX: what it
 * does not leave to its parent), read by hand from MS-VHDX and nothing of src/: the region table
 * (2.2.3) gives the BAT and the metadata region; the metadata (2.6.2) the block size, the logical
 * sector size and the virtual disk size; the BAT (2.5) a state per payload block, with one sector
 * bitmap entry after every chunk ratio payload entries (2.5.1); a PARTIALLY_PRESENT block's
 * sectors are the set bits of its chunk's 1 MiB sector bitmap block (2.5.1.2, bit k of byte j
 * is sector 8j+k of the chunk).
 */
import { open } from 'node:fs/promises';

/** A GUID in its on-disk form (MS-VHDX 2.1: the first three fields little-endian). */
function guid(text: string): Buffer {
  const hex = text.replaceAll('-', '');
  const bytes = Buffer.from(hex, 'hex');
  bytes.subarray(0, 4).reverse();
  bytes.subarray(4, 6).reverse();
  bytes.subarray(6, 8).reverse();
  return bytes;
}

const BAT_REGION = guid('2DC27766-F623-4200-9D64-115E9BFD4A08');
const METADATA_REGION = guid('8B7CA206-4790-4B9A-B8FE-575F050F886E');
const FILE_PARAMETERS = guid('CAA16737-FA36-4D43-B3B6-33F0AA44E76B');
const VIRTUAL_DISK_SIZE = guid('2FA54224-CD1B-4876-B211-5DBED83BF4B8');
const LOGICAL_SECTOR_SIZE = guid('8141BF1D-A96F-4709-BA47-F233A8FAAB5F');
const MiB = 1024 * 1024;

/** BAT entry states (MS-VHDX 2.5.1.1): present in this file (zero counts: it hides the parent). */
const PAYLOAD_ZERO = 2;
const PAYLOAD_FULLY_PRESENT = 6;
const PAYLOAD_PARTIALLY_PRESENT = 7;
const SB_BLOCK_PRESENT = 6;

export interface VhdxPresence {
  readonly blockSize: number;
  readonly sectorSize: number;
  readonly virtualSize: number;
  readonly hasParent: boolean;
  /** Sorted, merged [start, end) byte ranges of the virtual disk this file holds. */
  readonly ranges: readonly (readonly [number, number])[];
}

export async function vhdxPresentRanges(path: string): Promise<VhdxPresence> {
  const handle = await open(path, 'r');
  const readAt = async (position: number, length: number): Promise<Buffer> => {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, position);
    if (bytesRead !== length) throw new Error(`${path}: short read of ${length} bytes at ${position}`);
    return buffer;
  };
  try {
    if ((await readAt(0, 8)).toString('latin1') !== 'vhdxfile') throw new Error(`${path}: not a VHDX`);
    const regions = await readAt(192 * 1024, 64 * 1024);
    if (regions.toString('latin1', 0, 4) !== 'regi') throw new Error(`${path}: no region table`);
    let bat: { offset: number; length: number } | undefined;
    let metadata: { offset: number; length: number } | undefined;
    for (let index = 0; index < regions.readUInt32LE(8); index++) {
      const at = 16 + index * 32;
      const found = { offset: Number(regions.readBigUInt64LE(at + 16)), length: regions.readUInt32LE(at + 24) };
      if (regions.subarray(at, at + 16).equals(BAT_REGION)) bat = found;
      if (regions.subarray(at, at + 16).equals(METADATA_REGION)) metadata = found;
    }
    if (bat === undefined || metadata === undefined) throw new Error(`${path}: no BAT or metadata region`);
    const table = await readAt(metadata.offset, metadata.length);
    if (table.toString('latin1', 0, 8) !== 'metadata') throw new Error(`${path}: bad metadata table`);
    const item = (id: Buffer): Buffer => {
      for (let index = 0; index < table.readUInt16LE(10); index++) {
        const at = 32 + index * 32;
        if (table.subarray(at, at + 16).equals(id)) {
          const offset = table.readUInt32LE(at + 16);
          return table.subarray(offset, offset + table.readUInt32LE(at + 20));
        }
      }
      throw new Error(`${path}: metadata item ${id.toString('hex')} missing`);
    };
    const parameters = item(FILE_PARAMETERS);
    const blockSize = parameters.readUInt32LE(0);
    const hasParent = (parameters.readUInt32LE(4) & 2) !== 0;
    const virtualSize = Number(item(VIRTUAL_DISK_SIZE).readBigUInt64LE(0));
    const sectorSize = item(LOGICAL_SECTOR_SIZE).readUInt32LE(0);
    const chunkRatio = (2 ** 23 * sectorSize) / blockSize;
    const blocks = Math.ceil(virtualSize / blockSize);
    const entries = await readAt(bat.offset, bat.length);
    const entry = (index: number): { state: number; offset: number } => {
      const value = entries.readBigUInt64LE(index * 8);
      return { state: Number(value & 7n), offset: Number(value >> 20n) * MiB };
    };
    const ranges: [number, number][] = [];
    const add = (start: number, end: number): void => {
      const clipped = Math.min(end, virtualSize);
      const last = ranges.at(-1);
      if (last !== undefined && last[1] === start) last[1] = clipped;
      else ranges.push([start, clipped]);
    };
    const bitmaps = new Map<number, Buffer>();
    const sectorsPerBlock = blockSize / sectorSize;
    for (let block = 0; block < blocks; block++) {
      const chunk = Math.floor(block / chunkRatio);
      const { state } = entry(block + chunk);
      const start = block * blockSize;
      if (state === PAYLOAD_FULLY_PRESENT || state === PAYLOAD_ZERO) {
        add(start, start + blockSize);
      } else if (state === PAYLOAD_PARTIALLY_PRESENT) {
        let bitmap = bitmaps.get(chunk);
        if (bitmap === undefined) {
          const sb = entry(chunk * (chunkRatio + 1) + chunkRatio);
          if (sb.state !== SB_BLOCK_PRESENT) throw new Error(`${path}: block ${block} is partially present without a sector bitmap`);
          bitmap = await readAt(sb.offset, MiB);
          bitmaps.set(chunk, bitmap);
        }
        const first = (block % chunkRatio) * sectorsPerBlock;
        for (let sector = 0; sector < sectorsPerBlock; sector++) {
          const bit = first + sector;
          if ((((bitmap[bit >> 3] ?? 0) >> (bit & 7)) & 1) === 1) add(start + sector * sectorSize, start + (sector + 1) * sectorSize);
        }
      }
    }
    return { blockSize, sectorSize, virtualSize, hasParent, ranges };
  } finally {
    await handle.close();
  }
}
