// SPDX-License-Identifier: MIT
/**
 * `npm run bench -- catalog [--clients N] [--runs M] [--only cli|mount] [--no-walk]`: the catalog at scale. Builds a backup root
 * of N clients (default 1 000) × M backup runs (default 10), each run an ESP and a C: backup
 * (so N·M disks), every file a hard link to the UEFI fixture's run-1 ESP and C: backups (real
 * `.raw.mbr`, `.raw.hash`, sparse `.raw`): the tree costs inodes, not bytes. Then prints, each
 * measured in a child process (wall time and peak RSS from /usr/bin/time):
 *   - `synthvhd ls ROOT --json` and `synthvhd doctor ROOT --json` (issue #14 target: ≤ 10 s,
 *     ≤ 200 MB RSS for 10 000 disks);
 *   - through `synthvhd mount`: the first `ls -l` of a backup folder (target ≤ 50 ms), for ten
 *     folders of ten clients, and the `ls -l` of every run folder of one client;
 *   - `ls -lR` of the whole mount, twice, beside `ls -lR` of the source tree, and the daemon's RSS
 *     after each pass and after the background diffs had time to run (issue #22: ≤ 60 s, ≤ 300 MB).
 * Nothing here is pass/fail. The fixture and the tree are kept in $SYNTHVHD_BENCH_DIR (default
 * /var/tmp/synthvhd-bench) and reused.
 */
import { execFile, spawn } from 'node:child_process';
import { access, link, mkdir, mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { buildFixtures, type FixtureSet, type FixtureVolume } from '../fixtures/build-fixtures.js';
import { findMount } from '../src/fuse/mountinfo.js';
import { CLI } from './lib/shell.js';

const execFileAsync = promisify(execFile);
const BENCH_DIR = process.env['SYNTHVHD_BENCH_DIR'] ?? '/var/tmp/synthvhd-bench';

function option(args: readonly string[], name: string, fallback: number): number {
  const at = args.indexOf(name);
  const value = at >= 0 ? Number(args[at + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`bench catalog: ${name} needs a positive integer`);
  return value;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** The UEFI fixture's run-1 ESP and C: backups (built once, ~40 s). */
async function templates(): Promise<{ esp: FixtureVolume; c: FixtureVolume }> {
  const root = join(BENCH_DIR, 'catalog-template');
  const manifest = join(root, 'manifest.json');
  let fixtures: FixtureSet;
  if (await exists(manifest)) {
    fixtures = JSON.parse(await readFile(manifest, 'utf8')) as FixtureSet;
  } else {
    await rm(root, { recursive: true, force: true });
    await mkdir(root, { recursive: true });
    fixtures = await buildFixtures(root);
  }
  const disk = fixtures.disks.find((candidate) => candidate.name === 'uefi-gpt-run1');
  const esp = disk?.volumes.find((volume) => volume.letter === 'ESP');
  const c = disk?.volumes.find((volume) => volume.letter === 'C');
  if (esp === undefined || c === undefined) throw new Error(`bench catalog: ${root} has no uefi-gpt-run1 ESP and C backups`);
  return { esp, c };
}

/** Runs `body` over `items` with at most `limit` at once. */
async function bounded<T>(items: readonly T[], limit: number, body: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await body(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

/** `<root>/client0000/2411DD-HHMM_Image_{ESP,C}/…` for every client and run, hard-linked to the templates. */
async function buildTree(clients: number, runs: number): Promise<string> {
  const root = join(BENCH_DIR, `catalog-${clients}x${runs}`, 'backups');
  const done = join(BENCH_DIR, `catalog-${clients}x${runs}`, 'complete');
  if (await exists(done)) return root;
  const { esp, c } = await templates();
  await rm(join(BENCH_DIR, `catalog-${clients}x${runs}`), { recursive: true, force: true });
  const started = process.hrtime.bigint();
  const jobs: { client: string; timestamp: string; volume: FixtureVolume; letter: string }[] = [];
  for (let client = 0; client < clients; client++) {
    for (let run = 0; run < runs; run++) {
      const day = `2411${String(1 + run).padStart(2, '0')}`;
      const name = `client${String(client).padStart(4, '0')}`;
      jobs.push({ client: name, timestamp: `${day}-0058`, volume: esp, letter: 'ESP' });
      jobs.push({ client: name, timestamp: `${day}-0100`, volume: c, letter: 'C' });
    }
  }
  await bounded(jobs, 32, async ({ client, timestamp, volume, letter }) => {
    const folder = join(root, client, `${timestamp}_Image_${letter}`);
    await mkdir(folder, { recursive: true });
    const template = basename(volume.rawPath);
    for (const name of await readdir(volume.backupDir)) {
      if (!name.startsWith(template)) continue;
      await link(join(volume.backupDir, name), join(folder, `Image_${letter}_${timestamp}.raw${name.slice(template.length)}`));
    }
  });
  await writeFile(done, '');
  process.stdout.write(`tree: ${clients} clients × ${runs} runs (${jobs.length} backup folders) linked in ${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(1)} s\n`);
  return root;
}

/** Wall seconds and peak RSS (MB) of `synthvhd ARGS`, its stdout discarded (its length counted). */
async function measureCli(args: readonly string[]): Promise<{ seconds: number; rssMB: number; code: number; outputBytes: number }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('/usr/bin/time', ['-f', 'bench-time %e %M', process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let outputBytes = 0;
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      outputBytes += chunk.length;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const match = /bench-time ([\d.]+) (\d+)/.exec(stderr);
      if (match === null) {
        reject(new Error(`bench catalog: synthvhd ${args.join(' ')}: no timing\n${stderr}`));
        return;
      }
      resolvePromise({ seconds: Number(match[1]), rssMB: Number(match[2]) / 1024, code: code ?? -1, outputBytes });
    });
  });
}

async function msOf(body: () => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  await body();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/** The daemon's resident set, from the kernel (/proc/<pid>/status VmRSS), in MB. */
async function rssMB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  if (match === null) throw new Error(`bench catalog: no VmRSS for pid ${pid}`);
  return Number(match[1]) / 1024;
}

/** Seconds of `ls -lR DIR` (output discarded). */
async function lsRecursive(dir: string): Promise<number> {
  return (await msOf(() => execFileAsync('sh', ['-c', 'ls -lR "$1" > /dev/null', 'sh', dir], { maxBuffer: 1 << 20 }))) / 1000;
}

/**
 * Issue #22: what an admin's or Windows Explorer's walk of the whole share costs: `ls -lR` of the
 * mount, twice, beside the same `ls -lR` of the source tree, with the daemon's RSS after each pass
 * and once the background diff planning it started is done (target: ≤ 60 s a pass, ≤ 300 MB).
 */
async function measureWalk(root: string, mountpoint: string, pid: number): Promise<void> {
  const source = await lsRecursive(root);
  process.stdout.write(`walk: ls -lR of the source tree: ${source.toFixed(1)} s; daemon RSS before ${(await rssMB(pid)).toFixed(0)} MB\n`);
  for (const pass of [1, 2]) {
    const seconds = await lsRecursive(mountpoint);
    process.stdout.write(`walk: ls -lR of the mount, pass ${pass}: ${seconds.toFixed(1)} s (${(seconds / source).toFixed(1)}× the source tree), daemon RSS ${(await rssMB(pid)).toFixed(0)} MB (target ≤ 60 s, ≤ 300 MB)\n`);
  }
  // Background diff planning runs once the walk stops: wait until the daemon is idle (under 50 ms
  // of CPU in 2 s, from /proc/<pid>/stat; an idle mount uses about 15), at most 600 s, noting the
  // highest RSS on the way. Planning is paced (each diff waits for 150 ms without requests, twice:
  // src/fuse/served-diffs.ts), so the walk's 1 024 latest diffs take some 5 minutes at a few % CPU.
  const started = performance.now();
  let peak = 0;
  let cpu = await cpuMs(pid);
  for (;;) {
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 2000));
    peak = Math.max(peak, await rssMB(pid));
    const now = await cpuMs(pid);
    const busy = now - cpu;
    cpu = now;
    if (busy < 50 || performance.now() - started > MAX_PLANNING_WAIT_MS) break;
  }
  const waited = performance.now() - started;
  const state = waited > MAX_PLANNING_WAIT_MS ? `still busy after ${(waited / 1000).toFixed(0)} s` : `idle after ${(waited / 1000).toFixed(0)} s`;
  process.stdout.write(`walk: background diffs planned, daemon ${state}: RSS ${(await rssMB(pid)).toFixed(0)} MB, highest meanwhile ${peak.toFixed(0)} MB (target ≤ 300 MB)\n`);
}

/** How long the walk's background diff planning is watched for the daemon's RSS. */
const MAX_PLANNING_WAIT_MS = 600_000;

/** CPU time (user + system) process `pid` has used, in ms (/proc/<pid>/stat fields 14 and 15). */
async function cpuMs(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /s, '').split(' ');
  // After "pid (comm) ", field 3 (state) is index 0: utime (14) and stime (15) are 11 and 12.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** Through the mount: the first `ls -l` of folders never looked at before. */
async function measureMount(root: string, clients: number, runs: number, walk: boolean): Promise<void> {
  const mountpoint = await mkdtemp(join(tmpdir(), 'synthvhd-bench-catalog-'));
  const child = spawn(process.execPath, [CLI, 'mount', root, mountpoint], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  try {
    const readyMs = await msOf(
      () =>
        new Promise<void>((resolvePromise, reject) => {
          let out = '';
          child.stdout.on('data', (chunk: Buffer) => {
            out += chunk.toString();
            if (/synthvhd: mounted /.test(out)) resolvePromise();
          });
          child.once('exit', (code) => {
            reject(new Error(`bench catalog: the mount exited ${code}\n${stderr}`));
          });
        }),
    );
    process.stdout.write(`mount: ready in ${readyMs.toFixed(0)} ms\n`);
    const firsts: number[] = [];
    const direct: number[] = [];
    for (let k = 0; k < Math.min(10, clients); k++) {
      const client = `client${String(Math.floor((k * clients) / 10)).padStart(4, '0')}`;
      const run = 1 + (k % runs);
      const folder = join(client, `2411${String(run).padStart(2, '0')}-0100_Image_C`);
      // Baseline, same run: the same `ls -l` of the source folder (process start-up and ls itself).
      direct.push(await msOf(() => execFileAsync('ls', ['-l', join(root, folder)])));
      firsts.push(await msOf(() => execFileAsync('ls', ['-l', join(mountpoint, folder)])));
    }
    const overhead = firsts.map((value, index) => value - (direct[index] ?? 0));
    process.stdout.write(
      `mount: first ls -l of a backup folder: median ${median(firsts).toFixed(1)} ms, max ${Math.max(...firsts).toFixed(1)} ms (ten folders of ten clients; target ≤ 50 ms); ` +
        `the same ls -l of the source folder: median ${median(direct).toFixed(1)} ms, so the mount adds median ${median(overhead).toFixed(1)} ms, max ${Math.max(...overhead).toFixed(1)} ms\n` +
        `  each, in order: ${firsts.map((value) => value.toFixed(0)).join(', ')} ms\n`,
    );
    const client = `client${String(clients - 1).padStart(4, '0')}`;
    const all = await msOf(async () => {
      for (const folder of await readdir(join(mountpoint, client))) await execFileAsync('ls', ['-l', join(mountpoint, client, folder)]);
    });
    process.stdout.write(`mount: ls -l of all ${2 * runs} folders of ${client}: ${all.toFixed(0)} ms\n`);
    if (walk) await measureWalk(root, mountpoint, child.pid ?? 0);
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolvePromise) => {
      if (child.exitCode !== null || child.signalCode !== null) resolvePromise(undefined);
      else child.once('exit', resolvePromise);
    });
    if ((await findMount(mountpoint)) !== undefined) await execFileAsync('fusermount', ['-u', '-z', mountpoint]).catch(() => undefined);
    await rmdir(mountpoint).catch(() => undefined);
    if (stderr.trim() !== '') process.stdout.write(`mount stderr (first lines):\n${stderr.split('\n').slice(0, 5).join('\n')}\n`);
  }
}

export async function runCatalogBench(args: readonly string[]): Promise<void> {
  const clients = option(args, '--clients', 1000);
  const runs = option(args, '--runs', 10);
  const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
  const root = await buildTree(clients, runs);
  const disks = clients * runs;
  if (only !== 'mount') for (const command of [['ls', root, '--json'], ['doctor', root, '--json']]) {
    const result = await measureCli(command);
    process.stdout.write(
      `synthvhd ${command[0] ?? ''} (${disks} disks): ${result.seconds.toFixed(1)} s, peak RSS ${result.rssMB.toFixed(0)} MB, exit ${result.code}, ${(result.outputBytes / 1e6).toFixed(1)} MB of output (target ≤ 10 s, ≤ 200 MB)\n`,
    );
  }
  if (only !== 'cli') await measureMount(root, clients, runs, !args.includes('--no-walk'));
}
