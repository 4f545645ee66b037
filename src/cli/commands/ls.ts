// SPDX-License-Identifier: MIT
/** `synthvhd ls ROOT`: clients, backup runs, disks and the virtual files they are served as. */
import { scanBackupFs } from '../../urbackup/backup-fs.js';
import { scanCatalog, virtualFileName, type CatalogDisk } from '../../catalog/catalog.js';
import { offeredFiles } from '../../catalog/virtual-files.js';
import { lineNaming } from '../../errors/naming.js';
import { formatBytes } from '../../util/format-bytes.js';
import { nestedJson } from '../json-output.js';

export interface LsOptions {
  readonly json?: boolean;
}

/** What `ls` shows of one disk (also its --json record): made as each disk is composed, so the composed disks are not all kept. */
interface DiskRecord {
  readonly client: string;
  readonly letter: string;
  readonly timestamp: string;
  readonly folder: string;
  readonly tableType: string;
  readonly sectorSize: number;
  readonly size: number;
  readonly files: readonly { name: string; format: string; available: boolean; reason?: string }[];
  readonly volumes: readonly { letter: string; timestamp: string; partition: number; offset: number; length: number; volumeLength: number; raw: string }[];
  readonly zeroPartitions: readonly { partition: number; offset: number; length: number; type: string; name: string }[];
  readonly notes: readonly string[];
}

function describeDisk(entry: CatalogDisk): DiskRecord {
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

/** Each problem's line names its file, even when the parser that found it did not know the file. */
function namedProblems<P extends { readonly path: string; readonly reason: string }>(problems: readonly P[]): P[] {
  return problems.map((problem) => ({ ...problem, reason: lineNaming(problem.path, problem.reason) }));
}

export async function lsCommand(root: string, options: LsOptions): Promise<void> {
  // Each disk is printed as soon as every earlier client is done: ls of 10 000 disks holds a few
  // clients' records, not all of them.
  if (options.json === true) {
    // Byte for byte what JSON.stringify({ root, disks, problems }, null, 2) of the whole would be.
    let count = 0;
    let head = '';
    const catalog = await scanCatalog(root, describeDisk, {
      holes: false,
      fs: scanBackupFs,
      emit: (disk) => {
        if (count === 0) head = `{\n  "root": ${JSON.stringify(root)},\n  "disks": [`;
        process.stdout.write(`${head}${count === 0 ? '' : ','}\n    ${nestedJson(disk, 2)}`);
        head = '';
        count++;
      },
    });
    const start = count === 0 ? `{\n  "root": ${JSON.stringify(catalog.root)},\n  "disks": [],\n` : '\n  ],\n';
    process.stdout.write(`${start}  "problems": ${nestedJson(namedProblems(catalog.problems), 1)}\n}\n`);
    return;
  }
  let client = '';
  let count = 0;
  const catalog = await scanCatalog(root, describeDisk, {
    holes: false,
    fs: scanBackupFs,
    emit: (disk) => {
      const lines: string[] = [];
      count++;
      if (disk.client !== client) {
        client = disk.client;
        lines.push(client);
      }
      const table = disk.tableType === 'whole-disk' ? 'whole-disk image' : `${disk.tableType.toUpperCase()}, ${disk.sectorSize}-byte sectors`;
      lines.push(`  ${disk.timestamp}  ${disk.letter}:  disk ${formatBytes(disk.size)} (${disk.size} bytes), ${table}`);
      for (const file of disk.files) lines.push(`    ${file.name}${file.reason === undefined ? '' : `  (not offered: ${file.reason})`}`);
      for (const volume of disk.volumes) {
        lines.push(`    partition ${volume.partition}: ${volume.letter} from ${volume.timestamp}, ${formatBytes(volume.length)} at ${volume.offset}`);
      }
      for (const partition of disk.zeroPartitions) {
        lines.push(`    partition ${partition.partition}: not backed up, reads as zeros (${formatBytes(partition.length)}${partition.name === '' ? '' : `, ${partition.name}`})`);
      }
      for (const note of disk.notes) lines.push(`    note: ${note}`);
      process.stdout.write(`${lines.join('\n')}\n`);
    },
  });
  const lines: string[] = [];
  if (count === 0) lines.push(`no RAW image backups of drive-letter volumes found under ${catalog.root}`);
  if (catalog.problems.length > 0) {
    lines.push('not served:');
    for (const problem of namedProblems(catalog.problems)) lines.push(`  ${problem.reason}`);
  }
  if (lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
}
