// SPDX-License-Identifier: MIT
/** `synthvhd materialize SOURCE -o OUT.vhdx|OUT.vhd`: the whole disk as a real file. */
import { resolve } from 'node:path';
import { composeDiskFor, resolveSource } from '../../catalog/catalog.js';
import { containerLayout, formatOfPath } from '../../catalog/virtual-files.js';
import { errorNaming } from '../../errors/naming.js';
import { fileError, isSynthvhdError } from '../../errors/synthvhd-error.js';
import { refuseExisting, writeLayout, type ReflinkMode } from '../../materialize/write-layout.js';
import { formatBytes } from '../../util/format-bytes.js';
import { progressBar } from '../progress.js';

export interface MaterializeOptions {
  readonly output: string;
  readonly blockSize?: string;
  readonly force?: boolean;
  readonly json?: boolean;
  readonly reflink?: string;
}

export function parseReflinkMode(text: string | undefined): ReflinkMode {
  if (text === undefined || text === 'auto' || text === 'always' || text === 'never') return text ?? 'auto';
  throw fileError('E_USAGE', '--reflink', `${text} is not one of auto, always, never`);
}

export function parseBlockSize(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const mebibytes = Number(text);
  if (!Number.isInteger(mebibytes) || mebibytes < 1 || mebibytes > 256 || (mebibytes & (mebibytes - 1)) !== 0) {
    throw fileError('E_USAGE', '--block-size', `${text} is not a power of two from 1 to 256 (MiB)`);
  }
  return mebibytes * 1024 * 1024;
}

export async function materializeCommand(source: string, options: MaterializeOptions): Promise<void> {
  const output = resolve(options.output);
  const format = formatOfPath(output);
  const blockSize = parseBlockSize(options.blockSize);
  const reflink = parseReflinkMode(options.reflink);
  await refuseExisting(output, options.force ?? false);
  const { anchor, siblings } = await resolveSource(source);
  // Its one error line names the backup's image even when the parser that failed did not know it
  // (siblings that fail to load are left out: what fails is the anchor or a file the error names).
  const naming = (error: unknown): never => {
    throw isSynthvhdError(error) ? errorNaming(error, anchor.rawPath) : error;
  };
  const { disk } = await composeDiskFor(anchor, siblings).catch(naming);
  const layout = containerLayout(disk.image, format, blockSize === undefined ? {} : { blockSize });
  const progress = progressBar(`materialize ${format}`);
  const report = await writeLayout(layout, output, {
    force: options.force ?? false,
    reflink,
    confinement: { root: anchor.root },
    onProgress: (done, total) => {
      progress.update(done, total);
    },
  }).catch(naming);
  progress.finish();
  if (options.json === true) {
    const volumes = disk.placed.map(({ volume, partition }) => ({ letter: volume.backup.letter, partition: partition.number, raw: volume.backup.rawPath }));
    process.stdout.write(`${JSON.stringify({ ...report, format, diskSize: disk.image.layout.size, volumes, unplaced: disk.unplaced, notes: disk.notes }, null, 2)}\n`);
    return;
  }
  const lines = [
    `wrote ${output}: ${format}, disk ${formatBytes(disk.image.layout.size)}, file ${formatBytes(report.size)}`,
    `  cloned ${formatBytes(report.clonedBytes)}, copied ${formatBytes(report.copiedBytes)}, generated ${formatBytes(report.generatedBytes)}, left as holes ${formatBytes(report.holeBytes)}, in ${report.seconds.toFixed(2)} s`,
    ...report.copyReasons.map((reason) => `  copied, not cloned: ${reason}`),
    ...disk.placed.map(({ volume, partition }) => `  partition ${partition.number}: ${volume.backup.letter} from ${volume.backup.rawPath}`),
    ...disk.unplaced.map((entry) => `  not placed: ${entry.reason}`),
    ...disk.notes.map((note) => `  note: ${note}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
