// SPDX-License-Identifier: MIT
/**
 * Groups volume backups into whole disks.
 *
 * The rule (also in the README): every complete backup of a drive-letter volume (C, D, …) is
 * the anchor of one disk. Its disk identity is (client, device_number, GPT disk GUID or MBR
 * signature) from its `.raw.mbr`. For every other partition number seen with the same
 * identity, the disk takes the complete backup of that partition whose timestamp is closest
 * to the anchor's, within 24 hours, preferring one taken before or at the anchor (urBackup
 * images SYSVOL/ESP right before the drive letter of the same run). The anchor's own saved
 * table describes the disk.
 */
import { isDriveLetter, timestampMinutes } from './backup-tree.js';
import type { LoadedVolume } from './load-volume.js';

/** How far (in minutes) a companion backup may be from its anchor: one backup run (README's grouping rule). */
export const RUN_WINDOW_MINUTES = 24 * 60;

export interface DiskSource {
  readonly client: string;
  readonly anchor: LoadedVolume;
  /** Other volumes of the same disk from the same backup run, by partition number. */
  readonly companions: readonly LoadedVolume[];
}

export function diskIdentityKey(volume: LoadedVolume): string {
  const data = volume.mbrData;
  if (data === undefined) return `${volume.backup.client}/whole-disk/${volume.backup.rawPath}`;
  const tableId =
    data.gpt !== undefined
      ? Buffer.from(data.gpt.header.subarray(56, 72)).toString('hex')
      : Buffer.from(data.mbr.subarray(440, 444)).toString('hex');
  return `${volume.backup.client}/${data.deviceNumber}/${tableId}`;
}

function preference(anchorMinutes: number, candidate: LoadedVolume): number {
  const delta = timestampMinutes(candidate.backup.timestamp) - anchorMinutes;
  // Before-or-at wins over after at the same distance; after costs one extra minute.
  return delta <= 0 ? -delta : delta + 1;
}

/** The companions of `anchor` among `volumes` (complete, loaded volumes of any client). */
export function findCompanions(anchor: LoadedVolume, volumes: readonly LoadedVolume[]): LoadedVolume[] {
  const anchorData = anchor.mbrData;
  if (anchorData === undefined) return [];
  const key = diskIdentityKey(anchor);
  const anchorMinutes = timestampMinutes(anchor.backup.timestamp);
  const best = new Map<number, LoadedVolume>();
  for (const candidate of volumes) {
    const data = candidate.mbrData;
    if (candidate === anchor || data === undefined || !candidate.backup.complete) continue;
    if (data.partitionNumber === anchorData.partitionNumber || diskIdentityKey(candidate) !== key) continue;
    const distance = preference(anchorMinutes, candidate);
    if (distance > RUN_WINDOW_MINUTES + 1) continue;
    const current = best.get(data.partitionNumber);
    if (current === undefined || distance < preference(anchorMinutes, current)) best.set(data.partitionNumber, candidate);
  }
  return [...best.entries()].sort(([a], [b]) => a - b).map(([, volume]) => volume);
}

export function isAnchor(volume: LoadedVolume): boolean {
  return isDriveLetter(volume.backup.letter);
}
