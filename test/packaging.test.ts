// SPDX-License-Identifier: MIT
/**
 * Operator packaging, proven without a Docker engine or a booted systemd:
 * - Dockerfile: every path it COPYs from the build context exists and is not excluded by
 *   .dockerignore; its build stage and .ci/run install with the same scripts/setup.sh (the image
 *   without the test-only packages); the build stage replayed here instruction by instruction
 *   (COPY, ENV, RUN in a temp WORKDIR) and the runtime stage's COPY --from=build give a tree in
 *   which the ENTRYPOINT runs `synthvhd doctor` with libfuse and the native addon loading.
 * - contrib/synthvhd.service: `systemd-analyze verify` is clean (with ExecStart pointing at a
 *   stub that exists); its ExecStartPost readiness check passes on a live synthvhd mount and
 *   times out without one; its ExecStopPost removes the mount a SIGKILLed synthvhd left behind.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { CLI, REPO_ROOT, run, runOk } from './helpers/run.js';

const fixtures = inject('fixtures');

// ---------------------------------------------------------------------------------------------
// A small Dockerfile reader: instructions with continuation lines joined and comments dropped.
// ---------------------------------------------------------------------------------------------

interface Instruction {
  readonly keyword: string;
  readonly args: string;
  /** Index of the stage (FROM) the instruction belongs to. */
  readonly stage: number;
}

function parseDockerfile(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let stage = -1;
  let pending = '';
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line.startsWith('#') || (line === '' && pending === '')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = `${pending}${line}`.trim();
    pending = '';
    if (full === '') continue;
    const [keyword = '', ...rest] = full.split(/\s+/);
    const upper = keyword.toUpperCase();
    if (upper === 'FROM') stage++;
    instructions.push({ keyword: upper, args: rest.join(' '), stage });
  }
  expect(pending, 'the Dockerfile ends inside a continuation line').toBe('');
  return instructions;
}

/** COPY arguments: flags (--from=...) and the JSON or plain list of sources and the destination. */
function copyArgs(args: string): { from: string | undefined; sources: string[]; destination: string } {
  const words = args.trim().startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/);
  const flags = words.filter((word) => word.startsWith('--'));
  const paths = words.filter((word) => !word.startsWith('--'));
  const from = flags.find((flag) => flag.startsWith('--from='))?.slice('--from='.length);
  const destination = paths.at(-1) ?? '';
  return { from, sources: paths.slice(0, -1), destination };
}

/** ENV key=value pairs (the only form the Dockerfile uses). */
function envPairs(args: string): [string, string][] {
  return args.split(/\s+/).filter((word) => word.includes('=')).map((word) => {
    const index = word.indexOf('=');
    return [word.slice(0, index), word.slice(index + 1)];
  });
}

async function dockerfile(): Promise<Instruction[]> {
  return parseDockerfile(await readFile(join(REPO_ROOT, 'Dockerfile'), 'utf8'));
}

async function dockerignorePatterns(): Promise<string[]> {
  const text = await readFile(join(REPO_ROOT, '.dockerignore'), 'utf8');
  return text.split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));
}

/** True when .dockerignore (plain paths and dir/ prefixes, all it uses) excludes `path`. */
function ignored(path: string, patterns: readonly string[]): boolean {
  const normalized = posix.normalize(path).replace(/\/$/, '');
  return patterns.some((pattern) => {
    const base = pattern.replace(/\/$/, '');
    return normalized === base || normalized.startsWith(`${base}/`);
  });
}

describe('Dockerfile', () => {
  it('COPYs only paths that exist in the repository and are sent with the build context', async () => {
    const instructions = await dockerfile();
    const patterns = await dockerignorePatterns();
    const copies = instructions.filter(({ keyword }) => keyword === 'COPY' || keyword === 'ADD');
    expect(instructions.filter(({ keyword }) => keyword === 'ADD')).toEqual([]);
    const fromContext = copies.map(({ args }) => copyArgs(args)).filter(({ from }) => from === undefined);
    expect(fromContext.length).toBeGreaterThan(0);
    for (const { sources } of fromContext) {
      expect(sources.length).toBeGreaterThan(0);
      for (const source of sources) {
        expect(source, 'no glob or absolute path in a COPY from the context').toMatch(/^[\w.][\w./-]*$/);
        expect(existsSync(join(REPO_ROOT, source)), `COPY ${source}: not in the repository`).toBe(true);
        expect(ignored(source, patterns), `COPY ${source}: excluded by .dockerignore`).toBe(false);
      }
    }
    const tracked = (await runOk('git', ['-C', REPO_ROOT, 'ls-files'])).stdout.split('\n');
    for (const { sources } of fromContext) {
      for (const source of sources) {
        const prefix = source.replace(/\/$/, '');
        expect(tracked.some((file) => file === prefix || file.startsWith(`${prefix}/`)), `COPY ${source}: nothing under it is tracked by git`).toBe(true);
      }
    }
  });

  it('is two stages on node:20 bookworm-slim whose build stage installs with scripts/setup.sh, as .ci/run does', async () => {
    const instructions = await dockerfile();
    const froms = instructions.filter(({ keyword }) => keyword === 'FROM').map(({ args }) => args);
    expect(froms).toEqual(['node:20-bookworm-slim AS build', 'node:20-bookworm-slim']);
    const build = instructions.filter(({ stage }) => stage === 0);
    const runtime = instructions.filter(({ stage }) => stage === 1);
    const buildEnv = Object.fromEntries(build.filter(({ keyword }) => keyword === 'ENV').flatMap(({ args }) => envPairs(args)));
    expect(buildEnv.SYNTHVHD_RUNTIME_ONLY).toBe('1');
    expect(build.filter(({ keyword }) => keyword === 'RUN').map(({ args }) => args).join('\n')).toMatch(/(^|&& )bash scripts\/setup\.sh( |$)/);
    expect(runtime.filter(({ keyword }) => keyword === 'RUN').map(({ args }) => args).join('\n')).toContain('bash scripts/setup.sh --runtime-packages');
    expect(runtime.find(({ keyword }) => keyword === 'ENTRYPOINT')?.args).toBe('["/usr/local/bin/synthvhd"]');
    // CI runs the very same script, with the test packages.
    const ci = await readFile(join(REPO_ROOT, '.ci', 'run'), 'utf8');
    expect(ci).toMatch(/^bash scripts\/setup\.sh$/m);
  });

  it('setup.sh: CI gets the test tools, SYNTHVHD_RUNTIME_ONLY=1 only runtime + build packages, --runtime-packages only fuse3 and libfuse3', async () => {
    const list = async (env: Record<string, string>, args: readonly string[]): Promise<string[]> => {
      const { stdout } = await runOk('env', [...Object.entries(env).map(([key, value]) => `${key}=${value}`), 'bash', join(REPO_ROOT, 'scripts', 'setup.sh'), ...args, '--list-packages']);
      return stdout.trim().split(/\s+/);
    };
    const ci = await list({ SYNTHVHD_RUNTIME_ONLY: '' }, []);
    expect(ci).toEqual(expect.arrayContaining(['fuse3', 'libfuse3-3', 'python3', 'make', 'g++', 'qemu-utils', 'samba', 'smbclient', 'btrfs-progs', 'systemd']));
    const image = await list({ SYNTHVHD_RUNTIME_ONLY: '1' }, []);
    expect(image).toEqual(['fuse3', 'libfuse3-3', 'python3', 'make', 'g++', 'pkg-config', 'libfuse3-dev', 'libzstd-dev', 'zlib1g-dev']);
    expect(await list({}, ['--runtime-packages'])).toEqual(['fuse3', 'libfuse3-3']);
    expect((await run('bash', [join(REPO_ROOT, 'scripts', 'setup.sh'), '--no-such-option'])).code).toBe(2);
  });

  it('replayed here, the build stage and the runtime COPYs give a tree whose ENTRYPOINT runs (npm ci: needs the npm registry)', { timeout: 600_000 }, async () => {
    const instructions = await dockerfile();
    const patterns = await dockerignorePatterns();
    const work = await mkdtemp(join(tmpdir(), 'synthvhd-image-'));
    try {
      const stageRoot = [join(work, 'build'), join(work, 'runtime')];
      const workdirs: string[] = [];
      // Maps a path inside a stage's file system to the temp dir standing in for it.
      const inStage = (stage: number, path: string): string => join(stageRoot[stage] ?? '', path);
      for (const { keyword, args, stage } of instructions) {
        if (keyword === 'WORKDIR') {
          workdirs[stage] = args;
          await mkdir(inStage(stage, args), { recursive: true });
        } else if (keyword === 'COPY') {
          const { from, sources, destination } = copyArgs(args);
          const target = inStage(stage, posix.resolve(workdirs[stage] ?? '/', destination));
          for (const source of sources) {
            const origin = from === undefined ? join(REPO_ROOT, source) : inStage(0, source);
            const into = destination.endsWith('/') ? (source.endsWith('/') ? target : join(target, posix.basename(source))) : target;
            await mkdir(dirname(into), { recursive: true });
            // What .dockerignore keeps out of the build context (native/build, node_modules) stays out here too.
            const inContext = (path: string): boolean => from !== undefined || !ignored(relative(REPO_ROOT, path), patterns);
            await cp(origin, into, { recursive: true, verbatimSymlinks: true, filter: inContext });
          }
        } else if (keyword === 'RUN' && stage === 0) {
          // The build stage's RUN works inside its WORKDIR only; replay it there. Its
          // npm_config_nodedir names the image's Node headers: here the machine's own apply.
          const env: Record<string, string> = { ...process.env } as Record<string, string>;
          for (const [key, value] of instructions.filter((entry) => entry.keyword === 'ENV' && entry.stage === 0).flatMap((entry) => envPairs(entry.args))) {
            if (key !== 'npm_config_nodedir') env[key] = value;
          }
          const result = await new Promise<number | null>((resolvePromise) => {
            const child = spawn('bash', ['-c', `set -e; ${args}`], { cwd: inStage(0, workdirs[0] ?? '/'), env, stdio: ['ignore', 'ignore', 'pipe'] });
            let stderr = '';
            child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
            child.on('close', (code) => {
              if (code !== 0) process.stderr.write(stderr);
              resolvePromise(code);
            });
          });
          expect(result, `RUN ${args}`).toBe(0);
        }
      }
      // The runtime stage's own RUNs install packages and link /usr/local/bin/synthvhd: what
      // that link points at must exist and start with a shebang.
      const link = instructions.find((entry) => entry.keyword === 'RUN' && entry.stage === 1 && entry.args.includes('ln -s'))?.args ?? '';
      const linkTarget = /ln -s (\S+) \/usr\/local\/bin\/synthvhd/.exec(link)?.[1];
      expect(linkTarget).toBeDefined();
      const entry = inStage(1, linkTarget ?? '');
      expect((await readFile(entry, 'utf8')).startsWith('#!/usr/bin/env node\n')).toBe(true);
      const bin = join(work, 'synthvhd');
      await symlink(entry, bin);
      const help = await run(bin, ['--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('doctor');
      const doctor = await run(bin, ['doctor', '--json']);
      const report = JSON.parse(doctor.stdout) as { checks: { name: string; status: string; detail: string }[] };
      const status = Object.fromEntries(report.checks.map(({ name, status: value }) => [name, value]));
      expect(status).toMatchObject({ libfuse: 'ok', 'native-addon': 'ok' });
      // Only production dependencies travel.
      expect(existsSync(inStage(1, posix.join(workdirs[1] ?? '/', 'node_modules', 'vitest')))).toBe(false);
      // The FUSE layer is the addon built in the image (synthvhd_fuse.node), not an npm package.
      expect(existsSync(inStage(1, posix.join(workdirs[1] ?? '/', 'node_modules', 'fuse-native')))).toBe(false);
      expect(existsSync(inStage(1, posix.join(workdirs[1] ?? '/', 'native', 'build', 'Release', 'synthvhd_fuse.node')))).toBe(true);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// systemd unit
// ---------------------------------------------------------------------------------------------

const UNIT = join(REPO_ROOT, 'contrib', 'synthvhd.service');
const UNIT_BINARY = '/usr/local/bin/synthvhd';

/** The values of one key of the unit, Exec prefixes (`-`, `@`, `+`, `!`, `:`) removed. */
async function unitValues(key: string): Promise<string[]> {
  const text = await readFile(UNIT, 'utf8');
  return text.split('\n').filter((line) => line.startsWith(`${key}=`)).map((line) => line.slice(key.length + 1).replace(/^[-@+!:]+/, ''));
}

/** A copy of the unit whose commands run the built CLI through a stub at an existing path. */
async function unitWithStub(work: string): Promise<{ unit: string; stub: string }> {
  const stub = join(work, 'synthvhd');
  await writeFile(stub, `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`);
  await chmod(stub, 0o755);
  const unit = join(work, 'synthvhd.service');
  await writeFile(unit, (await readFile(UNIT, 'utf8')).replaceAll(UNIT_BINARY, stub));
  return { unit, stub };
}

describe('contrib/synthvhd.service', () => {
  it('passes systemd-analyze verify (and as shipped, complains only that /usr/local/bin/synthvhd is missing)', async () => {
    const work = await mkdtemp(join(tmpdir(), 'synthvhd-unit-'));
    try {
      const { unit } = await unitWithStub(work);
      const verify = await run('systemd-analyze', ['verify', unit]);
      expect(verify.stdout + verify.stderr).toBe('');
      expect(verify.code).toBe(0);
      const shipped = await run('systemd-analyze', ['verify', UNIT]);
      const complaints = (shipped.stdout + shipped.stderr).split('\n').filter((line) => line.trim() !== '');
      if (existsSync(UNIT_BINARY)) {
        expect(complaints).toEqual([]);
      } else {
        expect(complaints.length).toBeGreaterThan(0);
        for (const line of complaints) expect(line).toBe(`synthvhd.service: Command ${UNIT_BINARY} is not executable: No such file or directory`);
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it('mounts after the backup volume, restarts on failure, stops with SIGTERM, has no private mount namespace', async () => {
    expect(await unitValues('ExecStart')).toEqual([`${UNIT_BINARY} mount --allow-other /srv/urbackup /srv/vdisks`]);
    expect(await unitValues('RequiresMountsFor')).toEqual(['/srv/urbackup']);
    expect(await unitValues('Type')).toEqual(['exec']);
    expect(await unitValues('KillSignal')).toEqual(['SIGTERM']);
    expect(await unitValues('Restart')).toEqual(['on-failure']);
    const text = await readFile(UNIT, 'utf8');
    for (const key of ['PrivateTmp', 'ProtectSystem', 'ProtectHome', 'PrivateDevices', 'PrivateMounts', 'ProtectKernelModules']) {
      expect(text).not.toMatch(new RegExp(`^${key}=`, 'm'));
    }
  });

  it('ExecStartPost waits for the live mount (bounded), ExecStopPost removes a mount left by a killed synthvhd', { timeout: 180_000 }, async () => {
    const work = await mkdtemp(join(tmpdir(), 'synthvhd-unit-'));
    const mountpoint = join(work, 'vdisks');
    const { stub } = await unitWithStub(work);
    const [startPost = ''] = await unitValues('ExecStartPost');
    const [stopPost = ''] = await unitValues('ExecStopPost');
    const forHere = (command: string): string => command.replaceAll('/srv/vdisks', mountpoint).replaceAll(UNIT_BINARY, stub);
    let child: ReturnType<typeof spawn> | undefined;
    try {
      await mkdir(mountpoint);
      // Nothing mounted: the readiness check gives up (bounded; 2 s here instead of 30).
      expect(startPost).toMatch(/^\/usr\/bin\/timeout 30 /);
      const notReady = await run('sh', ['-c', forHere(startPost).replace('timeout 30 ', 'timeout 2 ')]);
      expect(notReady.code).toBe(124);
      child = spawn(process.execPath, [CLI, 'mount', fixtures.backupRoot, mountpoint], { stdio: 'ignore' });
      const ready = await run('sh', ['-c', forHere(startPost)], { timeoutMs: 60_000 });
      expect(ready.code).toBe(0);
      expect((await runOk('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', mountpoint])).stdout.trim()).toBe('fuse.synthvhd');
      // A crash: the mount stays behind, dead. ExecStopPost detaches it.
      const exited = new Promise<void>((resolvePromise) => child?.on('exit', () => { resolvePromise(); }));
      child.kill('SIGKILL');
      await exited;
      child = undefined;
      expect((await run('findmnt', ['--mountpoint', mountpoint])).code).toBe(0);
      const stop = await run('sh', ['-c', forHere(stopPost)]);
      expect(stop.code).toBe(0);
      expect((await run('findmnt', ['--mountpoint', mountpoint])).code).not.toBe(0);
      // After a clean stop there is nothing to remove: it fails, and the unit's "-" ignores that.
      expect((await run('sh', ['-c', forHere(stopPost)])).code).not.toBe(0);
      expect((await readFile(UNIT, 'utf8'))).toMatch(/^ExecStopPost=-/m);
    } finally {
      child?.kill('SIGKILL');
      if ((await run('findmnt', ['--mountpoint', mountpoint])).code === 0) await run('fusermount', ['-u', '-z', mountpoint]);
      await rm(work, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Samba example
// ---------------------------------------------------------------------------------------------

describe('contrib/smb.conf.example', () => {
  it('parses cleanly with testparm once its placeholders are filled in as test/samba.test.ts does', async () => {
    const work = await mkdtemp(join(tmpdir(), 'synthvhd-smbconf-'));
    try {
      const values: Record<string, string> = { SHARE_PATH: join(work, 'share'), STATE_DIR: join(work, 'state'), ADDRESS: '127.0.0.1', PORT: '4455', READERS: 'vdisk-readers' };
      const example = await readFile(join(REPO_ROOT, 'contrib', 'smb.conf.example'), 'utf8');
      const config = example.replace(/@([A-Z_]+)@/g, (match, name: string) => values[name] ?? match);
      const settings = config.split('\n').filter((line) => !/^\s*[#;]/.test(line));
      expect(settings.filter((line) => /@[A-Z_]+@/.test(line)), 'placeholders nobody fills in').toEqual([]);
      await mkdir(values.SHARE_PATH ?? '', { recursive: true });
      // The directories smbd keeps its state in must exist (testparm checks).
      for (const line of settings) {
        const directory = /^\s*[\w ]*(?:dir|directory)\s*=\s*(\S+)\s*$/.exec(line)?.[1];
        if (directory !== undefined) await mkdir(directory, { recursive: true });
      }
      const file = join(work, 'smb.conf');
      await writeFile(file, config);
      const parsed = await run('testparm', ['-s', file]);
      expect(parsed.code, parsed.stderr).toBe(0);
      expect(parsed.stderr).toContain('Loaded services file OK.');
      expect(parsed.stderr).not.toMatch(/^(ERROR|WARNING)|Unknown parameter|Ignoring unknown/im);
      expect(parsed.stdout).toContain('[vdisks]');
      expect(parsed.stdout).toContain(`path = ${values.SHARE_PATH ?? ''}`);
      expect(parsed.stdout).not.toMatch(/read only = No/i);
      // Who may connect: authenticated SMB3 with signing, never a guest (README "Sharing with Samba").
      // (testparm -s prints only what differs from Samba's defaults: `map to guest = Never` is one.)
      expect(parsed.stdout).not.toMatch(/map to guest/i);
      expect(config).toMatch(/^\s*map to guest = Never$/m);
      for (const setting of ['restrict anonymous = 2', 'server min protocol = SMB3', 'server signing = required', 'valid users = @vdisk-readers']) {
        expect(parsed.stdout, setting).toContain(setting);
      }
      expect(parsed.stdout).not.toMatch(/guest ok = Yes/i);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});
