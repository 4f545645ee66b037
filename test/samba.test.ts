// SPDX-License-Identifier: MIT
/**
 * The mount shared by a real Samba: a private smbd on 127.0.0.1 and a free port, configured by
 * the very file shipped to users (contrib/smb.conf.example, placeholders filled in), serving a
 * synthvhd mount (--allow-other) of a backup tree whose clients have different owners and modes
 * (helpers/permission-tree.ts). Anonymous and guest sessions are refused; an authenticated SMB3
 * session that requires signing (what current Windows does) downloads a virtual .vhdx with the
 * same SHA-256 as a local read, not flagged sparse, and a mirrored .raw (passthrough) with the
 * backup file's; a Samba user without rights to a client
 * folder neither sees nor reads it; writes fail.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { buildPermissionTree, ensureGroup, type PermissionTree, type TestUser } from './helpers/permission-tree.js';
import { REPO_ROOT, run, sha256File } from './helpers/run.js';

const fixtures = inject('fixtures');
const SHARE = 'vdisks';
/** The shipped share with `read only = no`, defined by this test only. */
const WRITABLE_SHARE = 'vdisks-writable';
/** FILE_ATTRIBUTE_SPARSE_FILE (MS-FSCC 2.6). */
const ATTRIBUTE_SPARSE = 0x200;

function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address === null || typeof address === 'string') reject(new Error('no port'));
        else resolvePromise(address.port);
      });
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolvePromise(true);
    });
    socket.once('error', () => { resolvePromise(false); });
  });
}

const READERS = 'synthvhd-readers';
const PASSWORD = 'Correct-Horse-7';

let tree: PermissionTree;
let readers: { cleanup: () => Promise<void> } | undefined;
let stateDir: string;
let port: number;
let smbd: ChildProcess | undefined;
let mount: MountedChild | undefined;
let mountpoint: { path: string; cleanup: () => Promise<void> };

async function stopSmbd(): Promise<void> {
  const child = smbd;
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolvePromise) => child.once('exit', resolvePromise));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

beforeAll(async () => {
  const disk = fixtures.disks.find((candidate) => candidate.name === 'bios-mbr');
  if (disk === undefined) throw new Error('fixture bios-mbr missing');
  tree = await buildPermissionTree(disk);
  readers = await ensureGroup(READERS, [tree.alice, tree.bob]);
  stateDir = await mkdtemp(join(tmpdir(), 'synthvhd-smb-'));
  mountpoint = await tempMountpoint();
  mount = await startMount(tree.root, mountpoint.path, ['--allow-other']);
  for (const sub of ['private', 'lock', 'state', 'cache', 'run/ncalrpc']) await mkdir(join(stateDir, sub), { recursive: true });
  port = await freePort();
  const template = await readFile(join(REPO_ROOT, 'contrib', 'smb.conf.example'), 'utf8');
  const config = template
    .replaceAll('@SHARE_PATH@', mountpoint.path)
    .replaceAll('@STATE_DIR@', stateDir)
    .replaceAll('@ADDRESS@', '127.0.0.1')
    .replaceAll('@PORT@', String(port))
    .replaceAll('@READERS@', READERS);
  expect(config).not.toMatch(/@[A-Z_]+@/);
  // A second share, for the tests only: the shipped one with `read only = no`, to show that the
  // mount itself refuses writes (the shipped share's `read only = yes` would refuse them first).
  const shipped = config.slice(config.search(new RegExp(`^\\[${SHARE}\\]$`, 'm')));
  expect(shipped.startsWith(`[${SHARE}]`)).toBe(true);
  expect(shipped).toMatch(/^\s*read only = yes$/m);
  const writable = shipped.replace(`[${SHARE}]`, `[${WRITABLE_SHARE}]`).replace(/^(\s*)read only = yes$/m, '$1read only = no');
  await writeFile(join(stateDir, 'smb.conf'), `${config}\n${writable}`);
  for (const user of [tree.alice, tree.bob]) {
    const added = await run('bash', ['-c', `printf '%s\\n%s\\n' '${PASSWORD}' '${PASSWORD}' | smbpasswd -c '${join(stateDir, 'smb.conf')}' -s -a ${user.name}`]);
    if (added.code !== 0) throw new Error(`smbpasswd -a ${user.name}: ${added.stdout}${added.stderr}`);
  }
  // detached: smbd gets a process group of its own. It signals its whole process group when it
  // stops (kill(0, SIGTERM)); in the test runner's group that would take vitest down with it.
  smbd = spawn('smbd', ['--foreground', '--no-process-group', '-s', join(stateDir, 'smb.conf')], { stdio: 'ignore', detached: true });
  const deadline = performance.now() + 20_000;
  while (!(await canConnect(port))) {
    if (smbd.exitCode !== null || performance.now() > deadline) {
      const logs = await readdir(stateDir).then((names) => names.filter((name) => name.startsWith('log.')));
      const text = await Promise.all(logs.map((name) => readFile(join(stateDir, name), 'utf8')));
      throw new Error(`smbd did not start on 127.0.0.1:${port}\n${text.join('\n')}`);
    }
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
  }
});

afterAll(async () => {
  try {
    await stopSmbd();
  } finally {
    try {
      await mount?.stop();
    } finally {
      await mountpoint.cleanup();
      await rm(stateDir, { recursive: true, force: true });
      await readers?.cleanup();
      await tree.cleanup();
    }
  }
});

/** What current Windows clients do: SMB 3, signing required. */
const WINDOWS_LIKE = ['-m', 'SMB3', '--option=client signing=required'];

function smbclient(credentials: readonly string[], commands: string, extra: readonly string[] = WINDOWS_LIKE, share = SHARE): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('smbclient', [`//127.0.0.1/${share}`, '-p', String(port), ...credentials, ...extra, '-c', commands], { timeoutMs: 120_000 });
}

const as = (user: TestUser): string[] => ['-U', `${user.name}%${PASSWORD}`];

describe('the mount shared by Samba (contrib/smb.conf.example)', () => {
  const folderOf = (client: string): string => `${client}\\${tree.anchorFolder}`;

  it('refuses anonymous, guest and wrong-password sessions, and SMB1', async () => {
    // Each refusal names its own reason: a server that is down or resets every connection must
    // not pass for one that refuses these sessions.
    const attempts: [string, readonly string[], readonly string[], RegExp][] = [
      ['anonymous', ['-N'], WINDOWS_LIKE, /session setup failed: NT_STATUS_LOGON_FAILURE/],
      ['guest', ['-U', 'guest%'], WINDOWS_LIKE, /session setup failed: NT_STATUS_LOGON_FAILURE/],
      ['wrong password', ['-U', `${tree.alice.name}%not-the-password`], WINDOWS_LIKE, /session setup failed: NT_STATUS_LOGON_FAILURE/],
      // SMB1: smbd drops the negotiation (server min protocol = SMB3); the control below shows the
      // same server and user do connect over SMB3.
      ['SMB1', as(tree.alice), ['-m', 'NT1', '--option=client min protocol=NT1'], /protocol negotiation failed: NT_STATUS_(CONNECTION_RESET|CONNECTION_DISCONNECTED|INVALID_NETWORK_RESPONSE|NOT_SUPPORTED)/],
    ];
    for (const [what, credentials, extra, reason] of attempts) {
      const result = await smbclient(credentials, 'ls', extra);
      expect(result.code, what).not.toBe(0);
      expect(`${result.stdout}${result.stderr}`, what).toMatch(reason);
    }
    // The control: the same server, alice's right password over SMB3, lists the share.
    const control = await smbclient(as(tree.alice), 'ls');
    expect(control.code, control.stdout + control.stderr).toBe(0);
    expect(control.stdout).toMatch(/^\s+pc-open\s+D/m);
    const shares = await run('smbclient', ['-L', '//127.0.0.1', '-p', String(port), '-N', ...WINDOWS_LIKE], { timeoutMs: 60_000 });
    expect(shares.stdout).not.toContain(SHARE);
  });

  it('an SMB3 session that requires signing downloads a virtual .vhdx with the same SHA-256 as a local read, not flagged sparse', async () => {
    const local = join(mountpoint.path, 'pc-open', tree.anchorFolder, tree.vhdxName);
    const downloaded = join(stateDir, 'downloaded.vhdx');
    const result = await smbclient(as(tree.alice), `cd "${folderOf('pc-open')}"; allinfo "${tree.vhdxName}"; get "${tree.vhdxName}" "${downloaded}"`);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(await sha256File(downloaded)).toBe(await sha256File(local));
    const attributes = /^attributes:.*\((\w+)\)\s*$/m.exec(result.stdout);
    expect(attributes, result.stdout).not.toBeNull();
    expect(Number.parseInt(attributes?.[1] ?? '0', 16) & ATTRIBUTE_SPARSE).toBe(0);
    expect(result.stdout).toMatch(/stream: \[::\$DATA\], (\d+) bytes/);
  });

  it('a mirrored .raw (read by the kernel from the backup file: FUSE passthrough) downloads with the backup file\'s SHA-256; a user without rights gets none of it', async () => {
    const rawName = tree.vhdxName.replace(/\.disk\.vhdx$/, '.raw');
    const downloaded = join(stateDir, 'mirrored.raw');
    const result = await smbclient(as(tree.alice), `cd "${folderOf('pc-open')}"; get "${rawName}" "${downloaded}"`);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(await sha256File(downloaded)).toBe(await sha256File(join(tree.root, 'pc-open', tree.anchorFolder, rawName)));
    const stolen = join(stateDir, 'stolen.raw');
    const refused = await smbclient(as(tree.bob), `get "${folderOf('pc-private')}\\${rawName}" "${stolen}"`);
    expect(`${refused.stdout}${refused.stderr}`).toMatch(/NT_STATUS_(ACCESS_DENIED|OBJECT_NAME_NOT_FOUND|OBJECT_PATH_NOT_FOUND|NO_SUCH_FILE)/);
    await expect(readFile(stolen)).rejects.toThrow(/ENOENT/);
  });

  it('each Samba user sees only the clients the backup tree lets that Linux user read', async () => {
    const asAlice = await smbclient(as(tree.alice), 'ls');
    expect(asAlice.code, asAlice.stderr).toBe(0);
    expect(asAlice.stdout).toMatch(/^\s+pc-private\s+D/m);
    const privateDisk = join(stateDir, 'private.vhdx');
    const get = await smbclient(as(tree.alice), `get "${folderOf('pc-private')}\\${tree.vhdxName}" "${privateDisk}"`);
    expect(get.code, get.stdout + get.stderr).toBe(0);
    expect(await sha256File(privateDisk)).toBe(await sha256File(join(mountpoint.path, 'pc-private', tree.anchorFolder, tree.vhdxName)));

    const asBob = await smbclient(as(tree.bob), 'ls');
    expect(asBob.code, asBob.stderr).toBe(0);
    expect(asBob.stdout).toMatch(/^\s+pc-open\s+D/m);
    expect(asBob.stdout).not.toMatch(/pc-private|secret\.txt/);
    for (const command of [`ls "${folderOf('pc-private')}\\*"`, `get "${folderOf('pc-private')}\\${tree.vhdxName}" "${join(stateDir, 'stolen.vhdx')}"`]) {
      const result = await smbclient(as(tree.bob), command);
      expect(`${result.stdout}${result.stderr}`, command).toMatch(/NT_STATUS_(ACCESS_DENIED|OBJECT_NAME_NOT_FOUND|OBJECT_PATH_NOT_FOUND|NO_SUCH_FILE)/);
    }
    await expect(readFile(join(stateDir, 'stolen.vhdx'))).rejects.toThrow(/ENOENT/);
  });

  it('writes, deletes and renames fail even through a share Samba lets write: the mount refuses them; the tree is unchanged', async () => {
    // WRITABLE_SHARE is the shipped share with `read only = no`: Samba itself would let alice
    // write, and pc-private's source folders are hers (writable): only the mount, read-only with
    // no write bits, is left to refuse.
    const sourceFolder = join(tree.root, 'pc-private', tree.anchorFolder);
    const before = (await readdir(sourceFolder)).sort();
    const source = join(stateDir, 'upload.txt');
    await writeFile(source, 'must not arrive');
    const folder = folderOf('pc-private');
    const name = tree.vhdxName;
    for (const command of [`put "${source}" "${folder}\\upload.txt"`, `del "${folder}\\${name}"`, `rename "${folder}\\${name}" "${folder}\\x.vhdx"`, `mkdir "${folder}\\newdir"`]) {
      const result = await smbclient(as(tree.alice), command, WINDOWS_LIKE, WRITABLE_SHARE);
      expect(`${result.stdout}${result.stderr}`, command).toMatch(/NT_STATUS_(ACCESS_DENIED|MEDIA_WRITE_PROTECTED)/);
    }
    // Listing works on that share (the share is reachable, the refusals are the writes').
    const listed = await smbclient(as(tree.alice), `ls "${folder}\\*"`, WINDOWS_LIKE, WRITABLE_SHARE);
    expect(listed.code, listed.stdout + listed.stderr).toBe(0);
    expect(listed.stdout).toContain(name);
    expect((await readdir(sourceFolder)).sort()).toEqual(before);
    // And through the shipped read-only share too.
    const shipped = await smbclient(as(tree.alice), `put "${source}" "${folder}\\upload.txt"`);
    expect(`${shipped.stdout}${shipped.stderr}`).toMatch(/NT_STATUS_(ACCESS_DENIED|MEDIA_WRITE_PROTECTED)/);
    expect((await readdir(sourceFolder)).sort()).toEqual(before);
  });
});
