// SPDX-License-Identifier: MIT
/**
 * Parser for urBackup's `.raw.mbr`: the client's serialized SMBRData reply, stored verbatim.
 * Source: uroni/urbackup_backend urbackupcommon/mbrdata.h (SMBRData(CRData&)) and
 * common/data.cpp (CRData primitives); notes in docs/urbackup-formats.md §3.
 *
 * Pure: bytes in, a record out. `path` is only used in error messages.
 */
import { fileError } from '../errors/synthvhd-error.js';

/** docs/urbackup-formats.md §3.3 field 2: 0 = MBR disk, 1 = GPT disk, 100 = whole-disk image (§2.5). */
export const MBRDATA_VERSION_MBR = 0;
export const MBRDATA_VERSION_GPT = 1;
export const MBRDATA_VERSION_WHOLE_DISK = 100;

/** common/data.cpp CRData::getStr: strings longer than 10 MiB are rejected by urBackup too. */
const MAX_STRING_LENGTH = 10 * 1024 * 1024;
/** mbrdata.h: mbr_data is exactly one 512-byte sector (LBA0 of the physical disk). */
const MBR_LENGTH = 512;

export interface SavedGpt {
  /** Byte offset of LBA1, which is the logical sector size (512 or 4096). */
  readonly headerPosition: number;
  /** One whole logical sector read at LBA1. */
  readonly header: Uint8Array;
  readonly tablePosition: number;
  readonly table: Uint8Array;
  /** Byte offset of the backup header: the last sector of the original disk. */
  readonly backupHeaderPosition: number;
  readonly backupHeader: Uint8Array;
  readonly backupTablePosition: number;
  readonly backupTable: Uint8Array;
}

export interface MbrData {
  readonly version: 0 | 1;
  /** Windows PhysicalDriveN of the disk the volume lives on. */
  readonly deviceNumber: number;
  /** 1-based partition number (Windows STORAGE_DEVICE_NUMBER.PartitionNumber). */
  readonly partitionNumber: number;
  /** Windows: the volume serial as a decimal string; Linux clients: a blkid UUID. */
  readonly serialNumber: string;
  readonly volumeName: string;
  readonly fsName: string;
  /** LBA0 of the disk (the protective MBR on GPT disks). */
  readonly mbr: Uint8Array;
  readonly gpt: SavedGpt | undefined;
  readonly errorMessage: string;
  /** Optional tail: sectors after LBA0 saved for boot loaders (GRUB, VeraCrypt). */
  readonly extraData: { readonly position: number; readonly data: Uint8Array } | undefined;
}

export type MbrFile = { readonly kind: 'volume'; readonly data: MbrData } | { readonly kind: 'whole-disk' };

/** Sequential little-endian reader that names the field it failed on. */
class FieldReader {
  private position = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly path: string,
  ) {}

  get atEnd(): boolean {
    return this.position >= this.bytes.length;
  }

  private need(length: number, field: string): void {
    if (this.position + length > this.bytes.length) {
      throw fileError('E_MBRDATA', this.path, `truncated: ${field} needs ${length} bytes at offset ${this.position}, file has ${this.bytes.length}`);
    }
  }

  private view(length: number): DataView {
    return new DataView(this.bytes.buffer, this.bytes.byteOffset + this.position, length);
  }

  char(field: string): number {
    this.need(1, field);
    return this.bytes[this.position++] ?? 0;
  }

  int32(field: string): number {
    this.need(4, field);
    const value = this.view(4).getInt32(0, true);
    this.position += 4;
    return value;
  }

  int64(field: string): number {
    this.need(8, field);
    const value = this.view(8).getBigInt64(0, true);
    this.position += 8;
    if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw fileError('E_MBRDATA', this.path, `${field} out of range: ${value}`);
    }
    return Number(value);
  }

  /** common/data.cpp addString: u32 LE length, then the bytes. */
  string(field: string): Uint8Array {
    this.need(4, `${field} length`);
    const length = this.view(4).getUint32(0, true);
    this.position += 4;
    return this.take(length, field);
  }

  /** common/data.cpp addVarInt: SQLite varint (big-endian 7-bit groups; the 9th byte has 8 bits). */
  varint(field: string): number {
    let value = 0n;
    for (let index = 0; index < 9; index++) {
      const byte = this.char(field);
      if (index === 8) return this.safe((value << 8n) | BigInt(byte), field);
      value = (value << 7n) | BigInt(byte & 0x7f);
      if ((byte & 0x80) === 0) return this.safe(value, field);
    }
    return this.safe(value, field);
  }

  /** common/data.cpp addString2: varint length, then the bytes. */
  string2(field: string): Uint8Array {
    return this.take(this.varint(`${field} length`), field);
  }

  private take(length: number, field: string): Uint8Array {
    if (length > MAX_STRING_LENGTH) {
      throw fileError('E_MBRDATA', this.path, `${field} length ${length} is over urBackup's 10 MiB limit`);
    }
    if (this.position + length > this.bytes.length) {
      throw fileError('E_MBRDATA', this.path, `truncated or corrupt: ${field} length ${length} at offset ${this.position} runs past the end of the file (${this.bytes.length} bytes)`);
    }
    // A view: parseMbrFile copies what it keeps.
    const value = this.bytes.subarray(this.position, this.position + length);
    this.position += length;
    return value;
  }

  private safe(value: bigint, field: string): number {
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw fileError('E_MBRDATA', this.path, `${field} out of range: ${value}`);
    return Number(value);
  }
}

const utf8 = new TextDecoder('utf-8');

/** Parses a `.raw.mbr` file's bytes (docs/urbackup-formats.md §3.3). */
export function parseMbrFile(bytes: Uint8Array, path: string): MbrFile {
  const reader = new FieldReader(bytes, path);
  const status = reader.char('status');
  if (status !== 1) throw fileError('E_MBRDATA', path, `status byte is ${status}, expected 1 (the client reported an error)`);
  const version = reader.char('version');
  if (version === MBRDATA_VERSION_WHOLE_DISK) return { kind: 'whole-disk' };
  if (version !== MBRDATA_VERSION_MBR && version !== MBRDATA_VERSION_GPT) {
    throw fileError('E_MBRDATA', path, `unknown version byte ${version} (known: 0 = MBR, 1 = GPT, 100 = whole disk)`);
  }
  const deviceNumber = reader.int32('device_number');
  const partitionNumber = reader.int32('partition_number');
  const serialNumber = utf8.decode(reader.string('serial_number'));
  const volumeName = utf8.decode(reader.string('volume_name'));
  const fsName = utf8.decode(reader.string('fsn'));
  const mbr = reader.string('mbr_data');
  if (mbr.length !== MBR_LENGTH) throw fileError('E_MBRDATA', path, `mbr_data is ${mbr.length} bytes, expected 512`);
  let gpt: SavedGpt | undefined;
  if (version === MBRDATA_VERSION_GPT) {
    gpt = {
      headerPosition: reader.int64('gpt_header_pos'),
      header: reader.string('gpt_header'),
      tablePosition: reader.int64('gpt_table_pos'),
      table: reader.string('gpt_table'),
      backupHeaderPosition: reader.int64('backup_gpt_header_pos'),
      backupHeader: reader.string('backup_gpt_header'),
      backupTablePosition: reader.int64('backup_gpt_table_pos'),
      backupTable: reader.string('backup_gpt_table'),
    };
  }
  const errorMessage = utf8.decode(reader.string('errmsg'));
  // Fields 18/19 are optional: older clients end here (the reader treats it as extra_data_pos = -1).
  let extraData: MbrData['extraData'];
  if (!reader.atEnd) {
    const position = reader.varint('extra_data_pos');
    extraData = { position, data: reader.string2('extra_data') };
  }
  if (!reader.atEnd) throw fileError('E_MBRDATA', path, 'unexpected bytes after the last field');
  // Copies of what is kept, so the file's buffer is not (a scan reads every `.raw.mbr` into one
  // reused buffer, src/urbackup/backup-fs.ts); the 16 KiB GPT tables through sharedTable.
  const kept: MbrData = {
    version,
    deviceNumber,
    partitionNumber,
    serialNumber,
    volumeName,
    fsName,
    mbr: new Uint8Array(mbr),
    gpt:
      gpt === undefined
        ? undefined
        : { ...gpt, header: new Uint8Array(gpt.header), table: sharedTable(gpt.table), backupHeader: new Uint8Array(gpt.backupHeader), backupTable: sharedTable(gpt.backupTable) },
    errorMessage,
    extraData: extraData === undefined ? undefined : { position: extraData.position, data: new Uint8Array(extraData.data) },
  };
  return { kind: 'volume', data: kept };
}

/**
 * GPT tables recently kept, shared by every `.raw.mbr` that holds the same bytes: a disk's
 * primary and backup tables are the same 16 KiB, and so are those its ESP, SYSVOL and C: backups
 * saved, run after run. A scan of 10 000 disks copied 640 MB of them before (most of its peak
 * memory, as garbage waiting for the collector); now one copy per disk layout. Kept tables are
 * never written to.
 */
const recentTables: Uint8Array[] = [];
const RECENT_TABLES = 16;

function sharedTable(view: Uint8Array): Uint8Array {
  const bytes = Buffer.from(view.buffer, view.byteOffset, view.length);
  const known = recentTables.find((table) => table.length === view.length && bytes.equals(table));
  if (known !== undefined) return known;
  const copy = new Uint8Array(view);
  recentTables.push(copy);
  if (recentTables.length > RECENT_TABLES) recentTables.shift();
  return copy;
}
