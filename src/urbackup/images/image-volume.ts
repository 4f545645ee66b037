// SPDX-License-Identifier: MIT
/**
 * Where the volume lies in the disk urBackup stored in a VHD/VHDX. ImageBackup::writeMBR
 * (`urbackupserver/ImageBackup.cpp`, dev @90da741) writes a synthetic MBR in sector 0: boot code,
 * a random signature, one entry (type 0x07 whatever the file system, start LBA 1024, length
 * volume/512 sectors), then 1023 zero sectors, and returns 1024*512 as the volume's offset;
 * the disk is `drivesize + mbr_size` long. A whole-disk backup (`.mbr` version 100, docs/urbackup-formats.md
 * §2.5) has no synthetic MBR: the volume is the disk. The start is read from sector 0, not
 * assumed: other versions may move it. docs/urbackup-image-formats.md §4.
 */
import { SynthvhdError } from '../../errors/synthvhd-error.js';
import { type ImageLayout, ImageLayoutBuilder, sliceImageLayout } from './image-extent.js';

const MBR_SIGNATURE_AT = 510;
const FIRST_ENTRY_AT = 446;

/** The volume's byte offset from the synthetic MBR in `sector0` (512 bytes). */
export function volumeOffsetFromMbr(sector0: Uint8Array, diskSize: number): number {
  if (sector0.length < 512 || sector0[MBR_SIGNATURE_AT] !== 0x55 || sector0[MBR_SIGNATURE_AT + 1] !== 0xaa) {
    throw new SynthvhdError('E_CONTAINER', 'sector 0 of the image holds no MBR (urBackup writes one before the volume)');
  }
  const view = new DataView(sector0.buffer, sector0.byteOffset, 512);
  const startLba = view.getUint32(FIRST_ENTRY_AT + 8, true);
  const offset = startLba * 512;
  if (startLba === 0 || offset >= diskSize) {
    throw new SynthvhdError('E_CONTAINER', `the image's MBR puts the volume at sector ${startLba}, outside the ${diskSize}-byte disk`);
  }
  return offset;
}

/** The volume: the disk from `offset` to its end (as RAW: the `.raw` size minus 512 KiB). */
export function volumeLayout(disk: ImageLayout, offset: number): ImageLayout {
  const builder = new ImageLayoutBuilder();
  for (const extent of sliceImageLayout(disk, offset, disk.size - offset, 0)) builder.append(extent);
  return builder.build(disk.size - offset);
}
