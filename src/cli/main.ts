#!/usr/bin/env node
// SPDX-License-Identifier: MIT
/**
 * The synthvhd command line. Each command parses its options, calls one function and prints.
 * Exit codes: 0 success, 1 bad input or a failed operation, 2 usage error, 70 internal error.
 */
import { Command, CommanderError } from 'commander';
import { isSynthvhdError } from '../errors/synthvhd-error.js';
import { inspectCommand } from './commands/inspect.js';
import { lsCommand } from './commands/ls.js';
import { materializeCommand } from './commands/materialize.js';

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

export function buildProgram(): Command {
  const program = new Command('synthvhd')
    .description('Whole-disk VHD/VHDX files from urBackup RAW image backups, composed on the fly')
    .showHelpAfterError()
    .exitOverride();

  program
    .command('ls')
    .description('list clients, backup runs, the disks they make and the virtual files served for them')
    .argument('<root>', 'urBackup backup folder (the one holding the client folders)')
    .option('--json', 'machine-readable output')
    .addHelpText('after', '\nExample:\n  synthvhd ls /srv/urbackup --json')
    .action(lsCommand);

  program
    .command('materialize')
    .description('write the whole disk a volume backup lived on as a .vhdx or .vhd file')
    .argument('<source>', 'a drive-letter volume backup folder (<client>/<YYMMDD-HHMM>_Image_C) or its .raw')
    .requiredOption('-o, --output <file>', 'output file; .vhdx or .vhd decides the format')
    .option('--block-size <MiB>', 'VHDX payload block size in MiB (power of two, 1-256)', '32')
    .option('--force', 'replace an existing output file')
    .option('--json', 'print a machine-readable report')
    .addHelpText('after', '\nExample:\n  synthvhd materialize /srv/urbackup/pc1/241101-0100_Image_C -o /srv/vdisks/pc1-C.vhdx')
    .action(materializeCommand);

  program
    .command('inspect')
    .description('show what a .vhd or .vhdx file says about itself')
    .argument('<file>', '.vhd or .vhdx file')
    .option('--json', 'machine-readable output')
    .addHelpText('after', '\nExample:\n  synthvhd inspect disk.vhdx --json')
    .action(inspectCommand);
