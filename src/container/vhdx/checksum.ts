// SPDX-License-Identifier: MIT
/**
 * The VHDX checksum: CRC-32C over a structure with its 4-byte Checksum field taken as zero.
 *
 * Spec: [MS-VHDX] v20180912 (VHDX Format Specification v1.00, 2012). MS-VHDX 2.2.2 (header: over
 * the 4 KiB header) and 2.2.3.1 (region table: over the 64 KiB table): "CRC-32C hash over the
 * entire ... with the Checksum field taking the value of zero during the computation". The CRC
 * is the standard CRC-32C (Castagnoli, reflected, init and final XOR 0xFFFFFFFF; check value
 * crc32c("123456789") = 0xE3069283), stored little-endian (docs/containers.md §3.7).
 */
import { crc32c } from '@node-rs/crc32';

const ZERO_FIELD = new Uint8Array(4);

/** CRC-32C of `bytes`, with the 4 bytes at `checksumOffset` read as zero (no copy). */
export function vhdxChecksum(bytes: Uint8Array, checksumOffset: number): number {
  let crc = crc32c(bytes.subarray(0, checksumOffset));
  crc = crc32c(ZERO_FIELD, crc);
  crc = crc32c(bytes.subarray(checksumOffset + 4), crc);
  return crc >>> 0;
}

/** Computes the checksum of `bytes` and stores it, u32 little-endian, at `checksumOffset`. */
export function writeVhdxChecksum(bytes: Uint8Array, checksumOffset: number): void {
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setUint32(
    checksumOffset,
    vhdxChecksum(bytes, checksumOffset),
    true,
  );
}

/** The stored checksum at `checksumOffset` and the one computed now. */
export function checkVhdxChecksum(bytes: Uint8Array, checksumOffset: number): { stored: number; computed: number } {
  const stored = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(checksumOffset, true);
  return { stored, computed: vhdxChecksum(bytes, checksumOffset) };
}
