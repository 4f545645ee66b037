// SPDX-License-Identifier: MIT
/**
 * The mount shared by a real Samba: a private smbd on 127.0.0.1 and a free port, configured by
 * the very file shipped to users (contrib/smb.conf.example, placeholders filled in), serving a
 * synthvhd mount (--allow-other) of a backup tree whose clients have different owners and modes
 * (helpers/permission-tree.ts). Anonymous and guest sessions are refused; an authenticated SMB3
 * session that requires signing (what current Windows does) downloads a virtual .vhdx with the
 * same SHA-256 as a local read, not flagged sparse; a Samba user without rights to a client
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
  await writeFile(join(stateDir, 'smb.conf'), config);
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

function smbclient(credentials: readonly string[], commands: string, extra: readonly string[] = WINDOWS_LIKE): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('smbclient', [`//127.0.0.1/${SHARE}`, '-p', String(port), ...credentials, ...extra, '-c', commands], { timeoutMs: 120_000 });
}

const as = (user: TestUser): string[] => ['-U', `${user.name}%${PASSWORD}`];

describe('the mount shared by Samba (contrib/smb.conf.example)', () => {
  const folderOf = (client: string): string => `${client}\\${tree.anchorFolder}`;

  it('refuses anonymous, guest and wrong-password sessions, and SMB1', async () => {
    const attempts: [string, readonly string[], readonly string[]][] = [
      ['anonymous', ['-N'], WINDOWS_LIKE],
      ['guest', ['-U', 'guest%'], WINDOWS_LIKE],
      ['wrong password', ['-U', `${tree.alice.name}%not-the-password`], WINDOWS_LIKE],
      ['SMB1', as(tree.alice), ['-m', 'NT1', '--option=client min protocol=NT1']],
    ];
    for (const [what, credentials, extra] of attempts) {
      const result = await smbclient(credentials, 'ls', extra);
      expect(result.code, what).not.toBe(0);
      expect(`${result.stdout}${result.stderr}`, what).toMatch(/NT_STATUS_(ACCESS_DENIED|LOGON_FAILURE|INVALID_NETWORK_RESPONSE|CONNECTION_(RESET|DISCONNECTED)|NOT_SUPPORTED)/);
    }
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

  it('writes, deletes and renames through the share fail; the tree is unchanged', async () => {
    const sourceFolder = join(tree.root, 'pc-open', tree.anchorFolder);
    const before = (await readdir(sourceFolder)).sort();
    const source = join(stateDir, 'upload.txt');
    await writeFile(source, 'must not arrive');
    const folder = folderOf('pc-open');
    const name = tree.vhdxName;
    for (const command of [`put "${source}" "${folder}\\upload.txt"`, `del "${folder}\\${name}"`, `rename "${folder}\\${name}" "${folder}\\x.vhdx"`, `mkdir "${folder}\\newdir"`]) {
      const result = await smbclient(as(tree.alice), command);
      expect(`${result.stdout}${result.stderr}`, command).toMatch(/NT_STATUS_(ACCESS_DENIED|MEDIA_WRITE_PROTECTED)/);
    }
    expect((await readdir(sourceFolder)).sort()).toEqual(before);
  });
});
