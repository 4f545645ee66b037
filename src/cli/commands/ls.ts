// SPDX-License-Identifier: MIT
/** `synthvhd ls ROOT`: clients, backup runs, disks and the virtual files they are served as. */
import { buildCatalog, virtualFileName, type CatalogDisk } from '../../catalog/catalog.js';
import { offeredFiles } from '../../catalog/virtual-files.js';
import { formatBytes } from '../../util/format-bytes.js';

export interface LsOptions {
  readonly json?: boolean;
}

function describeDisk(entry: CatalogDisk): Record<string, unknown> {
  const { disk, anchor } = entry;
  const placedNumbers = new Set(disk.placed.map(({ partition }) => partition.number));
  return {
    client: entry.client,
    letter: anchor.letter,
    timestamp: anchor.timestamp,
    folder: anchor.folder,
    tableType: disk.table?.kind ?? 'whole-disk',
    sectorSize: disk.image.sectorSize,
    size: disk.image.layout.size,
    files: offeredFiles(disk.image).map(({ format, unavailable }) => ({
      name: virtualFileName(anchor, format),
      format,
      available: unavailable === undefined,
      ...(unavailable === undefined ? {} : { reason: unavailable }),
    })),
    volumes: disk.placed.map(({ volume, partition }) => ({
      letter: volume.backup.letter,
      timestamp: volume.backup.timestamp,
      partition: partition.number,
      offset: partition.offset,
      length: partition.length,
      volumeLength: volume.volumeLength,
      raw: volume.backup.rawPath,
    })),
    zeroPartitions: (disk.table?.partitions ?? [])
      .filter((partition) => !placedNumbers.has(partition.number))
      .map((partition) => ({ partition: partition.number, offset: partition.offset, length: partition.length, type: partition.type, name: partition.name })),
    notes: disk.notes,
  };
}

export async function lsCommand(root: string, options: LsOptions): Promise<void> {
  const catalog = await buildCatalog(root);
  if (options.json === true) {
    process.stdout.write(`${JSON.stringify({ root: catalog.root, disks: catalog.disks.map(describeDisk), problems: catalog.problems }, null, 2)}\n`);
    return;
  }
  const lines: string[] = [];
  let client = '';
  for (const entry of catalog.disks) {
    if (entry.client !== client) {
      client = entry.client;
      lines.push(client);
    }
    const { disk, anchor } = entry;
    const table = disk.table === undefined ? 'whole-disk image' : `${disk.table.kind.toUpperCase()}, ${disk.image.sectorSize}-byte sectors`;
    lines.push(`  ${anchor.timestamp}  ${anchor.letter}:  disk ${formatBytes(disk.image.layout.size)} (${disk.image.layout.size} bytes), ${table}`);
    for (const { format, unavailable } of offeredFiles(disk.image)) {
      lines.push(`    ${virtualFileName(anchor, format)}${unavailable === undefined ? '' : `  (not offered: ${unavailable})`}`);
    }
    for (const { volume, partition } of disk.placed) {
      lines.push(`    partition ${partition.number}: ${volume.backup.letter} from ${volume.backup.timestamp}, ${formatBytes(partition.length)} at ${partition.offset}`);
    }
    const placedNumbers = new Set(disk.placed.map(({ partition }) => partition.number));
    for (const partition of disk.table?.partitions ?? []) {
      if (!placedNumbers.has(partition.number)) lines.push(`    partition ${partition.number}: not backed up, reads as zeros (${formatBytes(partition.length)}${partition.name === '' ? '' : `, ${partition.name}`})`);
    }
    for (const note of disk.notes) lines.push(`    note: ${note}`);
  }
  if (catalog.disks.length === 0) lines.push(`no RAW image backups of drive-letter volumes found under ${catalog.root}`);
  if (catalog.problems.length > 0) {
    lines.push('not served:');
    for (const problem of catalog.problems) lines.push(`  ${problem.reason}`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}
