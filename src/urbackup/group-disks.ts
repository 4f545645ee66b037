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
import { basename } from 'node:path';
import { checkGptHeader } from '../disk/gpt.js';
import { isDriveLetter, timestampMinutes } from './backup-tree.js';
import type { LoadedVolume } from './load-volume.js';
import type { SavedGpt } from './mbr-data.js';

/** How far (in minutes) a companion backup may be from its anchor: one backup run (README's grouping rule). */
export const RUN_WINDOW_MINUTES = 24 * 60;

export interface DiskSource {
  readonly client: string;
  readonly anchor: LoadedVolume;
  /** Other volumes of the same disk from the same backup run, by partition number. */
  readonly companions: readonly LoadedVolume[];
}

/**
 * The DiskGUID (UEFI §5.3.2, header offset 56) of a saved GPT copy whose header CRC holds: the
 * primary's, else the backup's (the copy the disk is then composed from, src/disk/partition-table.ts).
 * A broken primary header must not give the disk another identity, which would leave its
 * companions (ESP, MSR) out. Both broken: the primary's bytes (the disk cannot be composed anyway).
 */
function gptDiskGuid(gpt: SavedGpt): Uint8Array {
  for (const header of [gpt.header, gpt.backupHeader]) {
    const check = checkGptHeader(header);
    if (check.ok) return check.header.diskGuid;
  }
  return gpt.header.subarray(56, 72);
}

export function diskIdentityKey(volume: LoadedVolume): string {
  const data = volume.mbrData;
  if (data === undefined) return `${volume.backup.client}/whole-disk/${volume.backup.rawPath}`;
  const tableId = data.gpt !== undefined ? Buffer.from(gptDiskGuid(data.gpt)).toString('hex') : Buffer.from(data.mbr.subarray(440, 444)).toString('hex');
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
    // Within 24 hours either way (the +1 minute preference() gives a later one only breaks ties).
    if (Math.abs(timestampMinutes(candidate.backup.timestamp) - anchorMinutes) > RUN_WINDOW_MINUTES) continue;
    const distance = preference(anchorMinutes, candidate);
    const current = best.get(data.partitionNumber);
    if (current === undefined || distance < preference(anchorMinutes, current)) best.set(data.partitionNumber, candidate);
  }
  return [...best.entries()].sort(([a], [b]) => a - b).map(([, volume]) => volume);
}

export function isAnchor(volume: LoadedVolume): boolean {
  return isDriveLetter(volume.backup.letter);
}

function duration(minutes: number): string {
  const hours = Math.floor(minutes / 60);
  return hours === 0 ? `${minutes} min` : `${hours} h ${minutes % 60} min`;
}

/**
 * What the disk of `anchor` should say about companions that come from another backup run than
 * the anchor's own (the grouping rule takes the nearest within 24 hours, which may be one): a
 * companion taken after the anchor (urBackup images SYSVOL/ESP before the drive letters of a run),
 * or one with another complete backup of the anchor's volume between them (that backup's run took
 * it). `volumes` are the candidates findCompanions chose from. `ls`, `doctor` and the mount show
 * these notes with the disk.
 */
export function companionNotes(anchor: LoadedVolume, companions: readonly LoadedVolume[], volumes: readonly LoadedVolume[]): string[] {
  const key = diskIdentityKey(anchor);
  const anchorMinutes = timestampMinutes(anchor.backup.timestamp);
  const notes: string[] = [];
  for (const companion of companions) {
    const minutes = timestampMinutes(companion.backup.timestamp);
    const what = `partition ${companion.mbrData?.partitionNumber ?? '?'} (${companion.backup.letter}) is from ${basename(companion.backup.folder)}`;
    if (minutes > anchorMinutes) {
      notes.push(`${what}, taken ${duration(minutes - anchorMinutes)} after this backup: another backup run (urBackup images ${companion.backup.letter} before the drive letters of a run)`);
      continue;
    }
    const between = volumes
      .filter((other) => other !== anchor && other.backup.complete && other.backup.letter === anchor.backup.letter && diskIdentityKey(other) === key)
      .map((other) => other.backup.timestamp)
      .filter((timestamp) => timestampMinutes(timestamp) > minutes && timestampMinutes(timestamp) < anchorMinutes)
      .sort();
    const last = between.at(-1);
    if (last !== undefined) {
      notes.push(`${what}, taken ${duration(anchorMinutes - minutes)} before this backup: another backup run (${anchor.backup.letter} was backed up again at ${last}); this run has no complete ${companion.backup.letter} backup`);
    }
  }
  return notes;
}
