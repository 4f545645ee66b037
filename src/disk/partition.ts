// SPDX-License-Identifier: MIT
/** A partition as the disk's saved table describes it, in bytes. */
export interface Partition {
  /** 1-based number as Windows counts it (see `findPartition` in each table module). */
  readonly number: number;
  readonly offset: number;
  readonly length: number;
  /** MBR type byte as hex (`07`) or GPT type GUID (`ebd0a0a2-…`). */
  readonly type: string;
  readonly name: string;
}

export interface PartitionTable {
  readonly kind: 'mbr' | 'gpt';
  readonly sectorSize: 512 | 4096;
  readonly partitions: readonly Partition[];
}
