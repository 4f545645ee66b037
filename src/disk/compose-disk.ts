// SPDX-License-Identifier: MIT
/**
 * Composes a whole disk from the volumes of one backup run (docs/architecture.md §4):
 * the saved LBA0 and GPT copies at their saved positions, each volume at its partition's
 * offset (checked: the entry exists, is long enough, the serial matches), the NTFS backup boot
 * sector right after the volume, zeros everywhere else. Holes of the `.raw` files stay zero
 * extents. Pure: everything it needs was loaded by urbackup/.
 *
 * Each extent says what it is (docs/architecture.md §10): the saved table copies by name
 * (`backup GPT header`), a volume's range as `C: .raw` and its holes as `zeros: hole in C: .raw`,
 * `C: NTFS backup boot sector`, partitions nobody backed up as `zeros: partition 2, MSR (not
 * backed up)`, and `zeros: outside partitions` for the rest.
 */
import { createHash } from 'node:crypto';
import { fileError, internalError, SynthvhdError } from '../errors/synthvhd-error.js';
import { type Extent, sliceExtent, sliceLayout, extentEnd } from '../extents/extent.js';
import { LayoutBuilder } from '../extents/layout-builder.js';
import type { DiskSource } from '../urbackup/group-disks.js';
import type { LoadedVolume } from '../urbackup/load-volume.js';
import type { MbrData } from '../urbackup/mbr-data.js';
import { readBootSector } from './boot-sector.js';
import type { DiskImage } from './disk-image.js';
import type { Partition } from './partition.js';
import { partitionTypeName } from './partition-names.js';
import { type DiskTable, findPartition, readDiskTable } from './partition-table.js';

export interface PlacedVolume {
  readonly volume: LoadedVolume;
  readonly partition: Partition;
}

export interface UnplacedVolume {
  readonly path: string;
  readonly reason: string;
}

export interface ComposedDisk {
  readonly image: DiskImage;
  /** undefined for a whole-disk image (`.raw.mbr` version 100). */
  readonly table: DiskTable | undefined;
  readonly placed: readonly PlacedVolume[];
  readonly unplaced: readonly UnplacedVolume[];
  readonly notes: readonly string[];
}

function requireMbrData(volume: LoadedVolume): MbrData {
  if (volume.mbrData === undefined) throw fileError('E_PLACEMENT', volume.backup.mbrPath, 'is a whole-disk image, not a volume');
  return volume.mbrData;
}

function describePartitionGap(table: DiskTable, number: number): string {
  const count = table.partitions.length;
  if (table.kind === 'mbr' && table.hasExtended && number > count) {
    return `partition ${number} is a logical partition inside an extended partition: urBackup saves only LBA0, not the EBRs, so it cannot be placed`;
  }
  return `partition ${number} is not in the saved ${table.kind.toUpperCase()} table (it lists ${count} partition${count === 1 ? '' : 's'})`;
}

/** Finds and checks the partition of one volume; throws E_PLACEMENT / E_RAW_IMAGE naming the file. */
export function placeVolume(table: DiskTable, volume: LoadedVolume): Partition {
  const data = requireMbrData(volume);
  const { rawPath, mbrPath } = volume.backup;
  const partition = findPartition(table, data.partitionNumber);
  if (partition === undefined) throw fileError('E_PLACEMENT', mbrPath, describePartitionGap(table, data.partitionNumber));
  if (partition.offset + partition.length > table.diskSize) {
    throw fileError('E_PLACEMENT', mbrPath, `partition ${partition.number} ends at byte ${partition.offset + partition.length}, past the disk's end (${table.diskSize})`);
  }
  if (volume.volumeLength > partition.length) {
    throw fileError('E_PLACEMENT', rawPath, `volume is ${volume.volumeLength} bytes but partition ${partition.number} is only ${partition.length} bytes`);
  }
  const boot = readBootSector(volume.bootSector);
  if (boot.length !== undefined && boot.length > volume.volumeLength) {
    throw fileError('E_RAW_IMAGE', rawPath, `shorter than its volume: the ${boot.fs.toUpperCase()} boot sector says ${boot.length} bytes, the image holds ${volume.volumeLength}`);
  }
  // Windows clients save the serial as a decimal string (docs/urbackup-formats.md §3.3 field 5); Linux
  // clients save a UUID, which the boot sector cannot confirm.
  if (/^\d+$/.test(data.serialNumber) && boot.serial !== undefined && Number(data.serialNumber) !== boot.serial) {
    throw fileError('E_PLACEMENT', rawPath, `serial mismatch: ${mbrPath.replace(/.*\//, '')} says ${data.serialNumber}, the ${boot.fs.toUpperCase()} boot sector has ${boot.serial}`);
  }
  return partition;
}

/** A companion must agree with the anchor's table about its own partition. */
function checkCompanionTable(table: DiskTable, volume: LoadedVolume, partition: Partition): void {
  const own = readDiskTable(requireMbrData(volume), volume.backup.mbrPath);
  const ownPartition = findPartition(own, partition.number);
  if (ownPartition?.offset !== partition.offset || ownPartition.length !== partition.length) {
    throw fileError('E_PLACEMENT', volume.backup.mbrPath, `partition ${partition.number} differs from the table saved with the drive-letter backup: the disk was repartitioned between the backups`);
  }
  if (own.sectorSize !== table.sectorSize) throw fileError('E_PLACEMENT', volume.backup.mbrPath, 'sector size differs from the drive-letter backup');
}

interface Piece {
  readonly start: number;
  readonly extent: Extent;
}

/** Paints `piece` over `pieces`: what it overlaps is cut away (later pieces win). */
function paint(pieces: Piece[], extent: Extent): Piece[] {
  const start = extent.start;
  const end = extentEnd(extent);
  const result: Piece[] = [];
  for (const piece of pieces) {
    const old = piece.extent;
    const oldEnd = extentEnd(old);
    if (oldEnd <= start || old.start >= end) {
      result.push(piece);
      continue;
    }
    if (old.start < start) result.push({ start: old.start, extent: sliceExtent(old, old.start, start - old.start, old.start) });
    if (oldEnd > end) result.push({ start: end, extent: sliceExtent(old, end, oldEnd - end, end) });
  }
  result.push({ start, extent });
  return result;
}

function bytesExtent(start: number, data: Uint8Array, what: string): Extent {
  return { kind: 'bytes', start, length: data.length, data, what };
}

/** Zeros between and after partitions and tables. */
const OUTSIDE_PARTITIONS = 'zeros: outside partitions';
/** The description of a whole-disk image's `.raw` (`.raw.mbr` version 100). */
const WHOLE_DISK_RAW = 'whole-disk .raw';

/** `C:` for a drive letter, `ESP` / `SYSVOL` as they are. */
function volumeName(volume: LoadedVolume): string {
  const letter = volume.backup.letter;
  return letter.length === 1 ? `${letter}:` : letter;
}

/** How a volume's `.raw` range is described: `C: .raw` (`C: .vhdz`); its holes are `zeros: hole in C: .raw`. */
function rawDescription(volume: LoadedVolume): string {
  return `${volumeName(volume)} .${volume.backup.format ?? 'raw'}`;
}

/**
 * Appends a volume's range of its `.raw`, as file extents where the file has data, zero elsewhere.
 * A VHD/VHDZ/VHDX(Z) backup brings its volume as extents already (chains resolved, compressed
 * blocks as `compressed` extents; docs/urbackup-image-formats.md): those are spliced in.
 */
function appendVolume(builder: LayoutBuilder, volume: LoadedVolume, rawOffset: number, length: number, what: string): void {
  if (volume.image !== undefined) {
    for (const extent of sliceLayout(volume.image.layout, rawOffset, length, 0)) builder.append(extent);
    return;
  }
  const hole = `zeros: hole in ${what}`;
  const end = rawOffset + length;
  let position = rawOffset;
  for (const range of volume.dataRanges) {
    const rangeEnd = range.offset + range.length;
    if (rangeEnd <= position) continue;
    if (range.offset >= end) break;
    const from = Math.max(position, range.offset);
    const to = Math.min(end, rangeEnd);
    builder.zero(from - position, hole).file(volume.backup.rawPath, from, to - from, what);
    position = to;
  }
  builder.zero(end - position, hole);
}

function buildLayout(diskSize: number, pieces: readonly Piece[], volumesByPath: ReadonlyMap<string, LoadedVolume>): LayoutBuilder {
  const builder = new LayoutBuilder();
  for (const { start, extent } of [...pieces].sort((a, b) => a.start - b.start)) {
    if (start >= diskSize) continue;
    const clipped = extentEnd(extent) > diskSize ? sliceExtent(extent, start, diskSize - start, start) : extent;
    builder.zeroTo(start, OUTSIDE_PARTITIONS);
    if (clipped.kind === 'file') {
      const volume = volumesByPath.get(clipped.path);
      if (volume === undefined) builder.append(clipped);
      else appendVolume(builder, volume, clipped.offset, clipped.length, clipped.what);
    } else {
      builder.append(clipped);
    }
  }
  builder.zeroTo(diskSize, OUTSIDE_PARTITIONS);
  return builder;
}

function mbrBytesOf(volume: LoadedVolume): Uint8Array {
  // Only a summary (ls, doctor) loads volumes without their `.raw.mbr` bytes, and it never
  // derives a disk's identity (it is computed on first use).
  if (volume.mbrBytes === undefined) throw internalError(`${volume.backup.mbrPath}: a disk identity from a summary load`);
  return volume.mbrBytes;
}

function diskIdentity(source: DiskSource, placed: readonly PlacedVolume[]): Uint8Array {
  const hash = createHash('sha256').update('synthvhd disk v1\0').update(mbrBytesOf(source.anchor));
  for (const { volume, partition } of placed) {
    hash.update(`\0${partition.number}\0${volume.backup.letter}\0${volume.backup.timestamp}\0${volume.rawSize}\0${Math.floor(volume.mtimeMs)}\0`);
    hash.update(mbrBytesOf(volume));
  }
  return new Uint8Array(hash.digest());
}

function composeWholeDisk(source: DiskSource): ComposedDisk {
  const volume = source.anchor;
  const size = volume.image === undefined ? volume.rawSize : volume.volumeLength;
  if (size % 512 !== 0) throw fileError('E_RAW_IMAGE', volume.backup.rawPath, `whole-disk image of ${size} bytes is not a whole number of sectors`);
  const builder = new LayoutBuilder();
  appendVolume(builder, volume, 0, size, WHOLE_DISK_RAW);
  return {
    image: { layout: builder.build(), sectorSize: 512, identity: diskIdentity(source, []), mtimeMs: volume.mtimeMs },
    table: undefined,
    placed: [],
    unplaced: [],
    notes: ['whole-disk image (.raw.mbr version 100): served as it is'],
  };
}

/**
 * The same disk with its identity hashed now and the saved `.raw.mbr` files it was hashed from
 * let go. A long-lived holder (the mount's disk cache, thousands of disks) keeps this form: the
 * files are only needed for the identity (34 KiB each for a GPT disk, twice that per disk with
 * an ESP), and a closure over them (the lazy getter above) would keep them all alive.
 */
export function withSettledIdentity(disk: ComposedDisk): ComposedDisk {
  const { layout, sectorSize, identity, mtimeMs } = disk.image;
  return {
    ...disk,
    image: { layout, sectorSize, identity, mtimeMs },
    placed: disk.placed.map(({ volume, partition }) => ({ volume: { ...volume, mbrBytes: undefined }, partition })),
  };
}

export function composeDisk(source: DiskSource): ComposedDisk {
  const anchor = source.anchor;
  if (anchor.mbrData === undefined) return composeWholeDisk(source);
  const table = readDiskTable(anchor.mbrData, anchor.backup.mbrPath);
  const placed: PlacedVolume[] = [{ volume: anchor, partition: placeVolume(table, anchor) }];
  const unplaced: UnplacedVolume[] = [];
  const unplacedNumbers = new Set<number>();
  for (const companion of source.companions) {
    try {
      const partition = placeVolume(table, companion);
      checkCompanionTable(table, companion, partition);
      placed.push({ volume: companion, partition });
    } catch (error) {
      if (!(error instanceof SynthvhdError)) throw error;
      unplaced.push({ path: error.path ?? companion.backup.rawPath, reason: error.message });
      if (companion.mbrData !== undefined) unplacedNumbers.add(companion.mbrData.partitionNumber);
    }
  }
  placed.sort((a, b) => a.partition.offset - b.partition.offset);

  let pieces: Piece[] = [];
  // Partitions without a placed volume first, so the saved table copies still win over them.
  const placedNumbers = new Set(placed.map(({ partition }) => partition.number));
  for (const partition of table.partitions) {
    if (placedNumbers.has(partition.number) || partition.length === 0) continue;
    const why = unplacedNumbers.has(partition.number) ? 'its backup could not be placed' : 'not backed up';
    const what = `zeros: partition ${partition.number}, ${partitionTypeName(table.kind, partition.type)} (${why})`;
    pieces = paint(pieces, { kind: 'zero', start: partition.offset, length: partition.length, what });
  }
  for (const piece of table.pieces) pieces = paint(pieces, bytesExtent(piece.position, piece.data, piece.what));
  for (const { volume, partition } of placed) {
    const name = volumeName(volume);
    pieces = paint(pieces, { kind: 'zero', start: partition.offset, length: partition.length, what: `zeros: partition ${partition.number} past the ${name} volume` });
    pieces = paint(pieces, { kind: 'file', start: partition.offset, length: volume.volumeLength, path: volume.backup.rawPath, offset: volume.volumeOffset, what: rawDescription(volume) });
    // NTFS keeps a copy of its boot sector in the sector right after the volume, normally the
    // partition's last sector; the client's image stops before it (docs/urbackup-formats.md §2.4).
    const boot = readBootSector(volume.bootSector);
    const backupBootEnd = volume.volumeLength + boot.bytesPerSector;
    if (boot.fs === 'ntfs' && boot.length === volume.volumeLength && backupBootEnd <= partition.length) {
      pieces = paint(pieces, bytesExtent(partition.offset + volume.volumeLength, volume.bootSector.slice(0, boot.bytesPerSector), `${name} NTFS backup boot sector`));
    }
  }
  const volumesByPath = new Map(placed.map(({ volume }) => [volume.backup.rawPath, volume]));
  const layout = buildLayout(table.diskSize, pieces, volumesByPath).build(table.diskSize);
  let identity: Uint8Array | undefined;
  return {
    image: {
      layout,
      sectorSize: table.sectorSize,
      // Hashed on first use: ls and doctor never need it, and hashing every saved table of
      // 10 000 disks costs seconds.
      get identity(): Uint8Array {
        identity ??= diskIdentity(source, placed);
        return identity;
      },
      mtimeMs: Math.max(...placed.map(({ volume }) => volume.mtimeMs)),
    },
    table,
    placed,
    unplaced,
    notes: table.notes,
  };
}
