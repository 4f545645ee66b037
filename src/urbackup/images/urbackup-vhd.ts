// SPDX-License-Identifier: MIT
/**
 * The dynamic and differencing VHDs urBackup writes (`fsimageplugin/vhdfile.cpp`, dev @90da741),
 * read as urBackup's own VHDFile reads them. Pure over a read callback of the VHD's bytes (a
 * plain file, or the logical bytes of a .vhdz); docs/urbackup-image-formats.md §3.
 *
 * How urBackup differs from a generic VHD reader, and why each rule is here:
 * - read_footer: the footer at the end, else the copy at offset 0. urBackup writes in "fast
 *   mode" (ImageBackup passes fast_mode=true): the trailing footer and the BAT are written only by
 *   finish(). A file with a valid copy at 0 and no trailing footer was never finished: its BAT
 *   on disk is still the all-0xFFFFFFFF one of the constructor, so it is refused as unfinished.
 * - process_footer: only Disk Type 3 (dynamic) or 4 (differencing).
 * - Read: a sector is in this file only when its block is allocated AND its bitmap bit is set
 *   (isBitmapSet, MSB first); otherwise it comes from the parent, or is zero without one. This
 *   applies to dynamic (full) images too: urBackup allocates a block, writes a zeroed bitmap and
 *   only the sectors it has, and inside a .vhdz the other sectors hold whatever the reused cache
 *   buffer held (LRUMemCache::createInt does not clear it). qemu and libvhdi skip the bitmap of
 *   dynamic disks and return that garbage.
 * - Read: a block whose data runs past the end of the file is an error ("Wrong dataoffset").
 */
import { SynthvhdError } from '../../errors/synthvhd-error.js';
import { viewOf } from '../../container/binary.js';
import type { ReadFunction } from '../../container/inspect.js';
import {
  VHD_BAT_UNUSED,
  VHD_DISK_TYPE_DIFFERENCING,
  VHD_DISK_TYPE_DYNAMIC,
  VHD_DYNAMIC_HEADER_SIZE,
  VHD_FOOTER_SIZE,
  VHD_SECTOR_SIZE,
  type VhdDynamicHeader,
  type VhdFooter,
  decodeVhdDynamicHeader,
  decodeVhdFooter,
  vhdBitmapSize,
} from '../../container/vhd.js';

/**
 * The most BAT entries read: a VHD holds at most 2040 GiB ("Virtual Hard Disk Image Format
 * Specification", Current Size; qemu VHD_MAX_SECTORS), which is 4 177 920 blocks of urBackup's
 * 512 KiB (docs/urbackup-image-formats.md §3): a 16 MiB BAT at most.
 */
export const MAX_VHD_BAT_ENTRIES = 4 * 1024 * 1024;

export interface UrbackupVhd {
  readonly type: 'dynamic' | 'differencing';
  readonly fileSize: number;
  readonly footer: VhdFooter;
  readonly header: VhdDynamicHeader;
  /** The virtual disk size (footer Current Size). */
  readonly size: number;
  readonly blockSize: number;
  readonly bitmapSize: number;
  /** BAT entries (sector numbers), one per block of the disk. */
  readonly bat: Uint32Array;
  /** Differencing: `parent_unicodename` as stored (urBackup writes `../<dir>/<file>` or `<file>`). */
  readonly parentUnicodeName: string;
}

async function readExactly(read: ReadFunction, position: number, length: number, what: string): Promise<Uint8Array> {
  const bytes = await read(position, length);
  if (bytes.length < length) throw new SynthvhdError('E_CONTAINER', `${what}: short read at ${position} (truncated?)`);
  return bytes.subarray(0, length);
}

function tryFooter(bytes: Uint8Array): VhdFooter | undefined {
  try {
    return decodeVhdFooter(bytes);
  } catch {
    return undefined;
  }
}

/**
 * The footer of a urBackup VHD of `size` bytes (read_footer, process_footer): what a child's
 * Parent Unique Id is checked against before anything else of the file is read.
 */
export async function readUrbackupVhdFooter(read: ReadFunction, size: number): Promise<VhdFooter> {
  if (size < VHD_FOOTER_SIZE * 3) throw new SynthvhdError('E_CONTAINER', `VHD: only ${size} bytes, too short for a dynamic VHD`);
  const trailing = tryFooter(await readExactly(read, size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, 'VHD footer'));
  if (trailing === undefined) {
    const copy = tryFooter(await readExactly(read, 0, VHD_FOOTER_SIZE, 'VHD footer copy'));
    if (copy !== undefined) {
      throw new SynthvhdError(
        'E_INCOMPLETE',
        'VHD has its footer copy at offset 0 but no footer at the end: urBackup never finished writing it (the BAT is written last)',
      );
    }
    throw new SynthvhdError('E_CONTAINER', 'not a VHD: no valid "conectix" footer at the end or at offset 0');
  }
  const footer = trailing;
  if (footer.diskType !== VHD_DISK_TYPE_DYNAMIC && footer.diskType !== VHD_DISK_TYPE_DIFFERENCING) {
    throw new SynthvhdError('E_CONTAINER', `VHD Disk Type ${footer.diskType}: urBackup writes only dynamic (3) or differencing (4) VHDs`);
  }
  if (footer.currentSize <= 0 || footer.currentSize % VHD_SECTOR_SIZE !== 0) {
    throw new SynthvhdError('E_CONTAINER', `VHD Current Size ${footer.currentSize} is not a positive multiple of 512`);
  }
  return footer;
}

/** Parses and checks a urBackup VHD of `size` bytes (see the file comment); `footer` when already read. */
export async function parseUrbackupVhd(read: ReadFunction, size: number, known?: VhdFooter): Promise<UrbackupVhd> {
  const footer = known ?? (await readUrbackupVhdFooter(read, size));
  const headerOffset = footer.dataOffset;
  if (headerOffset + BigInt(VHD_DYNAMIC_HEADER_SIZE) > BigInt(size)) {
    throw new SynthvhdError('E_CONTAINER', `VHD footer: dynamic header offset ${headerOffset} is past the end of the file`);
  }
  const header = decodeVhdDynamicHeader(
    await readExactly(read, Number(headerOffset), VHD_DYNAMIC_HEADER_SIZE, 'VHD dynamic header'),
    `VHD dynamic header (offset ${headerOffset})`,
  );
  const { blockSize } = header;
  if (blockSize < VHD_SECTOR_SIZE || blockSize % VHD_SECTOR_SIZE !== 0 || blockSize > 256 * 1024 * 1024) {
    throw new SynthvhdError('E_CONTAINER', `VHD dynamic header: Block Size ${blockSize} is not usable`);
  }
  const blocks = Math.ceil(footer.currentSize / blockSize);
  // Every size is checked before the BAT is allocated: a few bytes must not make us allocate
  // gigabytes (the daemon parses hostile files as root).
  if (blocks > MAX_VHD_BAT_ENTRIES) {
    throw new SynthvhdError('E_CONTAINER', `VHD: ${blocks} blocks (Current Size ${footer.currentSize}, Block Size ${blockSize}) is more than the ${MAX_VHD_BAT_ENTRIES} a VHD of at most 2040 GiB has`);
  }
  if (header.maxTableEntries < blocks) {
    throw new SynthvhdError('E_CONTAINER', `VHD dynamic header: ${header.maxTableEntries} BAT entries for ${blocks} blocks`);
  }
  if (header.tableOffset + blocks * 4 > size) throw new SynthvhdError('E_CONTAINER', `VHD BAT at ${header.tableOffset} (+${blocks * 4} bytes) is past the end of the file (${size} bytes)`);
  const batBytes = await readExactly(read, header.tableOffset, blocks * 4, 'VHD BAT');
  const view = viewOf(batBytes);
  const bat = new Uint32Array(blocks);
  const bitmapSize = vhdBitmapSize(blockSize);
  const dataEnd = size - VHD_FOOTER_SIZE;
  for (let block = 0; block < blocks; block++) {
    const entry = view.getUint32(block * 4, false);
    bat[block] = entry;
    if (entry === VHD_BAT_UNUSED) continue;
    const end = entry * VHD_SECTOR_SIZE + bitmapSize + Math.min(blockSize, footer.currentSize - block * blockSize);
    if (entry * VHD_SECTOR_SIZE < VHD_FOOTER_SIZE || end > dataEnd) {
      throw new SynthvhdError('E_CONTAINER', `VHD BAT entry ${block}: block at ${entry * VHD_SECTOR_SIZE} is not inside the file's data (${dataEnd} bytes; truncated?)`);
    }
  }
  checkNoOverlap(bat, bitmapSize, blockSize, footer.currentSize);
  const type = footer.diskType === VHD_DISK_TYPE_DYNAMIC ? 'dynamic' : 'differencing';
  return { type, fileSize: size, footer, header, size: footer.currentSize, blockSize, bitmapSize, bat, parentUnicodeName: header.parentUnicodeName };
}

/**
 * VHDFile allocates each block once, at the end of the file (nextblock_offset), so no two
 * allocated blocks share bytes. Checked so that the bitmaps read (one per allocated block) are
 * bounded by the file's size: a BAT whose entries all name one block would otherwise have us
 * read and keep that bitmap once per entry.
 */
function checkNoOverlap(bat: Uint32Array, bitmapSize: number, blockSize: number, diskSize: number): void {
  const extentOf = (block: number): number => bitmapSize + Math.min(blockSize, diskSize - block * blockSize);
  // urBackup allocates blocks as they are first written: a full image's are in disk order, and
  // then one pass checks them (a 1 TiB disk has 2 million; sorting them costs seconds).
  let inOrder = true;
  let end = 0;
  for (let block = 0; block < bat.length && inOrder; block++) {
    const entry = bat[block] ?? VHD_BAT_UNUSED;
    if (entry === VHD_BAT_UNUSED) continue;
    if (entry * VHD_SECTOR_SIZE < end) inOrder = false;
    else end = entry * VHD_SECTOR_SIZE + extentOf(block);
  }
  if (inOrder) return;
  const order: number[] = [];
  for (let block = 0; block < bat.length; block++) if (bat[block] !== VHD_BAT_UNUSED) order.push(block);
  order.sort((a, b) => (bat[a] ?? 0) - (bat[b] ?? 0));
  end = 0;
  let previous = -1;
  for (const block of order) {
    const start = (bat[block] ?? 0) * VHD_SECTOR_SIZE;
    if (start < end) {
      throw new SynthvhdError('E_CONTAINER', `VHD BAT entries ${previous} and ${block}: their blocks overlap at ${start} (each block is stored once)`);
    }
    end = start + extentOf(block);
    previous = block;
  }
}

/**
 * Where urBackup looks for the parent (VHDFile::read_dynamicheader): `parent_unicodename` with
 * each leading `../` taking one folder off the child's folder; when that file does not exist,
 * its file name in the child's own folder (if the name had `../`), else in the folder above.
 * Returns the candidates in order, as absolute paths.
 */
export function urbackupVhdParentCandidates(childPath: string, parentUnicodeName: string): string[] {
  const dirOf = (path: string): string => {
    const at = path.lastIndexOf('/');
    return at <= 0 ? '/' : path.slice(0, at);
  };
  const nameOf = (path: string): string => path.slice(path.lastIndexOf('/') + 1);
  const childDir = dirOf(childPath);
  let name = parentUnicodeName.replace(/\\/g, '/');
  let dir = childDir;
  let inOtherFolder = false;
  while (name.length > 3 && name.startsWith('../')) {
    dir = dirOf(dir);
    name = name.slice(3);
    inOtherFolder = true;
  }
  if (name === '') return [];
  const first = `${dir === '/' ? '' : dir}/${name}`;
  const fallbackDir = inOtherFolder ? childDir : dirOf(childDir);
  const second = `${fallbackDir === '/' ? '' : fallbackDir}/${nameOf(first)}`;
  return first === second ? [first] : [first, second];
}
