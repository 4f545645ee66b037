// SPDX-License-Identifier: MIT
/**
 * `synthvhd blocklist create|check|copy` and `synthvhd merge`: LTR Data's VhdBlockBackup workflow
 * (`--createmeta`, `--check`, `--copy`, then Merge-VHD) on Linux, with lists both tools read.
 */
import { type Command, Option } from 'commander';
import { parseWindowsFolder } from '../../container/windows-path.js';
import { type CheckReport, checkBlocklists } from '../../blocklist/check.js';
import { copyChangedBlocks } from '../../blocklist/copy.js';
import { createBlocklist } from '../../blocklist/create.js';
import { mergeDiff } from '../../blocklist/merge.js';
import { BLOCKLIST_BLOCK_SIZE } from '../../blocklist/blocklist.js';
import { fileError } from '../../errors/synthvhd-error.js';
import { formatBytes } from '../../util/format-bytes.js';
import { progressBar } from '../progress.js';

interface CommonOptions {
  readonly cacheDir?: string;
  readonly json?: boolean;
  readonly threads?: string;
}

function parseThreads(text: string | undefined): { workers?: number } {
  if (text === undefined) return {};
  const threads = Number(text);
  if (!Number.isInteger(threads) || threads < 1 || threads > 64) throw fileError('E_USAGE', '--threads', `${text} is not a number from 1 to 64`);
  return { workers: threads };
}

function print(json: boolean | undefined, value: unknown, lines: readonly string[]): void {
  process.stdout.write(json === true ? `${JSON.stringify(value, null, 2)}\n` : `${lines.join('\n')}\n`);
}

/** "3-5, 40, 77-79" (block numbers of 2 MiB), at most `limit` runs. */
function describeBlocks(report: CheckReport, limit = 12): string {
  const runs = report.changedRanges.map((range) => {
    const first = range.start / BLOCKLIST_BLOCK_SIZE;
    const last = Math.ceil((range.start + range.length) / BLOCKLIST_BLOCK_SIZE) - 1;
    return first === last ? `${first}` : `${first}-${last}`;
  });
  return runs.length > limit ? `${runs.slice(0, limit).join(', ')}, … (${runs.length} runs)` : runs.join(', ');
}

function checkLines(report: CheckReport): string[] {
  if (report.changedBlocks === 0) return [`${report.source} -> ${report.target}: no changes detected (${report.blocks} blocks of 2 MiB compared)`];
  return [
    `${report.source} -> ${report.target}: ${report.changedBlocks} of ${report.blocks} blocks of 2 MiB changed, ${formatBytes(report.changedBytes)} (${report.changedBytes} bytes, ${report.changedPercent.toFixed(1)}% of the ${formatBytes(report.diskSize)} disk) to copy`,
    `  changed blocks: ${describeBlocks(report)}`,
  ];
}

async function createAction(images: string[], options: CommonOptions): Promise<void> {
  const reports = [];
  for (const image of images) {
    const progress = progressBar(`hash ${image}`);
    const report = await createBlocklist(image, {
      ...(options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir }),
      ...parseThreads(options.threads),
      onProgress: (done, total) => {
        progress.update(done, total);
      },
    });
    progress.finish();
    reports.push(report);
  }
  print(
    options.json,
    reports.length === 1 ? reports[0] : reports,
    reports.map((report) => {
      const rate = report.seconds > 0 ? `, ${formatBytes(report.hashedBytes / report.seconds)}/s on ${report.workers} thread${report.workers === 1 ? '' : 's'}` : '';
      return `wrote ${report.list}: ${report.blocks} blocks of 2 MiB of ${report.image} (${report.zeroBlocks} all-zero, not read), hashed ${formatBytes(report.hashedBytes)} in ${report.seconds.toFixed(2)} s${rate}`;
    }),
  );
}

async function checkAction(source: string, target: string, options: CommonOptions): Promise<void> {
  const report = await checkBlocklists(source, target, options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir });
  print(options.json, report, checkLines(report));
}

interface CopyCliOptions extends CommonOptions {
  readonly createmeta?: boolean;
  readonly diffdir?: string;
  readonly windowsPath?: string;
}

async function copyAction(source: string, target: string, options: CopyCliOptions): Promise<void> {
  const hashing = progressBar('hash source');
  const writing = progressBar('write diff');
  const report = await copyChangedBlocks(source, target, {
    ...(options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir }),
    ...(options.diffdir === undefined ? {} : { diffdir: options.diffdir }),
    createmeta: options.createmeta ?? false,
    ...(options.windowsPath === undefined ? {} : { windowsPath: parseWindowsFolder(options.windowsPath) }),
    ...parseThreads(options.threads),
    onProgress: (done, total) => {
      hashing.update(done, total);
    },
    onWriteProgress: (done, total) => {
      writing.update(done, total);
    },
  });
  hashing.finish();
  writing.finish();
  const lines = [...(report.sourceListCreated === undefined ? [] : [`wrote ${report.sourceListCreated.list}`]), ...checkLines(report)];
  if (report.diff !== undefined && report.write !== undefined) {
    lines.push(
      `wrote ${report.diff}: differencing VHDX, parent ${report.target} (${report.fullyPresentBlocks} payload blocks fully and ${report.partiallyPresentBlocks} partly present), file ${formatBytes(report.write.size)}, in ${report.write.seconds.toFixed(2)} s`,
      `wrote ${report.diffList ?? ''} (the source's list: after merging, it is the merged image's list)`,
    );
  } else {
    lines.push('nothing written');
  }
  print(options.json, report, lines);
}

interface MergeCliOptions {
  readonly output?: string;
  readonly force?: boolean;
  readonly json?: boolean;
}

async function mergeAction(diff: string, options: MergeCliOptions): Promise<void> {
  const progress = progressBar('merge');
  const report = await mergeDiff(diff, {
    ...(options.output === undefined ? {} : { output: options.output }),
    force: options.force ?? false,
    onProgress: (done, total) => {
      progress.update(done, total);
    },
  });
  progress.finish();
  print(options.json, report, [
    `wrote ${report.output}: ${report.format}, disk ${formatBytes(report.diskSize)} = ${report.diff} over ${report.chain.slice(1).join(' over ')}, file ${formatBytes(report.write.size)}, in ${report.write.seconds.toFixed(2)} s`,
    report.list === undefined ? `note: ${report.listNote ?? 'no list'}` : `wrote ${report.list} (the diff's list)`,
    'the parent and the diff were not modified',
  ]);
}

const cacheDirOption = (): Option =>
  new Option('--cache-dir <dir>', 'where the lists of urBackup backups go (outside the backup root; the FUSE mount serves them from there)');

/** Adds `blocklist` (create, check, copy) and `merge` to the program. */
export function registerBlocklistCommands(program: Command): void {
  const blocklist = program
    .command('blocklist')
    .description("VhdBlockBackup-compatible block checksum lists (<image>.blocklist.bin: SHA-1/16 per 2 MiB of the disk) and diffs")
    .addHelpText('after', '\nWorkflow:\n  synthvhd blocklist create new.vhdx; synthvhd blocklist create backup.vhdx\n  synthvhd blocklist check new.vhdx backup.vhdx\n  synthvhd blocklist copy new.vhdx backup.vhdx      # writes backup_diff.vhdx (+ its list)\n  synthvhd merge backup_diff.vhdx                   # writes backup.merged.vhdx (+ its list)');

  blocklist
    .command('create')
    .description('write IMAGE.blocklist.bin for each image (.vhd, .vhdx with its parents, raw), or the list of a urBackup backup\'s whole disk into --cache-dir')
    .argument('<image...>', '.vhd/.vhdx/raw image files, or urBackup volume backup folders')
    .addOption(cacheDirOption())
    .option('--threads <n>', 'hashing threads (default: one per core)')
    .option('--json', 'print a machine-readable report')
    .addHelpText('after', '\nExamples:\n  synthvhd blocklist create /srv/vm/disk0.vhdx\n  synthvhd blocklist create --cache-dir /var/cache/synthvhd /srv/urbackup/pc1/241101-0100_Image_C')
    .action(createAction);

  blocklist
    .command('check')
    .description('how many 2 MiB blocks and bytes a copy from SOURCE to TARGET would move; refuses lists that are stale, of the wrong length, or of disks of different sizes')
    .argument('<source>', 'the newer image (or backup folder)')
    .argument('<target>', 'the older image the copy would update')
    .addOption(cacheDirOption())
    .option('--json', 'print a machine-readable report (with the changed byte ranges)')
    .addHelpText('after', '\nExample:\n  synthvhd blocklist check /srv/vm/disk0.vhdx /mnt/backup/disk0.vhdx')
    .action(checkAction);

  blocklist
    .command('copy')
    .description('write TARGET_diff.vhdx: a differencing VHDX whose parent is TARGET (never modified) holding the blocks of SOURCE that changed, plus its list')
    .argument('<source>', 'the newer image (or backup folder)')
    .argument('<target>', 'the older .vhdx: the parent of the diff')
    .option('--createmeta', "hash SOURCE now (and write its list) instead of reading its list")
    .option('--diffdir <dir>', 'write the diff into this folder instead of beside TARGET')
    .option('--windows-path <folder>', "TARGET's folder as Windows reaches it (\\\\nas\\vms or D:\\VMs): the diff's absolute_win32_path then names TARGET there (otherwise only relative_path is written)")
    .addOption(cacheDirOption())
    .option('--threads <n>', 'hashing threads with --createmeta (default: one per core)')
    .option('--json', 'print a machine-readable report')
    .addHelpText('after', '\nExamples:\n  synthvhd blocklist copy /srv/vm/disk0.vhdx /mnt/backup/disk0.vhdx\n  synthvhd blocklist copy --createmeta --diffdir /tmp/out new.vhdx /mnt/backup/disk0.vhdx')
    .action(copyAction);

  program
    .command('merge')
    .description("write the disk of a differencing VHD/VHDX (DIFF over its parents) as a new image; nothing is modified; DIFF's list becomes the new image's list")
    .argument('<diff>', 'the differencing .vhdx (e.g. disk0_diff.vhdx from blocklist copy)')
    .option('-o, --output <file>', 'output .vhdx or .vhd (default: <parent name>.merged.vhdx beside the parent)')
    .option('--force', 'replace an existing output file (never the parent or the diff)')
    .option('--json', 'print a machine-readable report')
    .addHelpText('after', '\nExample:\n  synthvhd merge /mnt/backup/disk0_diff.vhdx -o /mnt/backup/disk0.new.vhdx')
    .action(mergeAction);
}
