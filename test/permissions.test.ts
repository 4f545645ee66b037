// SPDX-License-Identifier: MIT
/**
 * Who may read what (docs/architecture.md "Who may read what"): the mount, with --allow-other,
 * read by other local users; sources outside the backup root; an oversized .raw.mbr. The
 * witnesses are the kernel's answers to other users (EACCES or the bytes), the bytes themselves
 * and, for "not read", the kernel's I/O count of the process (/proc/<pid>/io).
 */
import { lstat, readdir, readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { buildPermissionTree, MARKER, runAs, type PermissionTree } from './helpers/permission-tree.js';
import { CLI, run, runOk, sha256File, synthvhd } from './helpers/run.js';

const fixtures = inject('fixtures');
const disk = fixtures.disks.find((candidate) => candidate.name === 'bios-mbr');
if (disk === undefined) throw new Error('fixture bios-mbr missing');

let tree: PermissionTree;
let mountpoint: { path: string; cleanup: () => Promise<void> };
let mount: MountedChild | undefined;

beforeAll(async () => {
  tree = await buildPermissionTree(disk);
  mountpoint = await tempMountpoint();
  mount = await startMount(tree.root, mountpoint.path, ['--allow-other']);
});

afterAll(async () => {
  try {
    await mount?.stop();
    await mountpoint.cleanup();
  } finally {
    await tree.cleanup();
  }
});

const inMount = (...parts: string[]): string => join(mountpoint.path, ...parts);
const vhdx = (client: string): string => inMount(client, tree.anchorFolder, tree.vhdxName);

describe('the mount keeps the source tree\'s owners and modes', () => {
  it('mirrors owner, group and mode without write bits', async () => {
    const privateDir = await stat(inMount('pc-private'));
    expect([privateDir.uid, privateDir.mode & 0o7777]).toEqual([tree.alice.uid, 0o511]);
    const groupFile = await stat(inMount('pc-group', tree.anchorFolder, tree.vhdxName.replace('.disk.vhdx', '.raw')));
    expect([groupFile.uid, groupFile.gid, groupFile.mode & 0o7777]).toEqual([0, tree.nobody.gid, 0o440]);
    const secret = await stat(inMount('secret.txt'));
    expect(secret.mode & 0o7777).toBe(0o400);
  });

  it('gives a virtual disk the owner of its .raw and read bits only for who can read every source', async () => {
    const open = await stat(vhdx('pc-open'));
    expect([open.uid, open.gid, open.mode & 0o7777]).toEqual([0, 0, 0o444]);
    const privateDisk = await stat(vhdx('pc-private'));
    expect([privateDisk.uid, privateDisk.gid, privateDisk.mode & 0o7777]).toEqual([tree.alice.uid, tree.alice.gid, 0o400]);
    const group = await stat(vhdx('pc-group'));
    expect([group.gid, group.mode & 0o7777]).toEqual([tree.nobody.gid, 0o440]);
    // pc-mixed: C: is 0644 in a 0755 folder, but its SYSVOL companion's folder is 0700.
    const mixed = await stat(vhdx('pc-mixed'));
    expect(mixed.mode & 0o7777).toBe(0o400);
  });
});

describe('other users read through --allow-other only what the source tree lets them read', () => {
  it('refuses nobody what the backup root refuses nobody', async () => {
    for (const [command, args] of [
      ['cat', [inMount('secret.txt')]],
      ['ls', [inMount('pc-private')]],
    ] as const) {
      const result = await runAs(tree.nobody, command, args);
      expect(result.code, `${command} ${args.join(' ')}`).not.toBe(0);
      expect(result.stderr).toMatch(/Permission denied/);
    }
    // The same reads in the source tree are refused too: the mount adds nothing.
    expect((await runAs(tree.nobody, 'cat', [join(tree.root, 'secret.txt')])).stderr).toMatch(/Permission denied/);
    expect((await runAs(tree.nobody, 'ls', [join(tree.root, 'pc-private')])).stderr).toMatch(/Permission denied/);
  });

  it('refuses a virtual disk by its own computed mode, where every folder on the way lets the reader through', async () => {
    // pc-private (0711 folders, 0600 files of alice) and pc-mixed (a 0700 companion folder):
    // nobody reaches the disk (stat succeeds, through the folders' x bits) and sees read bits
    // for alice only, so nothing but the disk's mode (src/fuse/reader-access.ts) refuses it.
    for (const client of ['pc-private', 'pc-mixed']) {
      const seen = await runAs(tree.nobody, 'stat', ['-c', '%a %u', vhdx(client)]);
      expect(seen.code, seen.stderr).toBe(0);
      expect(seen.stdout.trim().split(' ')[0], client).toBe('400');
      const read = await runAs(tree.nobody, 'head', ['-c', '4096', vhdx(client)]);
      expect(read.code, client).not.toBe(0);
      expect(read.stderr, client).toMatch(/Permission denied/);
    }
    // The control: the same user, the same kind of path, a disk whose sources nobody may read.
    const control = await runAs(tree.nobody, 'head', ['-c', '4096', vhdx('pc-open')]);
    expect(control.code, control.stderr).toBe(0);
    expect(control.stdout.length).toBeGreaterThan(0);
  });

  it('serves nobody the same bytes as root where every source is readable (others, and by group)', async () => {
    for (const client of ['pc-open', 'pc-group']) {
      const asNobody = await runAs(tree.nobody, 'sha256sum', [vhdx(client)]);
      expect(asNobody.code, asNobody.stderr).toBe(0);
      expect(asNobody.stdout.split(' ')[0]).toBe(await sha256File(vhdx(client)));
    }
    // A companion folder nobody may not enter does not stop nobody reading the C: .raw itself.
    const cRaw = inMount('pc-mixed', tree.anchorFolder, tree.vhdxName.replace('.disk.vhdx', '.raw'));
    expect((await runAs(tree.nobody, 'head', ['-c', '4096', cRaw])).code).toBe(0);
  });

  it('lets alice read her own client, and keeps bob out of it and out of the group client', async () => {
    const asAlice = await runAs(tree.alice, 'sha256sum', [vhdx('pc-private')]);
    expect(asAlice.code, asAlice.stderr).toBe(0);
    expect(asAlice.stdout.split(' ')[0]).toBe(await sha256File(vhdx('pc-private')));
    const listing = await runAs(tree.bob, 'ls', [inMount('pc-private')]);
    expect(listing.stderr).toMatch(/Permission denied/);
    // pc-group (0751 folders, 0640 files of root:nogroup): bob passes through the folders and
    // sees the disk's 0440 for nogroup, which he is not in: only the disk's mode refuses him,
    // while nobody, in nogroup, reads the same file.
    const seen = await runAs(tree.bob, 'stat', ['-c', '%a %g', vhdx('pc-group')]);
    expect(seen.code, seen.stderr).toBe(0);
    expect(seen.stdout.trim()).toBe(`440 ${tree.nobody.gid}`);
    const refused = await runAs(tree.bob, 'head', ['-c', '4096', vhdx('pc-group')]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/Permission denied/);
    const control = await runAs(tree.nobody, 'head', ['-c', '4096', vhdx('pc-group')]);
    expect(control.code, control.stderr).toBe(0);
  });
});

describe('no byte from outside the backup root', () => {
  it('does not serve a backup whose .raw is a symlink, and says why in ls and doctor', async () => {
    const names = await readdir(inMount('pc-link', tree.anchorFolder));
    expect(names.filter((name) => name.includes('.disk.'))).toEqual([]);
    const ls = await synthvhd(['ls', '--json', tree.root]);
    expect(ls.code).toBe(0);
    const problems = (JSON.parse(ls.stdout) as { problems: { path: string; reason: string }[] }).problems;
    expect(problems.map((problem) => problem.reason)).toContainEqual(expect.stringMatching(/pc-link\/.*\.raw: is a symbolic link/));
    const doctor = await synthvhd(['doctor', '--json', tree.root]);
    const backups = (JSON.parse(doctor.stdout) as { backups: { folder: string; state: string; detail: string }[] }).backups;
    const linked = backups.find((entry) => entry.folder === join(tree.root, 'pc-link', tree.anchorFolder));
    expect(linked?.state).toBe('not-served');
    expect(linked?.detail).toMatch(/is a symbolic link/);
  });

  it('mirrors other symlinks as symlinks; no regular file of the mount holds the outside bytes', async () => {
    const link = inMount('pc-open', 'outside-link');
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await readlink(link)).toBe(tree.outsideRaw);
    // The kernel resolves the link with the reader's own rights: nobody cannot reach outside/.
    expect((await runAs(tree.nobody, 'cat', [link])).stderr).toMatch(/Permission denied/);
    const files: string[] = [];
    const walk = async (directory: string): Promise<void> => {
      for (const entry of await readdir(directory, { withFileTypes: true })) {
        const path = join(directory, entry.name);
        if (entry.isDirectory()) await walk(path);
        else if (entry.isFile()) files.push(path);
      }
    };
    await walk(mountpoint.path);
    expect(files.filter((path) => path.endsWith('.disk.vhdx')).length).toBeGreaterThanOrEqual(4);
    for (const path of files) {
      if ((await stat(path)).size > 1024 ** 3) continue;
      expect((await readFile(path)).includes(MARKER), path).toBe(false);
    }
  });

  it('refuses sources reached through a symlinked folder that leaves the root', async () => {
    const ls = await synthvhd(['ls', '--json', tree.root]);
    const reasons = (JSON.parse(ls.stdout) as { problems: { reason: string }[] }).problems.map((problem) => problem.reason);
    expect(reasons).toContainEqual(expect.stringMatching(/pc-alias\/.*: resolves to .*outside the backup root/));
    const materialize = await synthvhd(['materialize', join(tree.root, 'pc-alias', tree.anchorFolder), '-o', join(tree.base, 'alias.vhdx')]);
    expect(materialize.code).toBe(1);
    expect(materialize.stderr).toMatch(/^synthvhd: .*outside the backup root/);
    await expect(stat(join(tree.base, 'alias.vhdx'))).rejects.toThrow(/ENOENT/);
  });
});

describe('metadata files are size-checked before they are read', () => {
  it('refuses a 4 GiB .raw.mbr in one line without reading it (kernel I/O count of the process)', async () => {
    // /proc/$$/io of the shell includes the reaped child's reads (kernel/exit.c adds them).
    const result = await run('bash', ['-c', `"${process.execPath}" "${CLI}" ls --json "${tree.root}" > "${tree.base}/ls.json"; cat /proc/$$/io`]);
    const rchar = Number(/^rchar: (\d+)$/m.exec(result.stdout)?.[1]);
    expect(rchar).toBeGreaterThan(0);
    expect(rchar).toBeLessThan(1024 ** 3);
    const problems = (JSON.parse(await readFile(join(tree.base, 'ls.json'), 'utf8')) as { problems: { reason: string }[] }).problems;
    expect(problems.map((problem) => problem.reason)).toContainEqual(
      expect.stringMatching(/pc-bigmbr\/.*\.raw\.mbr: is 4294967296 bytes, more than a urBackup \.raw\.mbr can be \(1048576\): refused without reading it/),
    );
    const names = await readdir(inMount('pc-bigmbr', tree.anchorFolder));
    expect(names.filter((name) => name.includes('.disk.'))).toEqual([]);
  });
});

describe('booting a served disk without writing to it (README "Opening the disks on Windows")', () => {
  it('a qcow2 overlay over a served .vhdx takes the writes; the served file stays byte-identical', async () => {
    const served = vhdx('pc-open');
    const before = await sha256File(served);
    const overlay = join(tree.base, 'overlay.qcow2');
    await runOk('qemu-img', ['create', '-f', 'qcow2', '-b', served, '-F', 'vhdx', overlay]);
    const write = await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 1M 64k', overlay]);
    expect(write.code, write.stderr).toBe(0);
    const read = await run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xab 1M 64k', overlay]);
    expect(read.code, read.stderr).toBe(0);
    expect(read.stdout).not.toMatch(/Pattern verification failed/);
    // The overlay differs from its backing disk exactly where it was written.
    const compare = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'vhdx', overlay, served]);
    expect(compare.stdout).toMatch(/Content mismatch at offset 1048576!/);
    expect(await sha256File(served)).toBe(before);
  });
});
