// SPDX-License-Identifier: MIT
/**
 * `npm run bench -- fuse [--quick] [--no-tuning] [--fs btrfs|xfs|here]`: read throughput of the
 * virtual disks served by `synthvhd mount`, against the same bytes read straight from the `.raw`
 * and against its peers, all in one run over one `.raw` of random data, on a file system of the
 * kind urBackup keeps RAW images on (`--fs`, default btrfs: a loop file system made for the run
 * and removed after it, the fixture copied in; `here`: where the fixture is kept):
 *   - xmount's VHD of the `.raw` (`xmount --in raw <raw> --out vhd <dir>`, FUSE, libfuse 2);
 *   - nbdkit's partitioning plugin over the `.raw`, read by nbdcopy (`nbdkit -U SOCK
 *     partitioning <raw>`, `nbdcopy nbd+unix:///?socket=SOCK null:`): NBD, no FUSE, no page cache.
 * synthvhd twice: as it mounts by default (the disk served from an unnamed reflinked clone
 * beside the backup, which the kernel reads itself: FUSE passthrough), and with `--no-clones`
 * (the daemon reading every request, as for compressed backups). The clone is measured
 * twice: with what the kernel reads from warm (the clone), as every target is, and with the .raw
 * warm and the clone's pages dropped (page caches are per file: a clone's are not the .raw's).
 * Each figure is the median of three runs:
 *   - first read: dd bs=1M of the whole file with the source in the page cache but not the
 *     served file (its pages dropped with `dd iflag=nocache count=0`, posix_fadvise DONTNEED):
 *     what the daemon itself moves;
 *   - repeat read: the better of two reads right after (the kernel's page cache of the mount);
 *   - cold read: after `echo 3 > /proc/sys/vm/drop_caches` (the disk under the source counts);
 *   - 4 KiB reads at random aligned offsets from 8 reader processes at once, source warm, served
 *     file dropped (the same offsets for every target).
 * Then the ratios issue #13 sets as targets, the daemon's RSS before and after reading (it must
 * not grow with the bytes read), and (without --no-tuning) a table of mount tunings.
 * Needs root (drop_caches, mounts), xmount, nbdkit and nbdcopy. The fixture (a ≥ 1 GiB C:
 * backup) is kept in $SYNTHVHD_BENCH_DIR (default /var/tmp/synthvhd-bench) and reused.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { access, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { MountTuning } from '../src/fuse/mount.js';
import { findMount } from '../src/fuse/mountinfo.js';
import { withLoopFs } from '../test/helpers/loop-fs.js';
import { buildBenchFixture, type BenchFixture } from './fixture.js';

const execFileAsync = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;
const READERS = 8;
/** Each figure is the median of `REPEAT` runs (a 2-core VM's disk and CPU are noisy). */
const REPEAT = 3;

interface Result {
  readonly firstMBs: number;
  readonly repeatMBs: number;
  readonly coldMBs: number;
  readonly randIops: number;
}

interface Target {
  readonly name: string;
  /** The file read (the .raw, a file in a mount). */
  readonly file: string;
  /** Warms what the target reads from: the .raw, never the served file. */
  readonly source: string;
  /** Files whose pages are the served file's (a clone read through passthrough): dropped with it. */
  readonly servedFrom?: () => Promise<readonly string[]>;
}

async function dropCaches(): Promise<void> {
  await execFileAsync('sync');
  await writeFile('/proc/sys/vm/drop_caches', '3\n');
}

/** Drops the page cache of `file` alone (posix_fadvise DONTNEED through coreutils dd). */
async function dropFile(file: string): Promise<void> {
  await execFileAsync('dd', [`if=${file}`, 'iflag=nocache', 'count=0'], { maxBuffer: MiB });
}

/** Whole-file sequential read with dd (bs=1M); MB/s (10^6 bytes). */
async function sequential(file: string): Promise<number> {
  const started = performance.now();
  const { stderr } = await execFileAsync('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M'], { maxBuffer: MiB });
  const seconds = (performance.now() - started) / 1000;
  const match = /^(\d+) bytes/m.exec(stderr);
  return Number(match?.[1] ?? 0) / seconds / 1e6;
}

/** READERS processes × `count` random 4 KiB reads, all starting at the same moment; reads per second. */
async function random(file: string, count: number): Promise<number> {
  const reader = join(HERE, 'random-reader.js');
  const startAt = Date.now() + 1500; // time enough to spawn every reader
  const outputs = await Promise.all(
    Array.from({ length: READERS }, (_, index) => execFileAsync(process.execPath, [reader, file, String(count), String(index + 1), String(startAt)])),
  );
  const finishedAt = Math.max(...outputs.map(({ stdout }) => Number(stdout.trim())));
  return (READERS * count) / ((finishedAt - startAt) / 1000);
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

async function measure(target: Target, randomCount: number): Promise<Result> {
  const first: number[] = [];
  const repeat: number[] = [];
  const cold: number[] = [];
  const rand: number[] = [];
  const direct = target.file === target.source;
  const dropServed = async (): Promise<void> => {
    if (direct) return;
    await dropFile(target.file);
    for (const file of (await target.servedFrom?.()) ?? []) await dropFile(file);
  };
  for (let run = 0; run < REPEAT; run++) {
    await sequential(target.source);
    await dropServed();
    first.push(await sequential(target.file));
    repeat.push(Math.max(await sequential(target.file), await sequential(target.file)));
  }
  for (let run = 0; run < REPEAT; run++) {
    await dropCaches();
    cold.push(await sequential(target.file));
  }
  for (let run = 0; run < REPEAT; run++) {
    await sequential(target.source);
    await dropServed();
    rand.push(await random(target.file, randomCount));
  }
  return { firstMBs: median(first), repeatMBs: median(repeat), coldMBs: median(cold), randIops: median(rand) };
}

function waitForLine(child: ChildProcess, pattern: RegExp, what: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    let out = '';
    let err = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (pattern.test(out)) resolvePromise();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    child.once('exit', (code) => {
      reject(new Error(`${what} exited ${code} before it was ready: ${err.trim()}`));
    });
  });
}

async function stopChild(child: ChildProcess, mountpoint: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolvePromise) => child.once('exit', resolvePromise));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolvePromise) => setTimeout(resolvePromise, 10_000))]);
  }
  if ((await findMount(mountpoint)) !== undefined) await execFileAsync('fusermount', ['-u', '-z', mountpoint]).catch(() => undefined);
}

/** Resident set size of process `pid` in MiB (VmRSS, proc(5)). */
async function rssMiB(pid: number | undefined): Promise<number> {
  if (pid === undefined) return Number.NaN;
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? Number.NaN) / 1024;
}

/** Mounts with `tuning` (bench/mount-child.js), runs `work` on the mount point and the daemon's pid, unmounts. */
async function withSynthvhd<T>(
  root: string,
  tuning: Partial<MountTuning>,
  env: NodeJS.ProcessEnv,
  work: (mountpoint: string, pid: number | undefined) => Promise<T>,
  clones: 'off' | 'beside' = 'off',
): Promise<T> {
  const mountpoint = await mkdtemp(join(tmpdir(), 'synthvhd-bench-mnt-'));
  const childArgs = [join(HERE, 'mount-child.js'), root, mountpoint, JSON.stringify(tuning), clones];
  const child = spawn(process.execPath, childArgs, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  try {
    await waitForLine(child, /^ready$/m, 'the synthvhd mount');
    return await work(mountpoint, child.pid);
  } finally {
    await stopChild(child, mountpoint);
    await rm(mountpoint, { recursive: true, force: true });
  }
}

async function withXmount<T>(rawPath: string, work: (file: string) => Promise<T>): Promise<T> {
  const mountpoint = await mkdtemp(join(tmpdir(), 'synthvhd-bench-xmount-'));
  try {
    await execFileAsync('xmount', ['--in', 'raw', rawPath, '--out', 'vhd', mountpoint]);
    const name = (await readdir(mountpoint)).find((entry) => entry.endsWith('.vhd'));
    if (name === undefined) throw new Error(`xmount made no .vhd in ${mountpoint}`);
    return await work(join(mountpoint, name));
  } finally {
    await execFileAsync('fusermount', ['-u', mountpoint]).catch(() => execFileAsync('fusermount', ['-u', '-z', mountpoint]).catch(() => undefined));
    await rm(mountpoint, { recursive: true, force: true });
  }
}

/**
 * nbdkit's partitioning plugin over the `.raw` (a disk with one partition holding it), read
 * whole by nbdcopy: MB/s of the first read (source warm; NBD has no page cache of its own, so
 * every read is a first read), median of three.
 */
async function nbdkitFirstRead(rawPath: string): Promise<number> {
  const directory = await mkdtemp(join(tmpdir(), 'synthvhd-bench-nbd-'));
  const socket = join(directory, 'nbd.sock');
  const server = spawn('nbdkit', ['-f', '-U', socket, 'partitioning', rawPath], { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    for (let tries = 0; ; tries++) {
      if (await access(socket).then(() => true, () => false)) break;
      if (tries > 100 || server.exitCode !== null) throw new Error('nbdkit did not start (apt-get install nbdkit libnbd-bin)');
      await new Promise((resolvePromise) => setTimeout(resolvePromise, 50));
    }
    const uri = `nbd+unix:///?socket=${socket}`;
    const bytes = Number((await execFileAsync('nbdinfo', ['--size', uri])).stdout.trim());
    const runs: number[] = [];
    for (let run = 0; run < REPEAT; run++) {
      await sequential(rawPath);
      const started = performance.now();
      await execFileAsync('nbdcopy', [uri, 'null:']);
      runs.push(bytes / ((performance.now() - started) / 1000) / 1e6);
    }
    return median(runs);
  } finally {
    server.kill('SIGTERM');
    await rm(directory, { recursive: true, force: true });
  }
}

function row(name: string, result: Result): string {
  const cell = (value: number, width: number): string => value.toFixed(0).padStart(width);
  return `${name.padEnd(34)}${cell(result.firstMBs, 10)}${cell(result.repeatMBs, 10)}${cell(result.coldMBs, 10)}${cell(result.randIops, 12)}`;
}

const HEADER = `${'target'.padEnd(34)}${'first'.padStart(10)}${'repeat'.padStart(10)}${'cold'.padStart(10)}${'rand 4K'.padStart(12)}\n${''.padEnd(34)}${'MB/s'.padStart(10)}${'MB/s'.padStart(10)}${'MB/s'.padStart(10)}${'IOPS'.padStart(12)}`;

function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}×`;
}

/**
 * The clones daemon `pid` holds open: unnamed (O_TMPFILE) files, which /proc/<pid>/fd shows as
 * "<folder>/#<inode> (deleted)"; opening that link reaches the file (root), to warm or drop it.
 */
async function clonesOf(pid: number | undefined): Promise<string[]> {
  const files: string[] = [];
  const fds = `/proc/${pid ?? 0}/fd`;
  for (const fd of await readdir(fds).catch(() => [])) {
    const target = await readlink(join(fds, fd)).catch(() => '');
    if (/\/#\d+ \(deleted\)$/.test(target)) files.push(join(fds, fd));
  }
  return files;
}

type BenchFs = 'btrfs' | 'xfs' | 'here';

/**
 * Runs `body` on the fixture's backup root on file system `kind`: a loop file system made for
 * the run (the root copied in) and removed after it, or `here`.
 */
async function onFileSystem<T>(kind: BenchFs, fixture: BenchFixture, body: (backupRoot: string, rawPath: string) => Promise<T>): Promise<T> {
  if (kind === 'here') return body(fixture.backupRoot, fixture.rawPath);
  return withLoopFs(kind, fixture.volumeBytes * 2 + 1024 * MiB, async (mountDir) => {
    const backupRoot = join(mountDir, 'backups');
    await execFileAsync('cp', ['-a', fixture.backupRoot, backupRoot]);
    await execFileAsync('sync');
    return body(backupRoot, join(backupRoot, relative(fixture.backupRoot, fixture.rawPath)));
  });
}

export async function runFuseBenchmark(args: readonly string[]): Promise<void> {
  const quick = args.includes('--quick');
  const fsIndex = args.indexOf('--fs');
  const fsKind = (fsIndex >= 0 ? args[fsIndex + 1] : 'btrfs') as BenchFs;
  if (!['btrfs', 'xfs', 'here'].includes(fsKind)) throw new Error(`--fs ${fsKind}: btrfs, xfs or here`);
  const directory = process.env.SYNTHVHD_BENCH_DIR ?? '/var/tmp/synthvhd-bench';
  await mkdir(directory, { recursive: true });
  process.stdout.write(`building/reusing the bench fixture in ${directory} …\n`);
  const fixture = await buildBenchFixture(directory, (quick ? 256 : 1024) * MiB);
  const randomCount = quick ? 500 : 2000;
  const vhdRelative = fixture.vhdxRelative.replace(/\.vhdx$/, '.vhd');
  await onFileSystem(fsKind, fixture, async (backupRoot, raw) => {
    const kind = fsKind === 'here' ? `${directory} (as it is)` : `a ${fsKind} loop file system`;
    process.stdout.write(`C: volume ${fixture.volumeBytes / MiB} MiB of random data on ${kind}; ${READERS} random readers × ${randomCount} reads\n\n${HEADER}\n`);
    const direct = await measure({ name: 'direct', file: raw, source: raw }, randomCount);
    process.stdout.write(`${row('direct .raw', direct)}\n`);
    const xmount = await withXmount(raw, (file) => measure({ name: 'xmount', file, source: raw }, randomCount));
    process.stdout.write(`${row('xmount --out vhd', xmount)}\n`);
    const nbdkit = await nbdkitFirstRead(raw);
    process.stdout.write(`${'nbdkit partitioning + nbdcopy'.padEnd(34)}${nbdkit.toFixed(0).padStart(10)}\n`);
    const ours = await withSynthvhd(backupRoot, {}, {}, async (mountpoint, pid) => {
      const rssBefore = await rssMiB(pid);
      const vhd = await measure({ name: 'synthvhd .vhd', file: join(mountpoint, vhdRelative), source: raw }, randomCount);
      process.stdout.write(`${row('synthvhd .disk.vhd --no-clones', vhd)}\n`);
      const vhdx = await measure({ name: 'synthvhd .vhdx', file: join(mountpoint, fixture.vhdxRelative), source: raw }, randomCount);
      process.stdout.write(`${row('synthvhd .disk.vhdx --no-clones', vhdx)}\n`);
      return { vhd, vhdx, rssBefore, rssAfter: await rssMiB(pid) };
    });
    const cloned = await withSynthvhd(
      backupRoot,
      {},
      {},
      async (mountpoint, pid) => {
        // The first open makes the clone: timed from a fresh mount, to the first 4 KiB read.
        const started = performance.now();
        await execFileAsync('dd', [`if=${join(mountpoint, vhdRelative)}`, 'of=/dev/null', 'bs=4k', 'count=1']);
        const firstOpenMs = performance.now() - started;
        // Two ways to count: what the kernel reads from (the clone) warm and the served file's
        // own pages dropped, as for every other target; and the .raw warm with the clone's
        // pages dropped (a clone's page cache is its own, not the .raw's).
        const [clone] = await clonesOf(pid);
        if (clone === undefined) throw new Error(`the daemon holds no clone open (is ${backupRoot} on btrfs or XFS?)`);
        const file = join(mountpoint, vhdRelative);
        const vhd = await measure({ name: 'clone', file, source: clone }, randomCount);
        process.stdout.write(`${row('synthvhd .disk.vhd (clone)', vhd)}\n`);
        const rawWarm = await measure({ name: 'clone', file, source: raw, servedFrom: () => clonesOf(pid) }, randomCount);
        process.stdout.write(`${row('  … .raw warm, clone not', rawWarm)}\n`);
        return { vhd, rawWarm, firstOpenMs };
      },
      'beside',
    );
    const { vhd } = ours;
    const clone = cloned.vhd;
    // measure() reads its file whole 4 × REPEAT times (first, two repeats, cold), for two files.
    const readGiB = (2 * 4 * REPEAT * fixture.volumeBytes) / 1024 ** 3;
    const ratios = (name: string, of: Result): string[] => [
      `${name} / xmount:  first read ${ratio(of.firstMBs, xmount.firstMBs)} (target ≥ 1.5×), 4K random ${ratio(of.randIops, xmount.randIops)} (target ≥ 2×), repeat ${ratio(of.repeatMBs, xmount.repeatMBs)}, cold ${ratio(of.coldMBs, xmount.coldMBs)}`,
      `${name} / nbdkit:  first read ${ratio(of.firstMBs, nbdkit)} (target ≥ 1×)`,
      `${name} / direct:  repeat read ${ratio(of.repeatMBs, direct.repeatMBs)} (target ≥ 0.7×), first read ${ratio(of.firstMBs, direct.firstMBs)}, 4K random ${ratio(of.randIops, direct.randIops)}`,
    ];
    process.stdout.write(
      [
        '',
        ...ratios('synthvhd .vhd (default: clone)', clone),
        ...ratios('synthvhd .vhd (default: clone, .raw warm, clone not)', cloned.rawWarm),
        ...ratios('synthvhd .vhd (--no-clones: daemon)', vhd),
        `clone: first open of a fresh mount (clone made) to its first 4 KiB: ${cloned.firstOpenMs.toFixed(0)} ms`,
        `synthvhd daemon RSS: ${ours.rssBefore.toFixed(0)} MiB mounted, ${ours.rssAfter.toFixed(0)} MiB after ${readGiB.toFixed(0)} GiB of whole-file reads of its files`,
        '',
      ].join('\n'),
    );

    if (args.includes('--no-tuning')) return;
    process.stdout.write(`mount tunings (synthvhd .disk.vhd, --no-clones):\n${HEADER}\n`);
    const variants: { name: string; tuning: Partial<MountTuning>; env?: NodeJS.ProcessEnv }[] = [
      { name: 'readahead 128 KiB (kernel default)', tuning: { readAheadKb: 128 } },
      { name: 'readahead 4 MiB', tuning: { readAheadKb: 4096 } },
      { name: 'max_read 128 KiB (libfuse 2)', tuning: { maxRead: 128 * 1024 } },
      { name: '4 worker threads', tuning: { threads: 4 } },
      { name: 'clone_fd', tuning: { cloneFd: true } },
      { name: 'max_background 32', tuning: { maxBackground: 32 } },
      { name: 'no page cache across opens', tuning: { pageCache: 'none' } },
    ];
    for (const variant of variants) {
      const result = await withSynthvhd(backupRoot, variant.tuning, variant.env ?? {}, (mountpoint) => measure({ name: variant.name, file: join(mountpoint, vhdRelative), source: raw }, randomCount));
      process.stdout.write(`${row(variant.name, result)}\n`);
    }
  });
}
