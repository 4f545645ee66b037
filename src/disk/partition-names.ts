// SPDX-License-Identifier: MIT
/**
 * Short names of common partition types, for extent descriptions (`zeros: partition 2, MSR (not
 * backed up)`). Only a label: nothing decides anything by it.
 *
 * GPT type GUIDs: UEFI spec 2.10 §5.3.3 (EFI system partition) and Microsoft's list in
 * "PARTITION_INFORMATION_GPT structure" (basic data, MSR, recovery, LDM); MBR type bytes as
 * Windows and fdisk name them.
 */
import type { PartitionTable } from './partition.js';

const GPT_TYPES: Readonly<Record<string, string>> = {
  'c12a7328-f81f-11d2-ba4b-00a0c93ec93b': 'EFI system partition',
  'e3c9e316-0b5c-4db8-817d-f92df00215ae': 'MSR',
  'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7': 'basic data',
  'de94bba4-06d1-4d40-a16a-bfd50179d6ac': 'Windows recovery',
  '5808c8aa-7e8f-42e0-85d2-e1e90434cfb3': 'LDM metadata',
  'af9b60a0-1431-4f62-bc68-3311714a69ad': 'LDM data',
  '0fc63daf-8483-4772-8e79-3d69d8477de4': 'Linux data',
  '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f': 'Linux swap',
};

const MBR_TYPES: Readonly<Record<string, string>> = {
  '01': 'FAT12',
  '04': 'FAT16',
  '06': 'FAT16',
  '07': 'NTFS/exFAT',
  '0b': 'FAT32',
  '0c': 'FAT32',
  '0e': 'FAT16',
  '12': 'OEM/diagnostics',
  '17': 'hidden NTFS',
  '27': 'Windows recovery',
  '42': 'LDM',
  '82': 'Linux swap',
  '83': 'Linux',
  ef: 'EFI system partition',
};

/** `MSR`, `NTFS/exFAT`, …, or `type <code>` for a type not in the lists above. */
export function partitionTypeName(kind: PartitionTable['kind'], type: string): string {
  const name = kind === 'gpt' ? GPT_TYPES[type] : MBR_TYPES[type];
  return name ?? `type ${type}`;
}
