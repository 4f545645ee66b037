// SPDX-License-Identifier: MIT
/**
 * Assembles the whole disk synthvhd must produce for a fixture disk, independently of src/:
 * the truth image with everything outside `disk.keep` zeroed, at exactly `disk.diskSize` bytes.
 *
 * Only standard tools: `cp --sparse=always` (coreutils; it follows SEEK_DATA/SEEK_HOLE, so the
 * 3 TiB huge-gpt truth copies in milliseconds where `dd` would read every hole), `truncate` to
 * the exact size, then every gap between keep ranges is zeroed with `fallocate --punch-hole`
 * (util-linux; it zeroes partial blocks too and leaves the file sparse). The result is byte for
 * byte what `truncate` + one `dd … conv=notrunc,sparse` per keep range would give.
 */
import { execFile as execFileCallback } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { FixtureDisk } from '../../fixtures/build-fixtures.js';

const execFile = promisify(execFileCallback);

async function tool(cmd: string, args: readonly string[]): Promise<void> {
  try {
    await execFile(cmd, args, { env: { ...process.env, LC_ALL: 'C' } });
  } catch (err) {
    const stderr = typeof err === 'object' && err !== null && 'stderr' in err && typeof err.stderr === 'string' ? err.stderr.trim() : '';
    throw new Error(`assembleExpectedDisk: ${cmd} ${args.join(' ')}: ${stderr || String(err)}`, { cause: err });
  }
}

/** The ranges of [0, size) not covered by `keep` (which may be unsorted but must not overlap). */
function gaps(keep: FixtureDisk['keep'], size: number): { start: number; length: number }[] {
  const sorted = [...keep].sort((a, b) => a.start - b.start);
  const out: { start: number; length: number }[] = [];
  let position = 0;
  for (const range of sorted) {
    if (range.start < position) throw new Error(`assembleExpectedDisk: keep range ${range.what} overlaps the previous one`);
    if (range.start > position) out.push({ start: position, length: range.start - position });
    position = range.start + range.length;
  }
  if (position > size) throw new Error(`assembleExpectedDisk: keep ranges end at ${position}, past the disk size ${size}`);
  if (position < size) out.push({ start: position, length: size - position });
  return out;
}

export async function assembleExpectedDisk(disk: FixtureDisk, outPath: string): Promise<void> {
  await rm(outPath, { force: true });
  await tool('cp', ['--sparse=always', '--reflink=never', disk.truthImage, outPath]);
  await tool('truncate', ['-s', String(disk.diskSize), outPath]);
  for (const gap of gaps(disk.keep, disk.diskSize)) {
    await tool('fallocate', ['--punch-hole', '--offset', String(gap.start), '--length', String(gap.length), outPath]);
  }
}
