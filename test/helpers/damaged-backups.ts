// SPDX-License-Identifier: MIT
/**
 * A backup root of good urBackup image backups and a few hundred damaged ones, for
 * test/damaged-backups.test.ts (issue 19: a damaged backup costs only itself).
 *
 * Good backups are written by fixtures/urbackup-images.ts (urBackup's writer, remade) from a
 * small truth volume; each is served as a disk whose bytes the test knows without synthvhd:
 * the `.mbr`'s LBA0 (one type 0x07 entry at LBA 2048), zeros, the volume at 1 MiB, zeros up to
 * the next 2 MiB (docs/architecture.md §4-§5). Damaged backups are copies of good ones changed
 * by one deterministic mutation each (seeded PRNG), named after what it does, each in a client
 * folder of its own (so no two of them ever join one disk): truncations, flipped bytes, huge
 * and negative sizes and offsets in the compressed container's header, index and records, in
 * the VHD footer, header and BAT and in the VHDX headers, region tables, metadata and BAT
 * (with their checksums fixed where the point is to get past them), duplicate index and BAT
 * entries (two blocks on one record, the short last block among them), decompression bombs,
 * and parent chains that loop through `..` or a hard link or leave the root through a symlink.
 * Mutations are generated lazily: a tree of hundreds of them is written one at a time.
 */
import { mkdir, link, symlink, open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { seededRandom, syntheticMbr, writeUrbackupImage, writeUrbackupVhdxImage, type WrittenImage } from '../../fixtures/urbackup-images.js';
import {
  BAT_REGION,
  FILE_PARAMETERS,
  INDEX_OFFSET_AT,
  LOGICAL_SECTOR_SIZE,
  METADATA_REGION,
  SIZE_AT,
  BLOCK_SIZE_AT,
  VHDX_HEADER,
  VHDX_HEADERS,
  VHDX_REGION_TABLES,
  VHD_FOOTER,
  VHD_HEADER,
  VIRTUAL_DISK_SIZE,
  encodeContainer,
  fixVhdChecksums,
  fixVhdxHeaders,
  fixVhdxRegionTables,
  getU32LE,
  getU64BE,
  readContainer,
  readRecord,
  setU16LE,
  setU32BE,
  setU32LE,
  setU64BE,
  setU64LE,
  setVhdParentName,
  vhdPlaces,
  vhdxBatEntry,
  vhdxBatValue,
  vhdxMetadataEntry,
  vhdxMetadataItem,
  vhdxRegionEntry,
  zstdCompress,
} from './image-surgery.js';
import { mbrSector, smbrData } from './urbackup-tree.js';

const KIB = 1024;
const MIB = 1024 * KIB;
/** The volume of every backup: small, so hundreds of them are quick to write and read. */
export const VOLUME_LENGTH = 3 * MIB;
const PARTITION_LBA = 2048;
/** MBR disk size: the end of the furthest entry (1 MiB + the volume) rounded up to 2 MiB. */
export const DISK_SIZE = Math.ceil((PARTITION_LBA * 512 + VOLUME_LENGTH) / (2 * MIB)) * 2 * MIB;
const CLIENT_BLOCK = 4096;

export type ImageFormat = 'raw' | 'vhd' | 'vhdz' | 'vhdx' | 'vhdxz';

/** A file of the tree, by path relative to the backup root (or to the "outside" folder). */
export type PlannedFile =
  | { readonly kind: 'bytes'; readonly path: string; readonly bytes: Uint8Array }
  /** A hard link at `path` to the file at `target` (both in the root). */
  | { readonly kind: 'hardlink'; readonly path: string; readonly target: string }
  /** A symbolic link at `path` to `<outside>/<target>`: out of the backup root. */
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string }
  /** A file in the folder outside the root. */
  | { readonly kind: 'outside'; readonly path: string; readonly bytes: Uint8Array };

export interface GoodBackup {
  /** Backup folder, relative to the root (`<client>/<YYMMDD-HHMM>_Image_C`). */
  readonly folder: string;
  /** The image file, relative to the root. */
  readonly image: string;
  readonly format: ImageFormat;
  /** The whole disk it must be served as, made from the writer's input volume. */
  readonly truth: Uint8Array;
}

export interface Mutation {
  /** Says what the damage is; also the client folder's name. */
  readonly name: string;
  /** The damaged backup's folder (materialized), relative to the root. */
  readonly target: string;
  /** The damaged image file, relative to the root. */
  readonly image: string;
  readonly format: Exclude<ImageFormat, 'raw'>;
  /** Every backup folder of its client (the target, its parents, links), relative to the root. */
  readonly folders: readonly string[];
  /** Files (relative to the root) a line about this damage may name. */
  readonly culprits: readonly string[];
  /** Good backups beside it (an intact parent): served byte for byte. */
  readonly good: readonly GoodBackup[];
  /** The files, made on demand. */
  build(): PlannedFile[];
}

export interface Catalogue {
  readonly good: readonly GoodBackup[];
  /** Files of the good backups. */
  readonly goodFiles: () => PlannedFile[];
  readonly mutations: readonly Mutation[];
}

// ---- truth -----------------------------------------------------------------------------------

/** A volume of 4 KiB blocks: a quarter zeros, half a repeating pattern, a quarter random. */
function makeVolume(random: () => number): Uint8Array {
  const volume = new Uint8Array(VOLUME_LENGTH);
  for (let block = 0; block < VOLUME_LENGTH / CLIENT_BLOCK; block++) {
    const kind = random();
    const piece = volume.subarray(block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    if (kind < 0.25) continue;
    if (kind < 0.75) {
      const pattern = Array.from({ length: 16 }, () => Math.floor(random() * 256));
      for (let index = 0; index < piece.length; index++) piece[index] = pattern[index % 16] ?? 0;
    } else {
      for (let index = 0; index < piece.length; index++) piece[index] = Math.floor(random() * 256);
    }
  }
  // A first sector no file system claims: nothing to check against the .mbr's serial.
  volume.fill(0, 0, 512);
  volume.set(new TextEncoder().encode('damaged-backups truth volume'), 0);
  return volume;
}

/** The same volume with some blocks rewritten (a later backup run). */
function changeVolume(volume: Uint8Array, random: () => number): Uint8Array {
  const changed = volume.slice();
  for (let count = 0; count < 48; count++) {
    const block = 1 + Math.floor(random() * (VOLUME_LENGTH / CLIENT_BLOCK - 1));
    changed.fill(Math.floor(random() * 255) + 1, block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
  }
  return changed;
}

function blocksOf(volume: Uint8Array, base?: Uint8Array): number[] {
  const blocks: number[] = [];
  for (let block = 0; block < VOLUME_LENGTH / CLIENT_BLOCK; block++) {
    const piece = volume.subarray(block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const other = base?.subarray(block * CLIENT_BLOCK, (block + 1) * CLIENT_BLOCK);
    const same = other === undefined ? piece.every((byte) => byte === 0) : piece.every((byte, index) => byte === other[index]);
    if (!same) blocks.push(block);
  }
  return blocks;
}

const LBA0 = mbrSector([{ type: 0x07, firstLba: PARTITION_LBA, sectors: VOLUME_LENGTH / 512 }], 0x5eed0019);
const MBR_FILE = new Uint8Array(smbrData({ deviceNumber: 0, partitionNumber: 1, lba0: LBA0 }));

export function truthDisk(volume: Uint8Array): Uint8Array {
  const disk = new Uint8Array(DISK_SIZE);
  disk.set(LBA0, 0);
  disk.set(volume, PARTITION_LBA * 512);
  return disk;
}

// ---- layout ----------------------------------------------------------------------------------

const PARENT_TS = '260101-0100';
const CHILD_TS = '260108-0100';
const SINGLE_TS = '260301-0100';

function folderOf(client: string, timestamp: string): string {
  return `${client}/${timestamp}_Image_C`;
}

function imageOf(client: string, timestamp: string, format: ImageFormat): string {
  return `${folderOf(client, timestamp)}/Image_C_${timestamp}.${format}`;
}

/** An image file with its `.mbr` and `.sync` side files. */
function backupFiles(image: string, bytes: Uint8Array): PlannedFile[] {
  return [
    { kind: 'bytes', path: image, bytes },
    { kind: 'bytes', path: `${image}.mbr`, bytes: MBR_FILE },
    { kind: 'bytes', path: `${image}.sync`, bytes: new Uint8Array(0) },
  ];
}

/** The absolute path a writer records for a parent: a root that is not there, so only the relative names count. */
function recordedPath(relative: string): string {
  return `/srv/urbackup-elsewhere/${relative}`;
}

// ---- the base images ---------------------------------------------------------------------------

interface Bases {
  readonly volume1: Uint8Array;
  readonly volume2: Uint8Array;
  readonly vhdz: WrittenImage;
  readonly vhdzZlib10: WrittenImage;
  readonly vhd: WrittenImage;
  readonly vhdx: Uint8Array;
  readonly vhdxDataWriteGuid: Uint8Array;
  readonly vhdxz: Uint8Array;
  readonly raw: Uint8Array;
}

function makeBases(seed: number): Bases {
  const volume1 = makeVolume(seededRandom(seed));
  const volume2 = changeVolume(volume1, seededRandom(seed + 1));
  const used = blocksOf(volume1);
  const all = Array.from({ length: VOLUME_LENGTH / CLIENT_BLOCK }, (_, block) => block);
  const vhdz = writeUrbackupImage(volume1, used, { random: seededRandom(seed + 2), compressed: { codec: 'zstd', shuffle: true } });
  const vhdzZlib10 = writeUrbackupImage(volume1, used, { random: seededRandom(seed + 3), compressed: { codec: 'zlib', version: '1.0' } });
  const vhd = writeUrbackupImage(volume1, used, { random: seededRandom(seed + 4) });
  const vhdx = writeUrbackupVhdxImage(volume1, used, { random: seededRandom(seed + 5) });
  // A full VHDXZ's unwritten sectors read as recycled cache buffers (urBackup's reader returns
  // them too): every block is written, so the volume is the whole truth.
  const vhdxz = writeUrbackupVhdxImage(volume1, all, { random: seededRandom(seed + 6), compressed: { codec: 'zstd' } });
  const raw = new Uint8Array(512 * KIB + VOLUME_LENGTH);
  raw.set(syntheticMbr(VOLUME_LENGTH, seededRandom(seed + 7)), 0);
  raw.set(volume1, 512 * KIB);
  return { volume1, volume2, vhdz, vhdzZlib10, vhd, vhdx: vhdx.bytes, vhdxDataWriteGuid: vhdx.dataWriteGuid, vhdxz: vhdxz.bytes, raw };
}

// ---- mutations ---------------------------------------------------------------------------------

// eslint-disable-next-line @typescript-eslint/no-invalid-void-type -- a change edits the copy in place (void) or returns a new array (truncations, rewrapping)
type Change = (bytes: Uint8Array) => Uint8Array | void;

const U64_MAX = 0xffffffffffffffffn;
const SIGN_BIT = 0x8000000000000000n;
const I64_MAX = 0x7fffffffffffffffn;

function hex(value: bigint | number): string {
  return `0x${value.toString(16)}`;
}

/** A damaged copy of `base` alone in its client folder. */
function single(name: string, format: Mutation['format'], base: () => Uint8Array, change: Change): Mutation {
  const image = imageOf(name, SINGLE_TS, format);
  return {
    name,
    target: folderOf(name, SINGLE_TS),
    image,
    format,
    folders: [folderOf(name, SINGLE_TS)],
    culprits: [image],
    good: [],
    build: () => {
      const bytes = base().slice();
      return backupFiles(image, change(bytes) ?? bytes);
    },
  };
}

/** Flips `count` bytes at seeded places in [start, end). */
function flips(bytes: Uint8Array, random: () => number, start: number, end: number, count: number): void {
  for (let index = 0; index < count; index++) {
    const at = start + Math.floor(random() * (end - start));
    bytes[at] = (bytes[at] ?? 0) ^ (1 + Math.floor(random() * 255));
  }
}

/** Truncation points: the structure boundaries of `bytes` plus seeded ones. */
function truncationPoints(length: number, structural: readonly number[], random: () => number, extra: number): number[] {
  const points = new Set(structural.filter((point) => point >= 0 && point < length));
  while (points.size < structural.length + extra) points.add(Math.floor(random() * length));
  return [...points].sort((a, b) => a - b);
}

function truncations(prefix: string, format: Mutation['format'], base: () => Uint8Array, structural: readonly number[], seed: number, extra: number): Mutation[] {
  const bytes = base();
  return truncationPoints(bytes.length, structural, seededRandom(seed), extra).map((point) =>
    single(`${prefix}-truncated-at-${point}`, format, base, (copy) => copy.slice(0, point)),
  );
}

const memos = new Map<string, Uint8Array>();

/** `make()` once per key (decompression bombs take a while to compress). */
function memo(key: string, make: () => Uint8Array): Uint8Array {
  let value = memos.get(key);
  if (value === undefined) {
    value = make();
    memos.set(key, value);
  }
  return value;
}

/** Damage to the compressed container itself: header, index, records, payloads. */
function containerMutations(prefix: string, format: 'vhdz' | 'vhdxz', base: () => Uint8Array, written: WrittenImage | undefined, seed: number): Mutation[] {
  const bytes = base();
  const container = readContainer(bytes);
  const last = container.offsets.length - 1;
  const first = container.offsets[0] ?? -1;
  const final = container.offsets[last] ?? -1;
  const index = container.indexOffset;
  const out: Mutation[] = [];
  const add = (name: string, change: Change): void => {
    out.push(single(`${prefix}-${name}`, format, base, change));
  };
  // Header.
  add('magic-flipped', (copy) => { copy[0] = 0x75; });
  add('magic-hash-flipped', (copy) => { copy[24] = 0x24; });
  add('version-1.2', (copy) => { copy[27] = 0x32; });
  add('version-no-nul', (copy) => { copy[28] = 0x20; });
  const indexOffsets: [string, bigint][] = [
    ['0', 0n], ['1', 1n], ['49', 49n], ['-1', U64_MAX], ['sign-bit', SIGN_BIT], ['int64-max', I64_MAX], ['2^53', 1n << 53n],
    ['file-size', BigInt(bytes.length)], ['file-size-minus-7', BigInt(bytes.length - 7)], ['plus-8', BigInt(index + 8)], ['minus-8', BigInt(index - 8)], ['plus-1', BigInt(index + 1)],
  ];
  for (const [label, value] of indexOffsets) add(`header-index-offset-${label}`, (copy) => { setU64LE(copy, INDEX_OFFSET_AT, value); });
  const sizes: [string, bigint][] = [
    ['0', 0n], ['1', 1n], ['-1', U64_MAX], ['sign-bit', SIGN_BIT], ['int64-max', I64_MAX], ['2^53', 1n << 53n], ['minus-1', BigInt(container.size - 1)],
    ['plus-1', BigInt(container.size + 1)], ['plus-one-block', BigInt(container.size + container.blockSize)], ['one-block', BigInt(container.blockSize)], ['times-1000', BigInt(container.size) * 1000n],
  ];
  for (const [label, value] of sizes) add(`header-size-${label}`, (copy) => { setU64LE(copy, SIZE_AT, value); });
  const blockSizes: [string, number][] = [
    ['0', 0], ['1', 1], ['511', 511], ['513', 513], ['4096', 4096], ['sign-bit', 0x80000000], ['0xffffffff', 0xffffffff], ['64MiB', 64 * MIB], ['64MiB-plus-512', 64 * MIB + 512], ['double', container.blockSize * 2],
  ];
  for (const [label, value] of blockSizes) add(`header-block-size-${label}`, (copy) => { setU32LE(copy, BLOCK_SIZE_AT, value); });
  add('header-byte-49-flipped', (copy) => { copy[49] = (copy[49] ?? 0) ^ 0xff; });
  // Index.
  const entry = (block: number): number => index + block * 8;
  const firstEntries: [string, bigint][] = [
    ['-2', 0xfffffffffffffffen], ['sign-bit', SIGN_BIT], ['int64-max', I64_MAX], ['0', 0n], ['49-inside-header', 49n], ['at-index', BigInt(index)],
    ['index-minus-7', BigInt(index - 7)], ['past-eof', BigInt(bytes.length + 1)], ['record-plus-1', BigInt(first + 1)], ['-1-zero-block', U64_MAX],
  ];
  for (const [label, value] of firstEntries) add(`index-block0-${label}`, (copy) => { setU64LE(copy, entry(0), value); });
  add('index-last-zero-block', (copy) => { setU64LE(copy, entry(last), U64_MAX); });
  add('index-last-sign-bit', (copy) => { setU64LE(copy, entry(last), SIGN_BIT); });
  // Two blocks on one record: the short last block read as a whole one, and the other way round.
  add('index-dup-last-on-block0-record', (copy) => { setU64LE(copy, entry(last), BigInt(first)); });
  add('index-dup-block0-on-last-record', (copy) => { setU64LE(copy, entry(0), BigInt(final)); });
  add('index-all-on-block0-record', (copy) => { for (let block = 0; block <= last; block++) setU64LE(copy, entry(block), BigInt(first)); });
  const stale = written?.records?.find(([block, at]) => container.offsets[block] !== at);
  if (stale !== undefined) add('index-block0-on-stale-record', (copy) => { setU64LE(copy, entry(0), BigInt(stale[1])); });
  // Record headers.
  for (const [which, at] of [['block0', first], ['last', final]] as const) {
    const record = readRecord(bytes, at);
    const sizes: [string, number][] = [
      ['0xffffffff', 0xffffffff], ['sign-bit', 0x80000000], ['int32-max', 0x7fffffff], ['0', 0], ['1', 1], ['plus-1', record.payloadSize + 1], ['minus-1', record.payloadSize - 1], ['to-eof', bytes.length - at - 8],
    ];
    for (const [label, value] of sizes) add(`record-${which}-size-${label}`, (copy) => { setU32LE(copy, at, value); });
    const modes: [string, number][] = [['stored', 0], ['3', 3], ['0xffffffff', 0xffffffff], ['other-codec', record.mode === 2 ? 1 : 2]];
    for (const [label, value] of modes) add(`record-${which}-mode-${label}`, (copy) => { setU32LE(copy, at + 4, value); });
    const random = seededRandom(seed + at);
    add(`record-${which}-payload-1-byte-flipped`, (copy) => { flips(copy, random, at + 8 + 16, at + 8 + record.payloadSize, 1); });
    add(`record-${which}-payload-16-bytes-flipped`, (copy) => { flips(copy, random, at + 8, at + 8 + record.payloadSize, 16); });
    add(`record-${which}-payload-frame-header-zeroed`, (copy) => { copy.fill(0, at + 8, at + 16); });
  }
  // Decompression bombs and wrong lengths in place of block 0's record (they are smaller).
  const firstRecord = readRecord(bytes, first);
  const replace = (label: string, mode: number, payload: () => Uint8Array): void => {
    add(`record-block0-${label}`, (copy) => {
      const bomb = memo(`${label}/${container.blockSize}`, payload);
      if (bomb.length > firstRecord.payloadSize) throw new Error(`${label}: ${bomb.length} bytes do not fit in place`);
      setU32LE(copy, first, bomb.length);
      setU32LE(copy, first + 4, mode);
      copy.set(bomb, first + 8);
    });
  };
  replace('zstd-bomb-64MiB', 2, () => zstdCompress(new Uint8Array(64 * MIB), 1));
  replace('zstd-one-byte-long', 2, () => zstdCompress(new Uint8Array(container.blockSize + 1)));
  replace('zstd-one-byte-short', 2, () => zstdCompress(new Uint8Array(container.blockSize - 1)));
  replace('zlib-bomb-16MiB', 1, () => new Uint8Array(deflateSync(new Uint8Array(16 * MIB), { level: 9 })));
  replace('zlib-half-block', 1, () => new Uint8Array(deflateSync(new Uint8Array(container.blockSize / 2))));
  replace('stored-short', 0, () => new Uint8Array(Math.min(4096, firstRecord.payloadSize)));
  return out;
}

/** Damage to a VHD's own structures (checksums fixed, so the fields reach the parser). */
function vhdChanges(plain: Uint8Array, seed: number): [string, Change][] {
  const places = vhdPlaces(plain);
  const changes: [string, Change][] = [];
  const fixed = (name: string, change: (copy: Uint8Array) => void): void => {
    changes.push([name, (copy) => { change(copy); fixVhdChecksums(copy, places); }]);
  };
  const bothFooters = (copy: Uint8Array, write: (footer: Uint8Array) => void): void => {
    for (const at of places.footers) write(copy.subarray(at, at + 512));
  };
  changes.push(['footers-cookie-flipped', (copy) => { bothFooters(copy, (footer) => { footer[0] = 0x43; }); }]);
  changes.push(['end-footer-checksum-wrong', (copy) => { const at = places.footers[1] ?? 0; copy[at + VHD_FOOTER.checksum] = (copy[at + VHD_FOOTER.checksum] ?? 0) ^ 1; }]);
  changes.push(['footers-checksum-wrong', (copy) => { bothFooters(copy, (footer) => { footer[VHD_FOOTER.checksum] = (footer[VHD_FOOTER.checksum] ?? 0) ^ 1; }); }]);
  for (const type of [2, 5, 0xffffffff]) fixed(`footers-disk-type-${hex(type)}`, (copy) => { bothFooters(copy, (footer) => { setU32BE(footer, VHD_FOOTER.diskType, type); }); });
  const diskSize = getU64BE(plain, VHD_FOOTER.currentSize);
  for (const [label, value] of [['-1', U64_MAX], ['sign-bit', SIGN_BIT], ['2^53-plus-512', (1n << 53n) + 512n], ['0', 0n], ['513', 513n], ['times-1000', diskSize * 1000n]] as const) {
    fixed(`footers-current-size-${label}`, (copy) => { bothFooters(copy, (footer) => { setU64BE(footer, VHD_FOOTER.currentSize, value); }); });
  }
  for (const [label, value] of [['-1', U64_MAX], ['sign-bit', SIGN_BIT], ['file-size', BigInt(plain.length)], ['0', 0n]] as const) {
    fixed(`footers-data-offset-${label}`, (copy) => { bothFooters(copy, (footer) => { setU64BE(footer, VHD_FOOTER.dataOffset, value); }); });
  }
  const header = places.header;
  changes.push(['header-cookie-flipped', (copy) => { copy[header] = 0x43; }]);
  changes.push(['header-checksum-wrong', (copy) => { copy[header + VHD_HEADER.checksum] = (copy[header + VHD_HEADER.checksum] ?? 0) ^ 1; }]);
  for (const [label, value] of [['-1', U64_MAX], ['sign-bit', SIGN_BIT], ['file-size', BigInt(plain.length)], ['file-size-minus-4', BigInt(plain.length - 4)], ['0', 0n]] as const) {
    fixed(`header-table-offset-${label}`, (copy) => { setU64BE(copy, header + VHD_HEADER.tableOffset, value); });
  }
  for (const [label, value] of [['0xffffffff', 0xffffffff], ['sign-bit', 0x80000000], ['0', 0], ['2^20', 1 << 20], ['one-more', places.batEntries + 1]] as const) {
    fixed(`header-max-table-entries-${label}`, (copy) => { setU32BE(copy, header + VHD_HEADER.maxTableEntries, value); });
  }
  for (const [label, value] of [['0', 0], ['512', 512], ['513', 513], ['0xffffffff', 0xffffffff], ['sign-bit', 0x80000000], ['1GiB', 1024 * MIB], ['double', places.blockSize * 2]] as const) {
    fixed(`header-block-size-${label}`, (copy) => { setU32BE(copy, header + VHD_HEADER.blockSize, value); });
  }
  const bat = places.batOffset;
  const sectors = Math.floor(plain.length / 512);
  for (const [label, value] of [['0xfffffffe', 0xfffffffe], ['int32-max', 0x7fffffff], ['0', 0], ['1', 1], ['past-eof', sectors + 8], ['across-eof', sectors - 2]] as const) {
    changes.push([`bat-entry0-${label}`, (copy) => { setU32BE(copy, bat, value); }]);
  }
  changes.push(['bat-dup-block1-on-block0', (copy) => { setU32BE(copy, bat + 4, getU32BEOf(copy, bat)); }]);
  changes.push(['bat-all-on-block0', (copy) => { for (let block = 1; block < places.batEntries; block++) setU32BE(copy, bat + block * 4, getU32BEOf(copy, bat)); }]);
  const block0 = getU32BEOf(plain, bat) * 512;
  const random = seededRandom(seed);
  changes.push(['bitmap0-all-clear', (copy) => { copy.fill(0, block0, block0 + 512); }]);
  changes.push(['data-64-bytes-flipped', (copy) => { flips(copy, random, block0 + 512, block0 + 512 + places.blockSize, 64); }]);
  return changes;
}

function getU32BEOf(bytes: Uint8Array, at: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(at, false);
}

/** Damage to a VHDX's own structures (CRCs fixed where the field must reach the parser). */
function vhdxChanges(plain: Uint8Array, seed: number): [string, Change][] {
  const changes: [string, Change][] = [];
  const headers = (change: (copy: Uint8Array, at: number) => void): Change => (copy) => {
    for (const at of VHDX_HEADERS) change(copy, at);
    fixVhdxHeaders(copy);
  };
  const regions = (change: (copy: Uint8Array) => void): Change => (copy) => {
    change(copy);
    // The second table is a copy of the first.
    copy.copyWithin(VHDX_REGION_TABLES[1], VHDX_REGION_TABLES[0], VHDX_REGION_TABLES[0] + 64 * KIB);
    fixVhdxRegionTables(copy);
  };
  changes.push(['file-identifier-flipped', (copy) => { copy[0] = 0x56; }]);
  changes.push(['header1-crc-wrong', (copy) => { copy[VHDX_HEADERS[0] + 100] = (copy[VHDX_HEADERS[0] + 100] ?? 0) ^ 1; }]);
  changes.push(['headers-crc-wrong', (copy) => { for (const at of VHDX_HEADERS) copy[at + 100] = (copy[at + 100] ?? 0) ^ 1; }]);
  changes.push(['headers-log-guid-set', headers((copy, at) => { copy.fill(0x11, at + VHDX_HEADER.logGuid, at + VHDX_HEADER.logGuid + 16); })]);
  changes.push(['headers-version-2', headers((copy, at) => { setU16LE(copy, at + VHDX_HEADER.version, 2); })]);
  changes.push(['headers-log-offset-sign-bit', headers((copy, at) => { setU64LE(copy, at + VHDX_HEADER.logOffset, SIGN_BIT); })]);
  changes.push(['headers-log-length-0xffffffff', headers((copy, at) => { setU32LE(copy, at + VHDX_HEADER.logLength, 0xffffffff); })]);
  changes.push(['headers-sequence-number-max', headers((copy, at) => { setU64LE(copy, at + VHDX_HEADER.sequenceNumber, U64_MAX); })]);
  changes.push(['region-tables-signature-flipped', (copy) => { for (const at of VHDX_REGION_TABLES) copy[at] = 0x52; }]);
  changes.push(['region-tables-crc-wrong', (copy) => { for (const at of VHDX_REGION_TABLES) copy[at + 200] = (copy[at + 200] ?? 0) ^ 1; }]);
  for (const [label, value] of [['0xffffffff', 0xffffffff], ['2048', 2048], ['0', 0]] as const) {
    changes.push([`region-count-${label}`, regions((copy) => { setU32LE(copy, VHDX_REGION_TABLES[0] + 8, value); })]);
  }
  const batEntry = vhdxRegionEntry(plain, BAT_REGION);
  for (const [label, value] of [['-1', U64_MAX], ['sign-bit', SIGN_BIT], ['file-size', BigInt(plain.length)], ['0', 0n]] as const) {
    changes.push([`region-bat-offset-${label}`, regions((copy) => { setU64LE(copy, batEntry + 16, value); })]);
  }
  for (const [label, value] of [['0', 0], ['0xffffffff', 0xffffffff], ['1MiB-past-eof', Math.ceil(plain.length / MIB) * MIB]] as const) {
    changes.push([`region-bat-length-${label}`, regions((copy) => { setU32LE(copy, batEntry + 24, value); })]);
  }
  const metadataEntry = vhdxRegionEntry(plain, METADATA_REGION);
  changes.push(['region-metadata-offset-sign-bit', regions((copy) => { setU64LE(copy, metadataEntry + 16, SIGN_BIT); })]);
  const metadata = Number(new DataView(plain.buffer, plain.byteOffset).getBigUint64(metadataEntry + 16, true));
  changes.push(['metadata-signature-flipped', (copy) => { copy[metadata] = 0x4e; }]);
  changes.push(['metadata-count-0xffff', (copy) => { setU16LE(copy, metadata + 10, 0xffff); }]);
  const sizeItem = vhdxMetadataItem(plain, VIRTUAL_DISK_SIZE);
  for (const [label, value] of [['-1', U64_MAX], ['sign-bit', SIGN_BIT], ['0', 0n], ['513', 513n], ['2^52', 1n << 52n]] as const) {
    changes.push([`metadata-disk-size-${label}`, (copy) => { setU64LE(copy, sizeItem, value); }]);
  }
  changes.push(['metadata-disk-size-item-offset-0xffffffff', (copy) => { setU32LE(copy, vhdxMetadataEntry(copy, VIRTUAL_DISK_SIZE) + 16, 0xffffffff); }]);
  const parameters = vhdxMetadataItem(plain, FILE_PARAMETERS);
  for (const [label, value] of [['0', 0], ['3', 3], ['sign-bit', 0x80000000], ['0xffffffff', 0xffffffff]] as const) {
    changes.push([`metadata-block-size-${label}`, (copy) => { setU32LE(copy, parameters, value); }]);
  }
  changes.push(['metadata-has-parent-without-locator', (copy) => { setU32LE(copy, parameters + 4, getU32LE(copy, parameters + 4) | 2); }]);
  const sectorSize = vhdxMetadataItem(plain, LOGICAL_SECTOR_SIZE);
  for (const value of [0, 7, 0xffffffff]) changes.push([`metadata-sector-size-${hex(value)}`, (copy) => { setU32LE(copy, sectorSize, value); }]);
  const bat0 = vhdxBatEntry(plain, 0);
  const eofMegabytes = BigInt(Math.ceil(plain.length / MIB));
  for (const [label, value] of [
    ['offset-max', vhdxBatValue(6, (1n << 44n) - 1n)], ['offset-past-eof', vhdxBatValue(6, eofMegabytes + 1n)], ['offset-0', vhdxBatValue(6, 0n)], ['offset-on-bat', vhdxBatValue(6, 3n)],
    ['state-7-without-bitmap', (getU64LEOf(plain, bat0) & ~7n) | 7n], ['state-4', (getU64LEOf(plain, bat0) & ~7n) | 4n], ['state-5', (getU64LEOf(plain, bat0) & ~7n) | 5n], ['-1', U64_MAX],
  ] as const) {
    changes.push([`bat-entry0-${label}`, (copy) => { setU64LE(copy, bat0, value); }]);
  }
  changes.push(['bat-dup-block1-on-block0', (copy) => { setU64LE(copy, vhdxBatEntry(copy, 1), getU64LEOf(copy, bat0)); }]);
  const payload0 = Number(getU64LEOf(plain, bat0) >> 20n) * MIB;
  const random = seededRandom(seed);
  changes.push(['payload-64-bytes-flipped', (copy) => { flips(copy, random, payload0, payload0 + MIB, 64); }]);
  return changes;
}

function getU64LEOf(bytes: Uint8Array, at: number): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(at, true);
}

// ---- chains ------------------------------------------------------------------------------------

interface ChainImages {
  readonly parent: WrittenImage;
  /** A differencing child of `parent` (plain VHD). */
  readonly child: WrittenImage;
}

function vhdChain(bases: Bases, parentRelative: string, seed: number, wrongId = false): ChainImages {
  const parent = bases.vhd;
  const child = writeUrbackupImage(bases.volume2, blocksOf(bases.volume2, bases.volume1), {
    random: seededRandom(seed),
    parent: {
      path: recordedPath(parentRelative),
      uniqueId: wrongId ? new Uint8Array(16).fill(0x77) : parent.uniqueId,
      timeStamp: parent.timeStamp,
      size: parent.diskSize,
    },
  });
  return { parent, child };
}

/** A differencing VHD whose parent is itself (Unique Id), named `parentName`. */
function selfParentVhd(child: Uint8Array, parentName: string): Uint8Array {
  const copy = child.slice();
  const places = vhdPlaces(copy);
  copy.copyWithin(places.header + VHD_HEADER.parentUniqueId, VHD_FOOTER.uniqueId, VHD_FOOTER.uniqueId + 16);
  setVhdParentName(copy, parentName, places);
  fixVhdChecksums(copy, places);
  return copy;
}

/** Two differencing VHDs, each the other's parent by Unique Id, with the given parent names. */
function twoCycleVhds(a: Uint8Array, b: Uint8Array, nameInA: string, nameInB: string): [Uint8Array, Uint8Array] {
  const first = a.slice();
  const second = b.slice();
  const placesA = vhdPlaces(first);
  const placesB = vhdPlaces(second);
  first.set(second.subarray(VHD_FOOTER.uniqueId, VHD_FOOTER.uniqueId + 16), placesA.header + VHD_HEADER.parentUniqueId);
  second.set(first.subarray(VHD_FOOTER.uniqueId, VHD_FOOTER.uniqueId + 16), placesB.header + VHD_HEADER.parentUniqueId);
  setVhdParentName(first, nameInA, placesA);
  setVhdParentName(second, nameInB, placesB);
  fixVhdChecksums(first, placesA);
  fixVhdChecksums(second, placesB);
  return [first, second];
}

function chainMutations(bases: Bases, seed: number): Mutation[] {
  const out: Mutation[] = [];
  const parentGood = (client: string, format: 'vhd' | 'vhdz' | 'vhdx'): GoodBackup => ({
    folder: folderOf(client, PARENT_TS),
    image: imageOf(client, PARENT_TS, format),
    format,
    truth: truthDisk(bases.volume1),
  });
  const parentBytes = (format: 'vhd' | 'vhdz' | 'vhdx'): Uint8Array => (format === 'vhd' ? bases.vhd.bytes : format === 'vhdz' ? bases.vhdz.bytes : bases.vhdx);
  /** A child in CHILD_TS, its parent (intact unless told) in PARENT_TS. */
  const chain = (
    name: string,
    format: Mutation['format'],
    parentFormat: 'vhd' | 'vhdz' | 'vhdx',
    childBytes: (parentImage: string) => Uint8Array,
    options: { parentFiles?: (parentImage: string) => PlannedFile[]; parentIsGood?: boolean; culprits?: (parentImage: string) => string[] } = {},
  ): void => {
    const parentImage = imageOf(name, PARENT_TS, parentFormat);
    const image = imageOf(name, CHILD_TS, format);
    const parentIsGood = options.parentIsGood ?? true;
    // A parent with no files is no backup folder at all: only the child's folder is reported on.
    const parentExists = options.parentFiles === undefined || options.parentFiles(parentImage).length > 0;
    out.push({
      name,
      target: folderOf(name, CHILD_TS),
      image,
      format,
      folders: parentExists ? [folderOf(name, PARENT_TS), folderOf(name, CHILD_TS)] : [folderOf(name, CHILD_TS)],
      culprits: [image, ...(options.culprits?.(parentImage) ?? [])],
      good: parentIsGood ? [parentGood(name, parentFormat)] : [],
      build: () => [...(options.parentFiles?.(parentImage) ?? backupFiles(parentImage, parentBytes(parentFormat))), ...backupFiles(image, childBytes(parentImage))],
    });
  };
  const compress = (bytes: Uint8Array): Uint8Array => encodeContainer(bytes);
  chain('chain-vhd-child-wrong-parent-unique-id', 'vhd', 'vhd', (parentImage) => vhdChain(bases, parentImage, seed + 1, true).child.bytes);
  chain('chain-vhdz-child-wrong-parent-unique-id', 'vhdz', 'vhd', (parentImage) => compress(vhdChain(bases, parentImage, seed + 2, true).child.bytes));
  chain('chain-vhd-child-parent-missing', 'vhd', 'vhd', (parentImage) => vhdChain(bases, parentImage, seed + 3).child.bytes, { parentFiles: () => [], parentIsGood: false });
  chain('chain-vhd-child-parent-truncated', 'vhd', 'vhd', (parentImage) => vhdChain(bases, parentImage, seed + 4).child.bytes, {
    parentFiles: (parentImage) => backupFiles(parentImage, bases.vhd.bytes.slice(0, 700 * KIB)),
    parentIsGood: false,
    culprits: (parentImage) => [parentImage],
  });
  chain('chain-vhd-child-parent-name-empty', 'vhd', 'vhd', (parentImage) => {
    const child = vhdChain(bases, parentImage, seed + 5).child.bytes.slice();
    setVhdParentName(child, '');
    fixVhdChecksums(child);
    return child;
  });
  chain('chain-vhd-child-parent-name-escapes-root', 'vhd', 'vhd', (parentImage) => {
    const child = vhdChain(bases, parentImage, seed + 6).child.bytes.slice();
    setVhdParentName(child, '../../../../../../../../etc/passwd');
    fixVhdChecksums(child);
    return child;
  });
  chain('chain-vhd-child-parent-name-is-a-folder', 'vhd', 'vhd', (parentImage) => {
    const child = vhdChain(bases, parentImage, seed + 7).child.bytes.slice();
    setVhdParentName(child, `../${PARENT_TS}_Image_C`);
    fixVhdChecksums(child);
    return child;
  });
  // Loops. A file that is its own parent, reached through `<folder>/../<folder>/`: every level
  // names it by a longer path.
  const loopName = `../${CHILD_TS}_Image_C/../${CHILD_TS}_Image_C/Image_C_${CHILD_TS}`;
  chain('loop-vhd-own-parent-through-dotdot', 'vhd', 'vhd', (parentImage) => selfParentVhd(vhdChain(bases, parentImage, seed + 8).child.bytes, `${loopName}.vhd`));
  chain('loop-vhdz-own-parent-through-dotdot', 'vhdz', 'vhd', (parentImage) => compress(selfParentVhd(vhdChain(bases, parentImage, seed + 9).child.bytes, `${loopName}.vhdz`)));
  // Two files, each the other's parent.
  {
    const name = 'loop-vhdz-two-files-through-dotdot';
    const a = imageOf(name, PARENT_TS, 'vhdz');
    const b = imageOf(name, CHILD_TS, 'vhdz');
    out.push({
      name,
      target: folderOf(name, CHILD_TS),
      image: b,
      format: 'vhdz',
      folders: [folderOf(name, PARENT_TS), folderOf(name, CHILD_TS)],
      culprits: [a, b],
      good: [],
      build: () => {
        const one = vhdChain(bases, a, seed + 10).child.bytes;
        const two = vhdChain(bases, b, seed + 11).child.bytes;
        const [first, second] = twoCycleVhds(one, two, `../${CHILD_TS}_Image_C/Image_C_${CHILD_TS}.vhdz`, `../${PARENT_TS}_Image_C/../${PARENT_TS}_Image_C/Image_C_${PARENT_TS}.vhdz`);
        return [...backupFiles(a, compress(first)), ...backupFiles(b, compress(second))];
      },
    });
  }
  // A file that is its own parent through a hard link in another backup folder.
  for (const format of ['vhd', 'vhdz'] as const) {
    const name = `loop-${format}-own-parent-through-hard-link`;
    const link = imageOf(name, PARENT_TS, format);
    const image = imageOf(name, CHILD_TS, format);
    out.push({
      name,
      target: folderOf(name, CHILD_TS),
      image,
      format,
      folders: [folderOf(name, PARENT_TS), folderOf(name, CHILD_TS)],
      culprits: [image, link],
      good: [],
      build: () => {
        const self = selfParentVhd(vhdChain(bases, link, seed + 12).child.bytes, `../${PARENT_TS}_Image_C/Image_C_${PARENT_TS}.${format}`);
        return [
          ...backupFiles(image, format === 'vhdz' ? compress(self) : self),
          { kind: 'hardlink', path: link, target: image },
          { kind: 'bytes', path: `${link}.mbr`, bytes: MBR_FILE },
          { kind: 'bytes', path: `${link}.sync`, bytes: new Uint8Array(0) },
        ];
      },
    });
  }
  // A VHDX child linked to its own DataWriteGuid, its relative_path a hard link to itself.
  for (const format of ['vhdx', 'vhdxz'] as const) {
    const name = `loop-${format}-own-parent-through-hard-link`;
    const link = imageOf(name, PARENT_TS, format);
    const image = imageOf(name, CHILD_TS, format);
    out.push({
      name,
      target: folderOf(name, CHILD_TS),
      image,
      format,
      folders: [folderOf(name, PARENT_TS), folderOf(name, CHILD_TS)],
      culprits: [image, link],
      good: [],
      build: () => {
        const linkage = new Uint8Array(16).map((_, index) => 0x40 + index);
        const child = writeUrbackupVhdxImage(bases.volume2, blocksOf(bases.volume2, bases.volume1), {
          random: seededRandom(seed + 13),
          parent: { path: recordedPath(link), dataWriteGuid: linkage },
        }).bytes.slice();
        for (const at of VHDX_HEADERS) child.set(linkage, at + VHDX_HEADER.dataWriteGuid);
        fixVhdxHeaders(child);
        return [
          ...backupFiles(image, format === 'vhdxz' ? compress(child) : child),
          { kind: 'hardlink', path: link, target: image },
          { kind: 'bytes', path: `${link}.mbr`, bytes: MBR_FILE },
          { kind: 'bytes', path: `${link}.sync`, bytes: new Uint8Array(0) },
        ];
      },
    });
  }
  chain('chain-vhdxz-child-wrong-parent-linkage', 'vhdxz', 'vhdx', (parentImage) =>
    writeUrbackupVhdxImage(bases.volume2, blocksOf(bases.volume2, bases.volume1), {
      random: seededRandom(seed + 14),
      compressed: { codec: 'zlib' },
      parent: { path: recordedPath(parentImage), dataWriteGuid: new Uint8Array(16).fill(0x33) },
    }).bytes,
  );
  // Parents that are symbolic links out of the root: the file, or its whole backup folder.
  const vhdChild = (parentImage: string, salt: number): Uint8Array => vhdChain(bases, parentImage, seed + salt).child.bytes;
  chain('escape-vhd-parent-file-is-symlink-out-of-root', 'vhd', 'vhd', (parentImage) => vhdChild(parentImage, 15), {
    parentFiles: (parentImage) => [
      { kind: 'outside', path: 'parent-copy.vhd', bytes: bases.vhd.bytes },
      { kind: 'symlink', path: parentImage, target: 'parent-copy.vhd' },
      { kind: 'bytes', path: `${parentImage}.mbr`, bytes: MBR_FILE },
      { kind: 'bytes', path: `${parentImage}.sync`, bytes: new Uint8Array(0) },
    ],
    parentIsGood: false,
    culprits: (parentImage) => [parentImage],
  });
  chain('escape-vhdz-parent-folder-is-symlink-out-of-root', 'vhdz', 'vhd', (parentImage) => compress(vhdChild(parentImage, 16)), {
    parentFiles: (parentImage) => [
      ...backupFiles(parentImage, bases.vhd.bytes).map((file): PlannedFile => ({ kind: 'outside', path: `parent-folder/${file.path.split('/').at(-1) ?? ''}`, bytes: file.kind === 'bytes' ? file.bytes : new Uint8Array(0) })),
      { kind: 'symlink', path: dirname(parentImage), target: 'parent-folder' },
    ],
    parentIsGood: false,
    culprits: (parentImage) => [parentImage],
  });
  chain('escape-vhdxz-parent-file-is-symlink-out-of-root', 'vhdxz', 'vhdx', (parentImage) =>
    writeUrbackupVhdxImage(bases.volume2, blocksOf(bases.volume2, bases.volume1), {
      random: seededRandom(seed + 17),
      compressed: { codec: 'zlib' },
      parent: { path: recordedPath(parentImage), dataWriteGuid: bases.vhdxDataWriteGuid },
    }).bytes,
  {
    parentFiles: (parentImage) => [
      { kind: 'outside', path: 'parent-copy.vhdx', bytes: bases.vhdx },
      { kind: 'symlink', path: parentImage, target: 'parent-copy.vhdx' },
      { kind: 'bytes', path: `${parentImage}.mbr`, bytes: MBR_FILE },
      { kind: 'bytes', path: `${parentImage}.sync`, bytes: new Uint8Array(0) },
    ],
    parentIsGood: false,
    culprits: (parentImage) => [parentImage],
  });
  return out;
}

// ---- the catalogue -----------------------------------------------------------------------------

/** Picks `count` of `items`, spread evenly (deterministic). */
function spread<T>(items: readonly T[], count: number): T[] {
  if (items.length <= count) return [...items];
  return Array.from({ length: count }, (_, index) => items[Math.floor((index * items.length) / count)] as T);
}

/** Good backups and the mutations, for `seed`. */
export function makeCatalogue(seed = 19): Catalogue {
  const bases = makeBases(seed);
  const truth = truthDisk(bases.volume1);
  const good: GoodBackup[] = [];
  const goodBytes = new Map<string, Uint8Array>();
  const addGood = (format: ImageFormat, client: string, bytes: Uint8Array): void => {
    const image = imageOf(client, SINGLE_TS, format);
    good.push({ folder: folderOf(client, SINGLE_TS), image, format, truth });
    goodBytes.set(image, bytes);
  };
  addGood('raw', 'good-raw', bases.raw);
  addGood('vhd', 'good-vhd', bases.vhd.bytes);
  addGood('vhdz', 'good-vhdz-zstd', bases.vhdz.bytes);
  addGood('vhdz', 'good-vhdz-zlib-v1.0', bases.vhdzZlib10.bytes);
  addGood('vhdx', 'good-vhdx', bases.vhdx);
  addGood('vhdxz', 'good-vhdxz', bases.vhdxz);
  // A good chain: a VHDZ child of a VHD parent.
  const chainParent = imageOf('good-chain-vhdz', PARENT_TS, 'vhd');
  const chainChild = imageOf('good-chain-vhdz', CHILD_TS, 'vhdz');
  good.push({ folder: folderOf('good-chain-vhdz', PARENT_TS), image: chainParent, format: 'vhd', truth });
  good.push({ folder: folderOf('good-chain-vhdz', CHILD_TS), image: chainChild, format: 'vhdz', truth: truthDisk(bases.volume2) });
  const goodChild = writeUrbackupImage(bases.volume2, blocksOf(bases.volume2, bases.volume1), {
    random: seededRandom(seed + 20),
    compressed: { codec: 'zlib' },
    parent: { path: recordedPath(chainParent), uniqueId: bases.vhd.uniqueId, timeStamp: bases.vhd.timeStamp, size: bases.vhd.diskSize },
  });
  goodBytes.set(chainParent, bases.vhd.bytes);
  goodBytes.set(chainChild, goodChild.bytes);

  const mutations: Mutation[] = [];
  const vhdzBase = (): Uint8Array => bases.vhdz.bytes;
  const vhdz = readContainer(bases.vhdz.bytes);
  const firstRecord = vhdz.offsets[0] ?? 0;
  mutations.push(
    ...truncations('vhdz', 'vhdz', vhdzBase, [0, 1, 28, 29, 37, 45, 49, 50, firstRecord + 4, firstRecord + 8, firstRecord + 100, vhdz.indexOffset, vhdz.indexOffset + 1, vhdz.indexOffset + 8, bases.vhdz.bytes.length - 1], seed + 30, 4),
  );
  mutations.push(...containerMutations('vhdz', 'vhdz', vhdzBase, bases.vhdz, seed + 31));
  mutations.push(...spread(containerMutations('vhdz-zlib-v1.0', 'vhdz', () => bases.vhdzZlib10.bytes, bases.vhdzZlib10, seed + 32), 10));
  mutations.push(...spread(containerMutations('vhdxz', 'vhdxz', () => bases.vhdxz, undefined, seed + 33), 12));
  const vhdxz = readContainer(bases.vhdxz);
  mutations.push(...truncations('vhdxz', 'vhdxz', () => bases.vhdxz, [49, 50, vhdxz.indexOffset + 3], seed + 34, 3));
  // The VHD inside: as a .vhd, and wrapped again as a .vhdz.
  const vhd = vhdChanges(bases.vhd.bytes, seed + 35);
  for (const [label, change] of vhd) mutations.push(single(`vhd-${label}`, 'vhd', () => bases.vhd.bytes, change));
  for (const [label, change] of spread(vhd, 24)) mutations.push(single(`vhdz-inner-vhd-${label}`, 'vhdz', () => bases.vhd.bytes, (copy) => encodeContainer(change(copy) ?? copy)));
  const vhdPlacesOf = vhdPlaces(bases.vhd.bytes);
  mutations.push(
    ...truncations('vhd', 'vhd', () => bases.vhd.bytes, [0, 511, 512, 1535, vhdPlacesOf.batOffset + 4, 2048, 2560, bases.vhd.bytes.length - 512, bases.vhd.bytes.length - 1], seed + 36, 3),
  );
  // The VHDX inside: as a .vhdx, and wrapped again as a .vhdxz.
  const vhdx = vhdxChanges(bases.vhdx, seed + 37);
  for (const [label, change] of spread(vhdx, 30)) mutations.push(single(`vhdx-${label}`, 'vhdx', () => bases.vhdx, change));
  for (const [label, change] of spread(vhdx.slice(1), 18)) mutations.push(single(`vhdxz-inner-vhdx-${label}`, 'vhdxz', () => bases.vhdx, (copy) => encodeContainer(change(copy) ?? copy)));
  mutations.push(...truncations('vhdx', 'vhdx', () => bases.vhdx, [0, 8, 64 * KIB, 64 * KIB + 100, 192 * KIB, 2 * MIB, 3 * MIB + 8, 4 * MIB, bases.vhdx.length - 1], seed + 38, 0));
  mutations.push(...chainMutations(bases, seed + 40));
  const names = new Set<string>();
  for (const mutation of mutations) {
    if (names.has(mutation.name)) throw new Error(`two mutations named ${mutation.name}`);
    names.add(mutation.name);
  }
  const goodFiles = (): PlannedFile[] => [...goodBytes].flatMap(([image, bytes]) => backupFiles(image, bytes));
  return { good, goodFiles, mutations };
}

// ---- writing -----------------------------------------------------------------------------------

const SPARSE_CHUNK = 64 * KIB;
const ZERO_CHUNK = Buffer.alloc(SPARSE_CHUNK);

/** Writes `bytes` to `path` leaving all-zero 64 KiB chunks as holes. */
async function writeSparse(path: string, bytes: Uint8Array): Promise<void> {
  const handle = await open(path, 'w');
  try {
    for (let at = 0; at < bytes.length; at += SPARSE_CHUNK) {
      const chunk = bytes.subarray(at, Math.min(at + SPARSE_CHUNK, bytes.length));
      if (!Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length).equals(ZERO_CHUNK.subarray(0, chunk.length))) await handle.write(chunk, 0, chunk.length, at);
    }
    await handle.truncate(bytes.length);
  } finally {
    await handle.close();
  }
}

/** Writes `files` under `root` (links to `<outside>/…` for symlinks). */
export async function writeFiles(root: string, outside: string, files: readonly PlannedFile[]): Promise<void> {
  for (const file of files) {
    const base = file.kind === 'outside' ? outside : root;
    const path = join(base, file.path);
    await mkdir(dirname(path), { recursive: true });
    if (file.kind === 'bytes' || file.kind === 'outside') await writeSparse(path, file.bytes);
    else if (file.kind === 'hardlink') await link(join(root, file.target), path);
    else await symlink(join(outside, file.target), path);
  }
}

/** Writes one mutation's client (its own outside folder: `<outside>/<name>`). */
export async function writeMutation(root: string, outside: string, mutation: Mutation): Promise<void> {
  await writeFiles(root, join(outside, mutation.name), mutation.build());
}
