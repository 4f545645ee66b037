// SPDX-License-Identifier: MIT
/**
 * urBackup RAW volume backups described by hand, written from the format notes rather than by
 * synthvhd: docs/urbackup-formats.md §1.1 (folder and file names), §2.2 (the volume at 512 KiB in
 * the `.raw`), §3.3 (SMBRData version 0: status, version, device_number, partition_number,
 * serial, volume name, fs name, LBA0, error message). The volumes hold no file system (an empty
 * serial: nothing to check against a boot sector), and their `.raw` files are all hole. The same
 * description goes into a MemoryBackupFs or onto disk.
 */
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { MemoryBackupFs } from './memory-backup-fs.js';

export const MiB = 1024 * 1024;
/** docs/urbackup-formats.md §2.2 */
const RAW_VOLUME_OFFSET = 512 * 1024;

export interface MbrEntry {
  /** Partition type byte: 0x07 NTFS, 0x0F extended (LBA). */
  readonly type: number;
  readonly firstLba: number;
  readonly sectors: number;
}

/** LBA0: up to four entries at 446 (status, CHS, type at +4, CHS, first LBA at +8, count at +12), signature at 440, 0x55AA. */
export function mbrSector(entries: readonly MbrEntry[], signature: number): Buffer {
  const sector = Buffer.alloc(512);
  sector.writeUInt32LE(signature, 440);
  entries.forEach((entry, index) => {
    const at = 446 + index * 16;
    sector[at + 4] = entry.type;
    sector.writeUInt32LE(entry.firstLba, at + 8);
    sector.writeUInt32LE(entry.sectors, at + 12);
  });
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

function smbrString(bytes: Buffer | string): Buffer {
  const data = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
  const length = Buffer.alloc(4);
  length.writeUInt32LE(data.length);
  return Buffer.concat([length, data]);
}

function int32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeInt32LE(value);
  return out;
}

/** A `.raw.mbr` (SMBRData version 0, an MBR disk). */
export function smbrData(options: { deviceNumber: number; partitionNumber: number; lba0: Buffer }): Buffer {
  return Buffer.concat([
    Buffer.from([1, 0]),
    int32(options.deviceNumber),
    int32(options.partitionNumber),
    smbrString(''),
    smbrString('volume'),
    smbrString('NTFS'),
    smbrString(options.lba0),
    smbrString(''),
  ]);
}

export interface VolumeSpec {
  readonly client: string;
  readonly timestamp: string;
  /** `C`, `D`, `SYSVOL`, `ESP`. */
  readonly letter: string;
  readonly partitionNumber: number;
  /** The disk's LBA0 as this backup saved it. */
  readonly lba0: Buffer;
  readonly volumeLength: number;
  readonly deviceNumber?: number;
  /** Has its `.raw.sync` (default true). */
  readonly complete?: boolean;
}

export interface VolumeFiles {
  readonly folder: string;
  readonly raw: string;
  readonly files: readonly { path: string; bytes: Buffer; size: number }[];
}

/** The files of one volume backup under `root`. */
export function volumeFiles(root: string, spec: VolumeSpec): VolumeFiles {
  const folder = `${root}/${spec.client}/${spec.timestamp}_Image_${spec.letter}`;
  const raw = `${folder}/Image_${spec.letter}_${spec.timestamp}.raw`;
  const mbr = smbrData({ deviceNumber: spec.deviceNumber ?? 0, partitionNumber: spec.partitionNumber, lba0: spec.lba0 });
  const files = [
    { path: raw, bytes: Buffer.alloc(0), size: RAW_VOLUME_OFFSET + spec.volumeLength },
    { path: `${raw}.mbr`, bytes: mbr, size: mbr.length },
    ...(spec.complete === false ? [] : [{ path: `${raw}.sync`, bytes: Buffer.alloc(0), size: 0 }]),
  ];
  return { folder, raw, files };
}

export function addToMemory(fs: MemoryBackupFs, root: string, specs: readonly VolumeSpec[]): void {
  fs.folder(root);
  for (const spec of specs) {
    for (const file of volumeFiles(root, spec).files) fs.file(file.path, file.bytes.length === 0 ? [] : [{ offset: 0, bytes: file.bytes }], { size: file.size });
  }
}

export async function writeToDisk(root: string, specs: readonly VolumeSpec[]): Promise<void> {
  for (const spec of specs) {
    for (const file of volumeFiles(root, spec).files) {
      await mkdir(dirname(file.path), { recursive: true });
      await writeFile(file.path, file.bytes);
      if (file.size > file.bytes.length) await truncate(file.path, file.size); // sparse: all hole
    }
  }
}
