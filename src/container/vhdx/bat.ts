// SPDX-License-Identifier: MIT
/**
 * VHDX Block Allocation Table: geometry (chunk ratio, entry counts, interleaving) and entries.
 *
 * Spec: [MS-VHDX] v20180912 (VHDX Format Specification v1.00, 2012), 2.5 BAT, 2.5.1 BAT Entry,
 * 2.4 Blocks. The count formulas are images in MS-VHDX; the text below matches qemu
 * `vhdx_calc_bat_entries` (docs/containers.md §3.4).
 */
import { SynthvhdError, internalError } from '../../errors/synthvhd-error.js';
import { isPowerOfTwo, roundUp, viewOf } from '../binary.js';
import {
  VHDX_ALIGNMENT,
  VHDX_BAT_ENTRY_SIZE,
  VHDX_BAT_STATE_MASK,
  VHDX_MAX_BLOCK_SIZE,
  VHDX_MIN_BLOCK_SIZE,
  VHDX_SECTORS_PER_BITMAP_BLOCK,
} from './constants.js';

export interface VhdxBatGeometry {
  readonly blockSize: number;
  readonly logicalSectorSize: number;
  /** MS-VHDX 2.5: payload blocks per sector bitmap block = 2^23 * LogicalSectorSize / BlockSize. */
  readonly chunkRatio: number;
  /** MS-VHDX 2.5: ceil(VirtualDiskSize / BlockSize). */
  readonly dataBlockCount: number;
  /** MS-VHDX 2.5: ceil(DataBlockCount / ChunkRatio). */
  readonly sectorBitmapBlockCount: number;
  /**
   * MS-VHDX 2.5: fixed/dynamic: DataBlockCount + floor((DataBlockCount - 1) / ChunkRatio) (the
   * last entry is the last payload block's); differencing: SectorBitmapBlockCount * (ChunkRatio + 1).
   */
  readonly entryCount: number;
  /** BAT region length: entryCount * 8 rounded up to 1 MiB (MS-VHDX 2.2.3.2). */
  readonly regionLength: number;
}

export function vhdxBatGeometry(
  virtualDiskSize: number,
  blockSize: number,
  logicalSectorSize: number,
  differencing = false,
): VhdxBatGeometry {
  if (!isPowerOfTwo(blockSize) || blockSize < VHDX_MIN_BLOCK_SIZE || blockSize > VHDX_MAX_BLOCK_SIZE) {
    throw internalError(`VHDX block size ${blockSize}`);
  }
  if (virtualDiskSize <= 0) throw internalError(`VHDX virtual disk size ${virtualDiskSize}`);
  const chunkRatio = (VHDX_SECTORS_PER_BITMAP_BLOCK * logicalSectorSize) / blockSize;
  const dataBlockCount = Math.ceil(virtualDiskSize / blockSize);
  const sectorBitmapBlockCount = Math.ceil(dataBlockCount / chunkRatio);
  const entryCount = differencing
    ? sectorBitmapBlockCount * (chunkRatio + 1)
    : dataBlockCount + Math.floor((dataBlockCount - 1) / chunkRatio);
  return {
    blockSize,
    logicalSectorSize,
    chunkRatio,
    dataBlockCount,
    sectorBitmapBlockCount,
    entryCount,
    regionLength: roundUp(entryCount * VHDX_BAT_ENTRY_SIZE, VHDX_ALIGNMENT),
  };
}

/** MS-VHDX 2.5: payload block `block` is followed by a sector bitmap entry after every chunkRatio blocks. */
export function payloadBatIndex(block: number, chunkRatio: number): number {
  return block + Math.floor(block / chunkRatio);
}

/** MS-VHDX 2.5: the sector bitmap entry of chunk `chunk` follows that chunk's payload entries. */
export function sectorBitmapBatIndex(chunk: number, chunkRatio: number): number {
  return chunk * (chunkRatio + 1) + chunkRatio;
}

export interface VhdxBatEntry {
  /** MS-VHDX 2.5.1.1 / 2.5.1.2 state (bits 0-2). */
  readonly state: number;
  /** FileOffsetMB * 1 MiB (bits 20-63); 0 for states without an offset. */
  readonly fileOffset: number;
}

/**
 * Writes entry `index`: State | FileOffsetMB << 20 (MS-VHDX 2.5.1), as two u32 halves so that
 * no bigint is needed. `fileOffset` must be a multiple of 1 MiB (0 for NOT_PRESENT/ZERO:
 * MS-VHDX 2.5.1.1 says FileOffsetMB is reserved for them; docs/containers.md §3.6).
 */
export function writeVhdxBatEntry(bat: Uint8Array | DataView, index: number, state: number, fileOffset: number): void {
  if (fileOffset % VHDX_ALIGNMENT !== 0 || fileOffset < 0 || !Number.isSafeInteger(fileOffset)) {
    throw internalError(`BAT file offset ${fileOffset} is not a multiple of 1 MiB`);
  }
  const view = bat instanceof DataView ? bat : viewOf(bat);
  const at = index * VHDX_BAT_ENTRY_SIZE;
  view.setUint32(at, ((fileOffset % 2 ** 32) | (state & VHDX_BAT_STATE_MASK)) >>> 0, true);
  view.setUint32(at + 4, Math.floor(fileOffset / 2 ** 32), true);
}

export function readVhdxBatEntry(bat: Uint8Array | DataView, index: number): VhdxBatEntry {
  const view = bat instanceof DataView ? bat : viewOf(bat);
  const at = index * VHDX_BAT_ENTRY_SIZE;
  if (at + VHDX_BAT_ENTRY_SIZE > view.byteLength) throw new SynthvhdError('E_CONTAINER', `BAT entry ${index} is beyond the BAT`);
  const low = view.getUint32(at, true);
  const high = view.getUint32(at + 4, true);
  return { state: low & VHDX_BAT_STATE_MASK, fileOffset: high * 2 ** 32 + ((low & 0xfff00000) >>> 0) };
}
