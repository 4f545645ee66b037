// SPDX-License-Identifier: MIT
/**
 * What is mounted where, from /proc/self/mountinfo (proc(5)): never from stat() of a mount
 * point, which hangs or fails on a dead FUSE mount ("Transport endpoint is not connected").
 */
import { readFile } from 'node:fs/promises';

export interface MountEntry {
  /** major:minor of the mounted file system (its st_dev; FUSE's bdi is /sys/class/bdi/<this>). */
  readonly device: string;
  readonly mountPoint: string;
  /** e.g. `fuse.synthvhd` (fuse + "." + subtype). */
  readonly fsType: string;
  readonly source: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    if (separator < 6) continue;
    const device = fields[2];
    const mountPoint = fields[4];
    const fsType = fields[separator + 1];
    const source = fields[separator + 2];
    if (device === undefined || mountPoint === undefined || fsType === undefined) continue;
    entries.push({ device, mountPoint: unescape(mountPoint), fsType, source: unescape(source ?? '') });
  }
  return entries;
}

export async function readMounts(): Promise<MountEntry[]> {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** The topmost mount at exactly `mountPoint` (an absolute, resolved path), if any. */
export async function findMount(mountPoint: string): Promise<MountEntry | undefined> {
  return (await readMounts()).filter((entry) => entry.mountPoint === mountPoint).at(-1);
}
