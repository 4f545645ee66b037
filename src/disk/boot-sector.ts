// SPDX-License-Identifier: MIT
/**
 * What a volume's first sector says about its file system: enough to check that a backup
 * belongs to a partition (serial) and that the image holds the whole file system (length).
 *
 * NTFS boot sector: OEM id "NTFS    " at 3, BytesPerSector u16 at 0x0B, TotalSectors u64 at
 * 0x28 (the volume; the backup boot sector sits in the sector right after it), VolumeSerial
 * u64 at 0x48. FAT (Microsoft FAT spec, "BPB"): BytesPerSector at 0x0B, TotSec16 at 0x13,
 * TotSec32 at 0x20, VolID at 0x43 (FAT32, BootSig 0x29 at 0x42) or 0x27 (FAT12/16, 0x29 at 0x26).
 */
export interface BootSectorInfo {
  readonly fs: 'ntfs' | 'fat' | 'unknown';
  readonly bytesPerSector: number;
  /** Length of the file system in bytes, when known. */
  readonly length: number | undefined;
  /** The 32-bit serial Windows reports (GetVolumeInformation), when known. */
  readonly serial: number | undefined;
}

const latin1 = new TextDecoder('latin1');

export function readBootSector(sector: Uint8Array): BootSectorInfo {
  if (sector.length < 512) return { fs: 'unknown', bytesPerSector: 0, length: undefined, serial: undefined };
  const view = new DataView(sector.buffer, sector.byteOffset, 512);
  const bytesPerSector = view.getUint16(0x0b, true);
  const validSectorSize = [512, 1024, 2048, 4096].includes(bytesPerSector);
  if (latin1.decode(sector.subarray(3, 11)) === 'NTFS    ' && validSectorSize) {
    return {
      fs: 'ntfs',
      bytesPerSector,
      length: Number(view.getBigUint64(0x28, true)) * bytesPerSector,
      serial: view.getUint32(0x48, true),
    };
  }
  const hasBootSignature = sector[510] === 0x55 && sector[511] === 0xaa;
  if (hasBootSignature && validSectorSize && view.getUint8(0x0d) !== 0) {
    const totalSectors = view.getUint16(0x13, true) || view.getUint32(0x20, true);
    const isFat32 = view.getUint16(0x16, true) === 0;
    const signatureOffset = isFat32 ? 0x42 : 0x26;
    const serial = view.getUint8(signatureOffset) === 0x29 ? view.getUint32(signatureOffset + 1, true) : undefined;
    return { fs: 'fat', bytesPerSector, length: totalSectors * bytesPerSector, serial };
  }
  return { fs: 'unknown', bytesPerSector, length: undefined, serial: undefined };
}
