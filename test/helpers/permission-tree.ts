// SPDX-License-Identifier: MIT
/**
 * A backup root whose clients have different owners and modes, for the "who may read what"
 * tests (mount as other users, Samba users). Built from copies of one fixture disk's backup
 * folders (the shared fixture tree is never touched):
 *
 * - `pc-open`     0755 folders, 0644 files: everyone may read;
 * - `pc-private`  owned by the test user alice, 0711/0600: alice only. Others may pass through
 *                 its folders (x) but neither list them nor read its files, so what refuses them
 *                 the virtual disk is the disk's own computed mode (src/fuse/reader-access.ts);
 * - `pc-group`    root:nogroup, 0751/0640: members of nogroup (nobody's group) only; others may
 *                 pass through (x), so again only the disk's mode refuses them;
 * - `pc-mixed`    like pc-open, but one companion folder (SYSVOL) is 0700: its disk is not for others;
 * - `pc-link`     the drive-letter `.raw` is a symlink to a copy outside the root holding MARKER;
 * - `pc-bigmbr`   the drive-letter `.raw.mbr` is a 4 GiB sparse file;
 * - `pc-alias`    a symlink to a complete client folder outside the root;
 * - `secret.txt`  0600 in the root; `pc-open/outside-link` a symlink to the outside copy.
 *
 * Test users are system users made on demand and removed again (`cleanup`).
 */
import { chmod, chown, mkdir, mkdtemp, open, readdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { FixtureDisk } from '../../fixtures/build-fixtures.js';
import { run, runOk } from './run.js';

export const MARKER = Buffer.from('SYNTHVHD-OUTSIDE-THE-BACKUP-ROOT-MARKER:');

export interface TestUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

export interface PermissionTree {
  readonly base: string;
  readonly root: string;
  readonly outsideRaw: string;
  readonly alice: TestUser;
  readonly bob: TestUser;
  readonly nobody: TestUser;
  /** Backup folder name of the drive-letter volume in every client (`<ts>_Image_C`). */
  readonly anchorFolder: string;
  /** The virtual disk's name in that folder. */
  readonly vhdxName: string;
  cleanup(): Promise<void>;
}

async function idOf(name: string, flag: '-u' | '-g'): Promise<number> {
  return Number((await runOk('id', [flag, name])).stdout.trim());
}

/** A system user `name` (created if missing) with its own group; `created` when this call made it. */
async function ensureUser(name: string): Promise<TestUser & { created: boolean }> {
  let created = false;
  if ((await run('id', ['-u', name])).code !== 0) {
    await runOk('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', name]);
    created = true;
  }
  return { name, uid: await idOf(name, '-u'), gid: await idOf(name, '-g'), created };
}

async function walk(path: string, visit: (path: string, isDirectory: boolean) => Promise<void>): Promise<void> {
  await visit(path, true);
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) await walk(child, visit);
    else await visit(child, false);
  }
}

/** Sets owner and modes on a whole client folder. */
async function own(path: string, uid: number, gid: number, directoryMode: number, fileMode: number): Promise<void> {
  await walk(path, async (entry, isDirectory) => {
    await chown(entry, uid, gid);
    await chmod(entry, isDirectory ? directoryMode : fileMode);
  });
}

async function copyTree(from: string, to: string): Promise<void> {
  await runOk('cp', ['-r', '--reflink=auto', '--sparse=always', from, to]);
}

/** Builds the tree from the backup folders of `disk` (a disk with a companion volume). */
export async function buildPermissionTree(disk: FixtureDisk): Promise<PermissionTree> {
  const base = await mkdtemp(join(tmpdir(), 'synthvhd-perm-'));
  await chmod(base, 0o755);
  const root = join(base, 'backups');
  const outside = join(base, 'outside');
  await mkdir(root, { mode: 0o755 });
  await chmod(root, 0o755);
  await mkdir(outside, { mode: 0o700 });
  const [alice, bob] = [await ensureUser('synthvhd-alice'), await ensureUser('synthvhd-bob')];
  const nobody = { name: 'nobody', uid: await idOf('nobody', '-u'), gid: await idOf('nobody', '-g') };
  const anchorFolder = basename(disk.anchor.backupDir);
  const anchorRawName = basename(disk.anchor.rawPath);
  const companion = disk.volumes.find((volume) => volume !== disk.anchor);
  if (companion === undefined) throw new Error(`fixture ${disk.name} has no companion volume`);

  const makeClient = async (client: string): Promise<string> => {
    const dir = join(root, client);
    await mkdir(dir);
    for (const volume of disk.volumes) await copyTree(volume.backupDir, join(dir, basename(volume.backupDir)));
    await own(dir, 0, 0, 0o755, 0o644);
    return dir;
  };
  await makeClient('pc-open');
  await own(await makeClient('pc-private'), alice.uid, alice.gid, 0o711, 0o600);
  await own(await makeClient('pc-group'), 0, nobody.gid, 0o751, 0o640);
  const mixed = await makeClient('pc-mixed');
  await chmod(join(mixed, basename(companion.backupDir)), 0o700);

  // Outside the root: a valid copy of the anchor's .raw with MARKER written into its volume.
  const outsideRaw = join(outside, 'secret.raw');
  await copyTree(disk.anchor.rawPath, outsideRaw);
  const handle = await open(outsideRaw, 'r+');
  try {
    await handle.write(Buffer.concat(Array.from({ length: 64 }, () => MARKER)), 0, undefined, 524288 + 1024 * 1024);
  } finally {
    await handle.close();
  }
  await chmod(outsideRaw, 0o600);
  const link = await makeClient('pc-link');
  const linkedRaw = join(link, anchorFolder, anchorRawName);
  await rm(linkedRaw);
  await symlink(outsideRaw, linkedRaw);

  const big = await makeClient('pc-bigmbr');
  await truncate(join(big, anchorFolder, `${anchorRawName}.mbr`), 4 * 1024 ** 3);

  const aliased = await makeClient('pc-aliased');
  await copyTree(aliased, join(outside, 'client'));
  await rm(aliased, { recursive: true });
  await symlink(join(outside, 'client'), join(root, 'pc-alias'));

  await writeFile(join(root, 'secret.txt'), 'root only\n', { mode: 0o600 });
  await chmod(join(root, 'secret.txt'), 0o600);
  await symlink(outsideRaw, join(root, 'pc-open', 'outside-link'));

  return {
    base,
    root,
    outsideRaw,
    alice,
    bob,
    nobody,
    anchorFolder,
    vhdxName: anchorRawName.replace(/\.raw$/, '.disk.vhdx'),
    cleanup: async () => {
      await rm(base, { recursive: true, force: true });
      for (const user of [alice, bob]) if (user.created) await run('userdel', [user.name]);
    },
  };
}

/** A system group `name` holding `members` (created if missing); returns its cleanup. */
export async function ensureGroup(name: string, members: readonly TestUser[]): Promise<{ gid: number; cleanup: () => Promise<void> }> {
  const created = (await run('getent', ['group', name])).code !== 0;
  if (created) await runOk('groupadd', ['--system', name]);
  for (const member of members) await runOk('usermod', ['-a', '-G', name, member.name]);
  return {
    gid: Number((await runOk('getent', ['group', name])).stdout.split(':')[2]),
    cleanup: async () => {
      if (created) await run('groupdel', [name]);
      else for (const member of members) await run('gpasswd', ['-d', member.name, name]);
    },
  };
}

/** Runs `command` as `user` (its own groups), returning exit code and output. */
export function runAs(user: TestUser, command: string, args: readonly string[]): ReturnType<typeof run> {
  return run('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', '--', command, ...args]);
}
