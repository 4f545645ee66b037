// SPDX-License-Identifier: MIT
/**
 * A urBackup full-image VHDZ of any size, written as a stream (never the volume in memory): the
 * layout urBackup's VHDFile gives a full image (docs/urbackup-image-formats.md §3: footer copy,
 * dynamic header, BAT at 1536, every 512 KiB block allocated in disk order, each a sector bitmap
 * and its data plus a sector of padding, the footer), inside CompressedFile's container (§2:
 * header, zstd records (mode 2, `zstd -3`) of 2 MiB blocks in order, the index last).
 *
 * The data is synthetic and mostly compressible: block 0 holds the synthetic MBR, every other
 * block the same 4 KiB of text repeated. So the container blocks repeat with the period of the
 * VHD block stride against the 2 MiB block (1025 phases): each distinct block is compressed once
 * and its record written as often as it occurs. A 1 TiB volume is a file of a few hundred MB,
 * written in well under a minute.
 */
import { open } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';

const SECTOR = 512;
const VHD_BLOCK = 512 * 1024;
const BITMAP = 512;
/** bitmap + data, then VHDFile's "+ (512 - x % 512)": a whole sector more when already aligned. */
const STRIDE = VHD_BLOCK + BITMAP + SECTOR;
const CONTAINER_BLOCK = 2 * 1024 * 1024;
const BAT_OFFSET = 1536;
const VOLUME_OFFSET = 512 * 1024;

function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const byte of bytes) sum += byte;
  return ~sum >>> 0;
}

function footer(diskSize: number, type: 3 | 4, uniqueId: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(512);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode('conectix'), 0);
  view.setUint32(8, 2, false); // features
  view.setUint32(12, 0x00010000, false); // version
  view.setBigUint64(16, BigInt(512), false); // data offset: the dynamic header
  view.setUint32(24, 0x2e000000, false);
  bytes.set(new TextEncoder().encode('vpc '), 28);
  view.setBigUint64(40, BigInt(diskSize), false); // original size
  view.setBigUint64(48, BigInt(diskSize), false); // current size
  view.setUint32(56, 0xffff10ff, false); // geometry (as for a disk past 127 GiB)
  view.setUint32(60, type, false); // 3 dynamic, 4 differencing
  bytes.set(uniqueId, 68);
  view.setUint32(64, checksum(bytes), false);
  return bytes;
}

function dynamicHeader(entries: number, batOffset: number, parent: BigVhdzParent | undefined): Uint8Array {
  const bytes = new Uint8Array(1024);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode('cxsparse'), 0);
  view.setBigUint64(8, 0xffffffffffffffffn, false);
  view.setBigUint64(16, BigInt(batOffset), false);
  view.setUint32(24, 0x00010000, false);
  view.setUint32(28, entries, false);
  view.setUint32(32, VHD_BLOCK, false);
  if (parent !== undefined) {
    bytes.set(parent.uniqueId, 40);
    view.setUint32(56, PARENT_TIME_STAMP, false);
    // parent_unicodename, UTF-16BE, as urBackup writes it: ../<parent folder>/<parent file>
    for (let index = 0; index < parent.unicodeName.length && index < 255; index++) view.setUint16(64 + index * 2, parent.unicodeName.charCodeAt(index), false);
  }
  view.setUint32(36, checksum(bytes), false);
  return bytes;
}

function syntheticMbr(volumeBytes: number): Uint8Array {
  const sector = new Uint8Array(512);
  sector.set([0x80, 0xfe, 0xff, 0xff, 0x07, 0xfe, 0xff, 0xff, 0x00, 0x04, 0x00, 0x00], 446); // LBA 1024
  new DataView(sector.buffer).setUint32(446 + 12, Math.floor(volumeBytes / 512), true);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

const PARENT_TIME_STAMP = 0x2e000000;

export interface BigVhdzParent {
  readonly uniqueId: Uint8Array;
  /** `../<parent folder>/<parent file>`, resolved against the child's folder. */
  readonly unicodeName: string;
}

export interface BigVhdzOptions {
  /** A differencing child of this parent; it allocates block 0 and `changed`. */
  readonly parent?: BigVhdzParent;
  readonly changed?: readonly number[];
  /** Seeds the pattern and the Unique Id. */
  readonly seed?: number;
}

export interface BigVhdz {
  readonly uniqueId: Uint8Array;
  readonly fileBytes: number;
  readonly logicalBytes: number;
  readonly records: number;
  /** The 4 KiB every volume block repeats (the volume's bytes, for checks). */
  readonly pattern: Uint8Array;
}

/**
 * Writes the VHDZ of a `volumeBytes` volume (a multiple of 512 KiB) to `path`: a full image, or
 * with `parent` a differencing one that allocates block 0 and `changed` (their data a pattern of
 * its own: every sector of them differs from the parent).
 */
export async function writeBigVhdz(path: string, volumeBytes: number, options: BigVhdzOptions = {}): Promise<BigVhdz> {
  const diskSize = volumeBytes + VOLUME_OFFSET;
  const entries = diskSize / VHD_BLOCK;
  const parent = options.parent;
  const seed = options.seed ?? 1;
  // Blocks in file order: a full image allocates every block in disk order, a child block 0 first.
  const allocated = parent === undefined ? undefined : [0, ...[...new Set(options.changed ?? [])].filter((block) => block > 0 && block < entries).sort((a, b) => a - b)];
  const allocatedCount = allocated?.length ?? entries;
  const batOffset = parent === undefined ? BAT_OFFSET : 2048; // a child's BAT leaves room for its locator
  let firstBlock = batOffset + entries * 4;
  firstBlock += SECTOR - (firstBlock % SECTOR);
  const footerAt = firstBlock + allocatedCount * STRIDE;
  const logicalSize = footerAt + SECTOR;
  const words = `urbackup image backup ${seed} of the system volume, windows, users, program files; `;
  const pattern = new Uint8Array(4096).map((_, index) => words.charCodeAt(index % words.length));
  const mbr = syntheticMbr(volumeBytes);
  const uniqueId = new Uint8Array(16).map((_, index) => (index * 37 + 11 * seed) & 0xff);
  const head = new Uint8Array(firstBlock);
  const foot = footer(diskSize, parent === undefined ? 3 : 4, uniqueId);
  head.set(foot, 0);
  head.set(dynamicHeader(entries, batOffset, parent), 512);
  const bat = new DataView(head.buffer, batOffset, entries * 4);
  for (let block = 0; block < entries; block++) bat.setUint32(block * 4, 0xffffffff, false);
  for (let index = 0; index < allocatedCount; index++) bat.setUint32((allocated?.[index] ?? index) * 4, (firstBlock + index * STRIDE) / SECTOR, false);

  /** Logical bytes [at, at + into.length) of the VHD. */
  const fill = (at: number, into: Uint8Array): void => {
    into.fill(0);
    let position = at;
    const end = at + into.length;
    while (position < end) {
      const out = position - at;
      if (position < firstBlock) {
        const count = Math.min(end, firstBlock) - position;
        into.set(head.subarray(position, position + count), out);
        position += count;
        continue;
      }
      if (position >= footerAt) {
        const inFooter = position - footerAt;
        if (inFooter < SECTOR) into.set(foot.subarray(inFooter, Math.min(SECTOR, inFooter + end - position)), out);
        break;
      }
      const block = Math.floor((position - firstBlock) / STRIDE);
      const inStride = position - firstBlock - block * STRIDE;
      const blockEnd = Math.min(end, firstBlock + (block + 1) * STRIDE);
      if (inStride < BITMAP) {
        // 1024 sectors: 128 bytes of ones, the rest of the sector zero.
        for (let index = inStride; index < BITMAP && position + index - inStride < end; index++) into[out + index - inStride] = index < 128 ? 0xff : 0;
        position += Math.min(BITMAP - inStride, end - position);
        continue;
      }
      const inData = inStride - BITMAP;
      if (inData < VHD_BLOCK) {
        const count = Math.min(VHD_BLOCK - inData, blockEnd - position);
        if ((allocated?.[block] ?? block) === 0) {
          if (inData < SECTOR) into.set(mbr.subarray(inData, Math.min(SECTOR, inData + count)), out);
        } else {
          for (let index = 0; index < count; ) {
            const from = (inData + index) % pattern.length;
            const piece = Math.min(pattern.length - from, count - index);
            into.set(pattern.subarray(from, from + piece), out + index);
            index += piece;
          }
        }
        position += count;
        continue;
      }
      position = blockEnd; // the padding sector: zeros
    }
  };

  const handle = await open(path, 'w');
  try {
    const blocks = Math.ceil(logicalSize / CONTAINER_BLOCK);
    const index = new DataView(new ArrayBuffer(blocks * 8));
    const byPhase = new Map<number, Uint8Array>();
    const buffer = new Uint8Array(CONTAINER_BLOCK);
    let offset = 50;
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    const flush = async (): Promise<void> => {
      if (pending.length === 0) return;
      const joined = Buffer.concat(pending);
      await handle.write(joined, 0, joined.length, offset - pendingBytes);
      pending = [];
      pendingBytes = 0;
    };
    for (let block = 0; block < blocks; block++) {
      const at = block * CONTAINER_BLOCK;
      // A block wholly inside the repeating blocks (past block 0, before the footer) is one of 1025 phases.
      const repeating = at >= firstBlock + STRIDE && at + CONTAINER_BLOCK <= footerAt;
      const phase = repeating ? (at - firstBlock) % STRIDE : -1;
      let record = repeating ? byPhase.get(phase) : undefined;
      if (record === undefined) {
        fill(at, buffer); // CompressedFile compresses whole blocks, also past the logical end
        const compressed = spawnSync('zstd', ['-3', '-c', '-q', '--no-check'], { input: buffer, maxBuffer: 4 * CONTAINER_BLOCK });
        if (compressed.status !== 0) throw new Error(`zstd failed: ${compressed.stderr.toString()}`);
        const payload = new Uint8Array(compressed.stdout);
        record = new Uint8Array(8 + payload.length);
        new DataView(record.buffer).setUint32(0, payload.length, true);
        new DataView(record.buffer).setUint32(4, 2, true); // mode 2: zstd
        record.set(payload, 8);
        if (repeating) byPhase.set(phase, record);
      }
      index.setBigInt64(block * 8, BigInt(offset), true);
      pending.push(record);
      pendingBytes += record.length;
      offset += record.length;
      if (pendingBytes >= 16 * 1024 * 1024) await flush();
    }
    await flush();
    const indexOffset = offset;
    await handle.write(new Uint8Array(index.buffer), 0, blocks * 8, indexOffset);
    const header = new Uint8Array(50);
    header.set(new TextEncoder().encode('URBACKUP COMPRESSED FILE#1.1\0'), 0);
    const view = new DataView(header.buffer);
    view.setBigInt64(29, BigInt(indexOffset), true);
    view.setBigInt64(37, BigInt(logicalSize), true);
    view.setUint32(45, CONTAINER_BLOCK, true);
    await handle.write(header, 0, 50, 0);
    return { uniqueId, fileBytes: indexOffset + blocks * 8, logicalBytes: logicalSize, records: blocks, pattern };
  } finally {
    await handle.close();
  }
}
