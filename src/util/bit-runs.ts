// SPDX-License-Identifier: MIT
/** Runs of equal bits in a sector bitmap (VHD and VHDX sector bitmaps; the VHD chain reader). */

/** One run of equal bits in a sector bitmap: sectors [start, start + count). */
export interface BitRun {
  readonly present: boolean;
  readonly start: number;
  readonly count: number;
}

/**
 * Runs of equal bits over the first `count` bits of `bits`. VHD bitmaps are MSB-first ("Data
 * Block": bit 7 of byte 0 is sector 0); VHDX bitmaps LSB-first (MS-VHDX 2.4: "bit 0 of byte 0 is
 * the entry for the first virtual sector").
 */
export function bitRuns(bits: Uint8Array, count: number, order: 'msb' | 'lsb'): BitRun[] {
  const runs: BitRun[] = [];
  let runStart = 0;
  let runValue: boolean | undefined;
  const close = (at: number): void => {
    if (runValue !== undefined && at > runStart) runs.push({ present: runValue, start: runStart, count: at - runStart });
  };
  for (let sector = 0; sector < count; ) {
    const byte = bits[sector >>> 3] ?? 0;
    // Whole bytes of equal bits are the common case (a bitmap of all ones or all zeros).
    if ((sector & 7) === 0 && sector + 8 <= count && (byte === 0 || byte === 0xff)) {
      const value = byte === 0xff;
      if (value !== runValue) {
        close(sector);
        runStart = sector;
        runValue = value;
      }
      sector += 8;
      continue;
    }
    const bit = order === 'msb' ? (byte >> (7 - (sector & 7))) & 1 : (byte >> (sector & 7)) & 1;
    const value = bit === 1;
    if (value !== runValue) {
      close(sector);
      runStart = sector;
      runValue = value;
    }
    sector++;
  }
  close(count);
  return runs;
}
