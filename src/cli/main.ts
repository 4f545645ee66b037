#!/usr/bin/env node
// SPDX-License-Identifier: MIT
/**
 * The synthvhd command line. Each command parses its options, calls one function and prints.
 * Exit codes: 0 success, 1 bad input or a failed operation, 2 usage error, 70 internal error.
 */
import { Command, CommanderError } from 'commander';
import { isSynthvhdError } from '../errors/synthvhd-error.js';
import { registerBlocklistCommands } from './commands/blocklist.js';
import { setLogLevel } from '../util/logger.js';

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERNAL = 70;

function exitCodeOf(error: unknown): number {
  if (isSynthvhdError(error)) {
    if (error.code === 'E_USAGE') return EXIT_USAGE;
    if (error.code === 'E_INTERNAL') return EXIT_INTERNAL;
    return EXIT_FAILURE;
  }
  return EXIT_INTERNAL;
}

type AnyAction = (...args: unknown[]) => unknown;

/**
 * Loads a command's module only when it runs: `synthvhd ls` need not load the FUSE addon, and
 * `materialize` need not load the FUSE layer (start-up dominates short commands).
 */
function lazy<M>(load: () => Promise<M>, pick: (module: M) => unknown): (...args: unknown[]) => Promise<void> {
  return async (...args) => {
    await (pick(await load()) as AnyAction)(...args);
  };
}

export function buildProgram(): Command {
  const program = new Command('synthvhd')
    .description('Whole-disk VHD/VHDX files from urBackup RAW image backups, composed on the fly')
    .option('-v, --verbose', 'also print debug messages on stderr')
    .option('-q, --quiet', 'print only errors on stderr (no progress bars)')
    .showHelpAfterError()
    .exitOverride()
    .hook('preAction', (command) => {
      const { verbose, quiet } = command.opts<{ verbose?: boolean; quiet?: boolean }>();
      setLogLevel(quiet === true ? 'error' : verbose === true ? 'debug' : 'info');
    });

  program
    .command('ls')
    .description('list clients, backup runs, the disks they make and the virtual files served for them')
    .argument('<root>', 'urBackup backup folder (the one holding the client folders)')
    .option('--json', 'machine-readable output')
    .addHelpText('after', '\nExample:\n  synthvhd ls /srv/urbackup --json')
    .action(lazy(() => import('./commands/ls.js'), (module) => module.lsCommand));

  program
    .command('materialize')
    .description('write the whole disk a volume backup lived on as a .vhdx or .vhd file')
    .argument('<source>', 'a drive-letter volume backup folder (<client>/<YYMMDD-HHMM>_Image_C) or its .raw')
    .requiredOption('-o, --output <file>', 'output file; .vhdx or .vhd decides the format')
    .option('--block-size <MiB>', 'VHDX payload block size in MiB (power of two, 1-256)', '32')
    .option('--reflink <mode>', 'auto: share partition data with the .raw files where the file system can (btrfs, XFS, ZFS), copy the rest; always: fail before writing if it cannot; never: copy', 'auto')
    .option('--force', 'replace an existing output file')
    .option('--json', 'print a machine-readable report')
    .addHelpText('after', '\nExample:\n  synthvhd materialize /srv/urbackup/pc1/241101-0100_Image_C -o /srv/vdisks/pc1-C.vhdx')
    .action(lazy(() => import('./commands/materialize.js'), (module) => module.materializeCommand));

  program
    .command('diff')
    .description("write what changed between two backups of a disk as a differencing VHDX whose parent is the older backup's .disk.vhdx")
    .argument('<older>', 'the older drive-letter volume backup folder (or its .raw)')
    .argument('<newer>', 'the newer backup of the same volume')
    .requiredOption('-o, --output <file.vhdx>', 'the differencing VHDX to write')
    .option('--parent <file>', "the parent's path as the child should name it (default: the older backup's served Image_<L>_<ts>.disk.vhdx); checked by DataWriteGuid when it exists")
    .option('--windows-path <folder>', "the parent's folder as Windows reaches it (\\\\server\\share\\pc1\\241101-0100_Image_C or D:\\VMs): written as the diff's absolute_win32_path (otherwise only relative_path)")
    .option('--reflink <mode>', 'auto, always or never (as for materialize)', 'auto')
    .option('--force', 'replace an existing output file')
    .option('--json', 'print a machine-readable report')
    .addHelpText('after', '\nExample:\n  synthvhd diff /srv/urbackup/pc1/241101-0100_Image_C /srv/urbackup/pc1/241108-0100_Image_C -o /srv/vdisks/pc1-C-241108_diff.vhdx --parent /srv/vdisks/pc1-C-241101.vhdx')
    .action(lazy(() => import('./commands/diff.js'), (module) => module.diffCommand));

  program
    .command('verify')
    .description("re-hash a volume backup and compare it with urBackup's .raw.hash (SHA-256 per 512 KiB)")
    .argument('<backup>', 'a volume backup folder (<client>/<YYMMDD-HHMM>_Image_<L>) or its .raw')
    .option('--json', 'machine-readable report')
    .addHelpText('after', '\nExit code 1 when any chunk does not match.\nExample:\n  synthvhd verify /srv/urbackup/pc1/241101-0100_Image_C')
    .action(lazy(() => import('./commands/verify.js'), (module) => module.verifyCommand));

  program
    .command('inspect')
    .description('show what a .vhd or .vhdx file says about itself; with --map, where each of its bytes comes from')
    .argument('<target>', '.vhd or .vhdx file; with --map also a volume backup folder (<client>/<YYMMDD-HHMM>_Image_<L>) or its .raw')
    .option('--map', 'print the extent map: for a file its own structures by file offset (and, for a disk served by a synthvhd mount, the composed layout with the source of each range); for a backup folder the composed disk and both containers')
    .option('--offset <n>', 'with --map: only the range holding byte N (decimal or 0x hex) of each map')
    .option('--json', 'machine-readable output')
    .addHelpText('after', '\nExamples:\n  synthvhd inspect disk.vhdx --json\n  synthvhd inspect --map /srv/urbackup/pc1/241101-0100_Image_C --offset 0x100000')
    .action(lazy(() => import('./commands/inspect.js'), (module) => module.inspectCommand));

  program
    .command('mount')
    .description('serve a backup root read-only over FUSE, with the whole-disk .disk.vhdx/.disk.vhd in each drive-letter backup folder (and .disk_diff.vhdx over the previous run, and blocklists with --blocklist-cache); runs until SIGINT/SIGTERM')
    .argument('<root>', 'urBackup backup folder (the one holding the client folders)')
    .argument('<mountpoint>', 'an empty directory outside the backup root')
    .option('--allow-other', 'let other users in (needed to share the mount with Samba)')
    .option('--debug', "libfuse's debug output on stderr")
    .option('--blocklist-cache <dir>', 'serve the blocklists in this cache dir (made by `blocklist create --cache-dir`) as Image_<L>_<ts>.disk.vhdx.blocklist.bin beside each disk; outside the backup root')
    .option('--blocklists', 'compute missing blocklists into --blocklist-cache in the background, for each backup folder when it is first looked at')
    .option('--clone-cache <dir>', 'make the clones (below) as named files in a folder of this directory instead, on the backup\'s file system and outside the backup root; removed at unmount')
    .option('--no-clones', 'serve every disk through the daemon; by default, on btrfs, XFS or ZFS, each disk of uncompressed backups is served from an unnamed reflinked copy (kilobytes, gone at unmount) that the kernel reads itself (FUSE passthrough)')
    .option('--windows-path <share>', 'the mount point as Windows reaches it (\\\\server\\vdisks): served .disk_diff.vhdx files then name their parent there in absolute_win32_path (otherwise only relative_path)')
    .addHelpText('after', '\nExample:\n  synthvhd mount --allow-other /srv/urbackup /srv/vdisks\n  (then share /srv/vdisks read-only with Samba: see contrib/smb.conf.example)')
    .action(lazy(() => import('./commands/mount.js'), (module) => module.mountCommand));

  program
    .command('unmount')
    .description('unmount a synthvhd mount, e.g. one left behind after a crash')
    .argument('<mountpoint>', 'where it is mounted')
    .option('--lazy', 'detach it even while files on it are open')
    .addHelpText('after', '\nExample:\n  synthvhd unmount /srv/vdisks')
    .action(lazy(() => import('./commands/unmount.js'), (module) => module.unmountCommand));

  program
    .command('doctor')
    .description('check FUSE, libfuse, fusermount and, with a backup root, its file system (reflink), backups and free space')
    .argument('[root]', 'urBackup backup folder to check (never written to)')
    .option('--probe-dir <dir>', 'where the reflink probe may write two temp files (default: the parent of ROOT)')
    .option('--json', 'machine-readable output')
    .addHelpText('after', '\nExit code 1 when a check failed (warnings do not count).\n\nExample:\n  synthvhd doctor /srv/urbackup')
    .action(lazy(() => import('./commands/doctor.js'), (module) => module.doctorCommand));

  registerBlocklistCommands(program);

  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  try {
    await buildProgram().parseAsync([...argv]);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : EXIT_USAGE;
    const message = isSynthvhdError(error) ? error.message : `internal error (please report): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`;
    process.stderr.write(`synthvhd: ${message.replace(/\n/g, ' ')}\n`);
    return exitCodeOf(error);
  }
}

process.exitCode = await main(process.argv);
