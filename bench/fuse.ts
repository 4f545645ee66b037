// SPDX-License-Identifier: MIT
/**
 * `npm run bench -- fuse [--quick] [--no-tuning]`: read throughput of a virtual .vhdx served by
 * `synthvhd mount`, against the same bytes read straight from the `.raw` and against xmount's
 * VHD of that `.raw` (`xmount --in raw <raw> --out vhd <dir>`):
 *   - sequential 1 MiB reads of the whole file (dd), cold (page cache dropped with
 *     `echo 3 > /proc/sys/vm/drop_caches`) and warm (the better of two reads right after);
 *   - 4 KiB reads at random aligned offsets from 8 reader processes at once, cold and warm
 *     (the same offsets for every target);
 * each the median of three runs.
 * Then the same for a few mount tunings (page cache off, kernel readahead, max_read, libuv
 * threads), which is how DEFAULT_TUNING in src/fuse/mount.ts was chosen.
 * Needs root (drop_caches, mounts) and xmount. The fixture (a ≥ 1 GiB C: backup) is kept in
 * $SYNTHVHD_BENCH_DIR (default /var/tmp/synthvhd-bench) and reused.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { MountTuning } from '../src/fuse/mount.js';
import { findMount } from '../src/fuse/mountinfo.js';
import { buildBenchFixture } from './fixture.js';

const execFileAsync = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;
const READERS = 8;

interface Result {
  readonly seqColdMBs: number;
  readonly seqWarmMBs: number;
  readonly randColdIops: number;
  readonly randWarmIops: number;
}

async function dropCaches(): Promise<void> {
  await execFileAsync('sync');
  await writeFile('/proc/sys/vm/drop_caches', '3\n');
}

/** Whole-file sequential read with dd (bs=1M); MB/s (10^6 bytes). */
async function sequential(file: string): Promise<number> {
  const started = performance.now();
  const { stderr } = await execFileAsync('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M'], { maxBuffer: MiB });
  const seconds = (performance.now() - started) / 1000;
  const match = /^(\d+) bytes/m.exec(stderr);
  const bytes = Number(match?.[1] ?? 0);
  return bytes / seconds / 1e6;
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

/** Each figure is the median of `REPEAT` runs (a 2-core VM's disk and CPU are noisy). */
const REPEAT = 3;

async function measure(file: string, randomCount: number): Promise<Result> {
  const seqCold: number[] = [];
  const seqWarm: number[] = [];
  const randCold: number[] = [];
  const randWarm: number[] = [];
  for (let run = 0; run < REPEAT; run++) {
    await dropCaches();
    seqCold.push(await sequential(file));
    // Warm = steady state: the better of two reads right after the cold one.
    seqWarm.push(Math.max(await sequential(file), await sequential(file)));
  }
  for (let run = 0; run < REPEAT; run++) {
    await dropCaches();
    randCold.push(await random(file, randomCount));
    randWarm.push(await random(file, randomCount));
  }
  return { seqColdMBs: median(seqCold), seqWarmMBs: median(seqWarm), randColdIops: median(randCold), randWarmIops: median(randWarm) };
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

/** Mounts with `tuning` (bench/mount-child.js), runs `work` on the file, unmounts. */
async function withSynthvhd<T>(root: string, relative: string, tuning: Partial<MountTuning>, env: NodeJS.ProcessEnv, work: (file: string) => Promise<T>): Promise<T> {
  const mountpoint = await mkdtemp(join(tmpdir(), 'synthvhd-bench-mnt-'));
  const child = spawn(process.execPath, [join(HERE, 'mount-child.js'), root, mountpoint, JSON.stringify(tuning)], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  try {
    await waitForLine(child, /^ready$/m, 'the synthvhd mount');
    return await work(join(mountpoint, relative));
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

function row(name: string, result: Result): string {
  const cell = (value: number, width: number): string => value.toFixed(0).padStart(width);
  return `${name.padEnd(34)}${cell(result.seqColdMBs, 10)}${cell(result.seqWarmMBs, 10)}${cell(result.randColdIops, 12)}${cell(result.randWarmIops, 12)}`;
}

const HEADER = `${'target'.padEnd(34)}${'seq cold'.padStart(10)}${'seq warm'.padStart(10)}${'rand cold'.padStart(12)}${'rand warm'.padStart(12)}\n${''.padEnd(34)}${'MB/s'.padStart(10)}${'MB/s'.padStart(10)}${'4K IOPS'.padStart(12)}${'4K IOPS'.padStart(12)}`;

export async function runFuseBenchmark(args: readonly string[]): Promise<void> {
  const quick = args.includes('--quick');
  const directory = process.env.SYNTHVHD_BENCH_DIR ?? '/var/tmp/synthvhd-bench';
  await mkdir(directory, { recursive: true });
  process.stdout.write(`building/reusing the bench fixture in ${directory} …\n`);
  const fixture = await buildBenchFixture(directory, (quick ? 256 : 1024) * MiB);
  const randomCount = quick ? 500 : 2000;
  process.stdout.write(`C: volume ${fixture.volumeBytes / MiB} MiB of random data; ${READERS} random readers × ${randomCount} reads\n\n${HEADER}\n`);

  const direct = await measure(fixture.rawPath, randomCount);
  process.stdout.write(`${row('direct .raw', direct)}\n`);
  const xmount = await withXmount(fixture.rawPath, (file) => measure(file, randomCount));
  process.stdout.write(`${row('xmount --out vhd', xmount)}\n`);
  const ours = await withSynthvhd(fixture.backupRoot, fixture.vhdxRelative, {}, {}, (file) => measure(file, randomCount));
  process.stdout.write(`${row('synthvhd .disk.vhdx (default)', ours)}\n\n`);

  const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}×`;
  process.stdout.write(
    [
      `synthvhd / xmount:  seq cold ${ratio(ours.seqColdMBs, xmount.seqColdMBs)}, seq warm ${ratio(ours.seqWarmMBs, xmount.seqWarmMBs)} (target ≥ 1.5×), rand cold ${ratio(ours.randColdIops, xmount.randColdIops)}, rand warm ${ratio(ours.randWarmIops, xmount.randWarmIops)} (target ≥ 1×)`,
      `synthvhd / direct:  seq cold ${ratio(ours.seqColdMBs, direct.seqColdMBs)}, seq warm ${ratio(ours.seqWarmMBs, direct.seqWarmMBs)} (target ≥ 0.5×), rand cold ${ratio(ours.randColdIops, direct.randColdIops)}, rand warm ${ratio(ours.randWarmIops, direct.randWarmIops)}`,
      '',
    ].join('\n'),
  );

  if (args.includes('--no-tuning')) return;
  process.stdout.write(`mount tunings (synthvhd .disk.vhdx):\n${HEADER}\n`);
  const variants: { name: string; tuning: Partial<MountTuning>; env?: NodeJS.ProcessEnv }[] = [
    { name: 'no page cache (no auto_cache)', tuning: { pageCache: 'none' } },
    { name: 'kernel_cache', tuning: { pageCache: 'keep' } },
    { name: 'readahead 128 KiB (kernel default)', tuning: { readAheadKb: 128 } },
    { name: 'readahead 1 MiB', tuning: { readAheadKb: 1024 } },
    { name: 'readahead 4 MiB', tuning: { readAheadKb: 4096 } },
    { name: 'max_read 32 KiB', tuning: { maxRead: 32 * 1024 } },
    { name: 'UV_THREADPOOL_SIZE=16', tuning: {}, env: { UV_THREADPOOL_SIZE: '16' } },
  ];
  for (const variant of variants) {
    const result = await withSynthvhd(fixture.backupRoot, fixture.vhdxRelative, variant.tuning, variant.env ?? {}, (file) => measure(file, randomCount));
    process.stdout.write(`${row(variant.name, result)}\n`);
  }
}
