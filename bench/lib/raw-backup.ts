// SPDX-License-Identifier: MIT
/**
 * A minimal urBackup RAW volume backup for benchmarks: an MBR disk with one partition whose
 * `.raw` is given, a `.raw.mbr` (SMBRData version 0, docs/urbackup-formats.md §3.3) and `.raw.sync`.
 * The volume carries no file system, so synthvhd skips the serial check.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

function smbrString(bytes: Uint8Array): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32LE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** Writes the folder and the metadata files; returns the `.raw` path for the caller to fill. */
export async function makeRawBackup(root: string, client: string, timestamp: string, volumeLength: number): Promise<{ folder: string; raw: string }> {
  const folder = join(root, client, `${timestamp}_Image_C`);
  await mkdir(folder, { recursive: true });
  const raw = join(folder, `Image_C_${timestamp}.raw`);
  const mbr = Buffer.alloc(512);
  mbr.writeUInt32LE(0x5eed_beef, 440);
  // One NTFS-type entry at 1 MiB (LBA 2048) covering the volume (MBR entry: type at +4, LBA at +8, count at +12).
  mbr[446 + 4] = 0x07;
  mbr.writeUInt32LE(2048, 446 + 8);
  mbr.writeUInt32LE(volumeLength / 512, 446 + 12);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const deviceAndPartition = Buffer.alloc(8);
  deviceAndPartition.writeInt32LE(0, 0);
  deviceAndPartition.writeInt32LE(1, 4);
  const record = Buffer.concat([
    Buffer.from([1, 0]),
    deviceAndPartition,
    smbrString(Buffer.from('')),
    smbrString(Buffer.from('bench')),
    smbrString(Buffer.from('NTFS')),
    smbrString(mbr),
    smbrString(Buffer.from('')),
  ]);
  await writeFile(`${raw}.mbr`, record);
  await writeFile(`${raw}.sync`, '');
  return { folder, raw };
}
