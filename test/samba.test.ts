// SPDX-License-Identifier: MIT
/**
 * The mount shared by a real Samba: a private smbd on 127.0.0.1 and a free port, configured by
 * the very file shipped to users (contrib/smb.conf.example, placeholders filled in), serving the
 * synthvhd mount read-only. smbclient downloads a virtual .vhdx (same SHA-256 as a local read),
 * `allinfo` shows it is not sparse, and writes through the share fail.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
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
  stateDir = await mkdtemp(join(tmpdir(), 'synthvhd-smb-'));
  mountpoint = await tempMountpoint();
  mount = await startMount(fixtures.backupRoot, mountpoint.path, ['--allow-other']);
  for (const sub of ['private', 'lock', 'state', 'cache', 'run/ncalrpc']) await mkdir(join(stateDir, sub), { recursive: true });
  port = await freePort();
  const template = await readFile(join(REPO_ROOT, 'contrib', 'smb.conf.example'), 'utf8');
  const config = template
    .replaceAll('@SHARE_PATH@', mountpoint.path)
    .replaceAll('@STATE_DIR@', stateDir)
    .replaceAll('@ADDRESS@', '127.0.0.1')
    .replaceAll('@PORT@', String(port));
  expect(config).not.toMatch(/@[A-Z_]+@/);
  await writeFile(join(stateDir, 'smb.conf'), config);
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
    }
  }
});

function smbclient(commands: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('smbclient', [`//127.0.0.1/${SHARE}`, '-p', String(port), '-N', '-c', commands], { timeoutMs: 120_000 });
}

describe('the mount shared by Samba (contrib/smb.conf.example)', () => {
  const disk = fixtures.disks.find((candidate) => candidate.name === 'uefi-gpt-run1');
  if (disk === undefined) throw new Error('no uefi-gpt-run1 fixture');
  const folder = relative(fixtures.backupRoot, disk.anchor.backupDir).split('/').join('\\');
  const name = `Image_${disk.anchor.letter}_${disk.anchor.timestamp}.disk.vhdx`;

  it('smbclient downloads a virtual .vhdx with the same SHA-256 as a local read, not flagged sparse', async () => {
    const local = join(mountpoint.path, relative(fixtures.backupRoot, disk.anchor.backupDir), name);
    const downloaded = join(stateDir, 'downloaded.vhdx');
    const result = await smbclient(`cd "${folder}"; allinfo "${name}"; get "${name}" "${downloaded}"`);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(await sha256File(downloaded)).toBe(await sha256File(local));
    const attributes = /^attributes:.*\((\w+)\)\s*$/m.exec(result.stdout);
    expect(attributes, result.stdout).not.toBeNull();
    expect(Number.parseInt(attributes?.[1] ?? '0', 16) & ATTRIBUTE_SPARSE).toBe(0);
    expect(result.stdout).toMatch(/stream: \[::\$DATA\], (\d+) bytes/);
  });

  it('writes, deletes and renames through the share fail; the tree is unchanged', async () => {
    const before = (await readdir(disk.anchor.backupDir)).sort();
    const source = join(stateDir, 'upload.txt');
    await writeFile(source, 'must not arrive');
    for (const command of [`put "${source}" "${folder}\\upload.txt"`, `del "${folder}\\${name}"`, `rename "${folder}\\${name}" "${folder}\\x.vhdx"`, `mkdir "${folder}\\newdir"`]) {
      const result = await smbclient(command);
      expect(`${result.stdout}${result.stderr}`, command).toMatch(/NT_STATUS_(ACCESS_DENIED|MEDIA_WRITE_PROTECTED)/);
    }
    expect((await readdir(disk.anchor.backupDir)).sort()).toEqual(before);
  });
});
