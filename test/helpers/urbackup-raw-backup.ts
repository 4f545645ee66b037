// SPDX-License-Identifier: MIT
/**
 * A urBackup RAW image backup of one partition of a real disk image, written from the format
 * notes (docs/urbackup-formats.md) and nothing of synthvhd's: the folder and names (§1.1), the
 * side files (§1.2: `.raw.mbr`, `.raw.hash`, `.raw.sync`), the `.raw` with its synthetic MBR and
 * the volume at 512 KiB (§2.2), and the SMBRData the client sends (§3.2, §3.3).
 */
import { createHash } from 'node:crypto';
import { mkdir, open, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** docs/urbackup-formats.md §2.2 */
const RAW_VOLUME_OFFSET = 512 * 1024;
/** docs/urbackup-formats.md §1.2 */
const HASH_CHUNK = 512 * 1024;
const BLOCK = 4096;

export interface DiskPartition {
  /** 1-based entry number (docs/urbackup-formats.md §3.3 #4). */
  readonly number: number;
  readonly offset: number;
  readonly length: number;
}

/** The GPT as urBackup's client saves it (docs/urbackup-formats.md §3.3 #9–#16), read from the disk. */
export interface SavedGpt {
  readonly sectorSize: number;
  readonly header: Buffer;
  readonly tablePos: number;
  readonly table: Buffer;
  readonly backupHeaderPos: number;
  readonly backupHeader: Buffer;
  readonly backupTablePos: number;
  readonly backupTable: Buffer;
  readonly partitions: readonly DiskPartition[];
}

async function readAt(path: string, position: number, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, position);
    if (bytesRead !== length) throw new Error(`${path}: short read at ${position}`);
    return buffer;
  } finally {
    await handle.close();
  }
}

/** UEFI spec §5.3.2/§5.3.3: header at LBA 1, its table, the backup header at its `alternate_lba`, that header's table. */
export async function readSavedGpt(disk: string, sectorSize = 512): Promise<SavedGpt> {
  const header = await readAt(disk, sectorSize, sectorSize);
  if (header.toString('latin1', 0, 8) !== 'EFI PART') throw new Error(`${disk}: no GPT header at LBA 1`);
  const backupHeaderPos = Number(header.readBigUInt64LE(0x20)) * sectorSize;
  const tableLength = header.readUInt32LE(0x50) * header.readUInt32LE(0x54);
  const tablePos = Number(header.readBigUInt64LE(0x48)) * sectorSize;
  const backupHeader = await readAt(disk, backupHeaderPos, sectorSize);
  if (backupHeader.toString('latin1', 0, 8) !== 'EFI PART') throw new Error(`${disk}: no backup GPT header at ${backupHeaderPos}`);
  const backupTablePos = Number(backupHeader.readBigUInt64LE(0x48)) * sectorSize;
  const table = await readAt(disk, tablePos, tableLength);
  const entrySize = header.readUInt32LE(0x54);
  const partitions: DiskPartition[] = [];
  for (let i = 0; i < header.readUInt32LE(0x50); i++) {
    const entry = table.subarray(i * entrySize, (i + 1) * entrySize);
    if (entry.subarray(0, 16).equals(Buffer.alloc(16))) continue;
    const first = Number(entry.readBigUInt64LE(32));
    const last = Number(entry.readBigUInt64LE(40));
    partitions.push({ number: i + 1, offset: first * sectorSize, length: (last - first + 1) * sectorSize });
  }
  return {
    sectorSize, header, tablePos, table, backupHeaderPos, backupHeader, backupTablePos,
    backupTable: await readAt(disk, backupTablePos, tableLength), partitions,
  };
}

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(value);
  return out;
}

function i64(value: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigInt64LE(BigInt(value));
  return out;
}

/** docs/urbackup-formats.md §3.2 `addString`: u32 LE length, the bytes. */
function addString(value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  return Buffer.concat([u32(bytes.length), bytes]);
}

export interface RawBackupRequest {
  readonly backupRoot: string;
  readonly client: string;
  /** `C`, `ESP`, `SYSVOL`. */
  readonly letter: string;
  /** `YYMMDD-HHMM` (docs/urbackup-formats.md §1.1), also the files' mtime (read as UTC). */
  readonly timestamp: string;
  /** The whole disk the partition is on. */
  readonly disk: string;
  readonly partition: DiskPartition;
  /** Bytes the client images (§2.4): NTFS's own size (one sector short of the partition), the device's length for FAT. */
  readonly volumeLength: number;
  /** §3.3 #5: the volume serial as Windows reports it, in decimal. */
  readonly serial: string;
  readonly label: string;
  /** §3.3 #7: `NTFS`, `FAT32`. */
  readonly fsName: string;
  /** §3.3 #9–#16 for a GPT disk; absent for an MBR disk (version 0). */
  readonly gpt?: SavedGpt;
}

/** §2.2: boot code (any fixed bytes stand in for urBackup's mbr_code), a signature, one type-0x07 entry at LBA 1024. */
function syntheticMbr(volumeLength: number): Buffer {
  const mbr = Buffer.alloc(512);
  mbr.fill(0x90, 0, 440);
  mbr.writeUInt32LE(0x5b007ed, 440);
  Buffer.from([0x80, 0xfe, 0xff, 0xff, 0x07, 0xfe, 0xff, 0xff]).copy(mbr, 446);
  mbr.writeUInt32LE(RAW_VOLUME_OFFSET / 512, 454);
  mbr.writeUInt32LE(volumeLength / 512, 458);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  return mbr;
}

/** `YYMMDD-HHMM` as UTC. */
function timestampDate(timestamp: string): Date {
  const m = /^(\d\d)(\d\d)(\d\d)-(\d\d)(\d\d)$/.exec(timestamp);
  if (m === null) throw new Error(`bad urBackup timestamp ${timestamp}`);
  const [yy, mo, dd, hh, mi] = m.slice(1).map(Number) as [number, number, number, number, number];
  return new Date(Date.UTC(2000 + yy, mo - 1, dd, hh, mi));
}

/** Writes `<root>/<client>/<ts>_Image_<L>/Image_<L>_<ts>.raw` and its side files; returns the `.raw`'s path. */
export async function writeRawBackup(request: RawBackupRequest): Promise<string> {
  const { letter, timestamp, volumeLength } = request;
  if (volumeLength > request.partition.length || volumeLength % 512 !== 0) throw new Error(`${letter}: volume length ${volumeLength} does not fit its partition`);
  const folder = join(request.backupRoot, request.client, `${timestamp}_Image_${letter}`);
  const raw = join(folder, `Image_${letter}_${timestamp}.raw`);
  await mkdir(folder, { recursive: true });

  // The .raw: sparse, the synthetic MBR, then the volume with its all-zero 4 KiB blocks left as holes
  // (the client sends only used blocks, §2.1), and one SHA-256 per 512 KiB of volume (§1.2).
  const hashes: Buffer[] = [];
  const source = await open(request.disk, 'r');
  const target = await open(raw, 'w');
  try {
    await target.truncate(RAW_VOLUME_OFFSET + volumeLength);
    await target.write(syntheticMbr(volumeLength), 0, 512, 0);
    const zero = Buffer.alloc(BLOCK);
    for (let at = 0; at < volumeLength; at += HASH_CHUNK) {
      const chunk = Buffer.alloc(Math.min(HASH_CHUNK, volumeLength - at));
      const { bytesRead } = await source.read(chunk, 0, chunk.length, request.partition.offset + at);
      if (bytesRead !== chunk.length) throw new Error(`${request.disk}: short read at ${request.partition.offset + at}`);
      hashes.push(createHash('sha256').update(chunk).digest());
      for (let block = 0; block < chunk.length; block += BLOCK) {
        const piece = chunk.subarray(block, block + BLOCK);
        if (!piece.equals(zero.subarray(0, piece.length))) await target.write(piece, 0, piece.length, RAW_VOLUME_OFFSET + at + block);
      }
    }
  } finally {
    await target.close();
    await source.close();
  }

  // §3.3, field by field.
  const gpt = request.gpt;
  const fields: Buffer[] = [
    Buffer.from([1, gpt === undefined ? 0 : 1]), // #1 status, #2 version
    u32(0), // #3 device_number
    u32(request.partition.number), // #4
    addString(request.serial), // #5
    addString(request.label), // #6
    addString(request.fsName), // #7
    addString(await readAt(request.disk, 0, 512)), // #8 LBA 0
  ];
  if (gpt !== undefined) {
    fields.push(
      i64(gpt.sectorSize), addString(gpt.header), // #9, #10
      i64(gpt.tablePos), addString(gpt.table), // #11, #12
      i64(gpt.backupHeaderPos), addString(gpt.backupHeader), // #13, #14
      i64(gpt.backupTablePos), addString(gpt.backupTable), // #15, #16
    );
  }
  fields.push(addString('')); // #17 errmsg
  await writeFile(`${raw}.mbr`, Buffer.concat(fields));
  await writeFile(`${raw}.hash`, Buffer.concat(hashes));
  await writeFile(`${raw}.sync`, '');
  const when = timestampDate(timestamp);
  for (const path of [raw, `${raw}.mbr`, `${raw}.hash`, `${raw}.sync`, folder]) await utimes(path, when, when);
  return raw;
}
