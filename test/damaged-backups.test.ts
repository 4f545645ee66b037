// SPDX-License-Identifier: MIT
/**
 * Issue 19, "a damaged backup costs only itself": a backup root holds a few good image backups
 * (RAW, VHD, VHDZ, VHDX, VHDXZ and a VHD + VHDZ chain, written by fixtures/urbackup-images.ts
 * from a truth volume) and a few hundred damaged copies of `.vhd`/`.vhdz`/`.vhdx`/`.vhdxz`
 * backups, each alone in its client folder (test/helpers/damaged-backups.ts says what each
 * one is).
 *
 * - `synthvhd mount` serves the root; every folder is listed and every served disk file read in
 *   full (its last MiB first) by a reader process of its own, one read at a time: a read of a
 *   damaged disk gives bytes or fails with EIO, no other errno and no hang (a read left
 *   unanswered for READ_TIMEOUT_MS fails the test and the reader goes on with the next file);
 *   every good disk, read through the mount by qemu-img, is byte for byte its truth disk; a
 *   damaged backup that is not served whole has a log line naming its file; the daemon is alive
 *   at the end, its RSS (VmRSS, sampled, and VmHWM) stayed under RSS_BOUND, and it exits 0 on
 *   SIGTERM.
 * - `synthvhd ls` and `doctor` on the whole root, and `materialize` of each damaged backup (two
 *   at a time) exit 0 or 1, never 70, a signal or a hang; each backup not served or not written
 *   has exactly one line, naming its file; materialize leaves no output file when it fails.
 *
 * Every failure is collected and reported at once, by mutation name, command and symptom.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCatalogue, writeFiles, writeMutation, type Catalogue, type Mutation } from './helpers/damaged-backups.js';
import { startMount, tempMountpoint } from './helpers/fuse-mount.js';
import { CLI, REPO_ROOT } from './helpers/run.js';

/**
 * The mount daemon's resident memory must stay below this while it serves every damaged and
 * good backup (measured 192–217 MiB on 2026-12-03; twice that leaves room for a slower GC).
 */
const RSS_BOUND = 400 * 1024 * 1024;
/** A read through the mount unanswered for this long is a hang. */
const READ_TIMEOUT_MS = 15_000;
/** ls/doctor of the whole root, materialize of one backup. */
const SCAN_TIMEOUT_MS = 120_000;
const MATERIALIZE_TIMEOUT_MS = 60_000;
const READER = join(REPO_ROOT, 'dist', 'test', 'helpers', 'read-served-child.js');

interface Bounded {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command with a deadline (SIGKILL then), keeping its exit code and signal apart. */
function runBounded(command: string, args: readonly string[], timeoutMs: number): Promise<Bounded> {
  return new Promise((resolvePromise) => {
    const child = spawn(command, [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, timedOut, stdout, stderr });
    });
  });
}

function synthvhd(args: readonly string[], timeoutMs: number): Promise<Bounded> {
  return runBounded(process.execPath, [CLI, ...args], timeoutMs);
}

/** What went wrong with a command that must exit 0 or 1, or undefined. */
function abnormal(result: Bounded): string | undefined {
  if (result.timedOut) return 'hang (killed after the timeout)';
  if (result.signal !== null) return `killed by ${result.signal}`;
  if (result.code !== 0 && result.code !== 1) return `exit ${result.code}: ${firstLines(result.stderr)}`;
  return undefined;
}

function firstLines(text: string): string {
  return text.trim().split('\n').slice(0, 3).join(' | ').slice(0, 400);
}

/** `work` with a timeout: a hang becomes a rejection. */
async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<never>((_, reject) => { timer = setTimeout(() => { reject(new Error(`${what}: no answer after ${ms} ms (hang)`)); }, ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `work` on each item, `concurrency` at a time. */
async function eachLimited<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
}

function vmField(status: string, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  return match === null ? 0 : Number(match[1]) * 1024;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}

let work: string;
let root: string;
let outside: string;
let catalogue: Catalogue;
/** Mutation name by client folder name (they are the same; goods are not in it). */
const byClient = new Map<string, Mutation>();

/** A root holding only `mutation` (to say which one made a scan of the whole root fail). */
async function soloRoot(mutation: Mutation): Promise<string> {
  const solo = join(work, 'solo', mutation.name);
  await rm(solo, { recursive: true, force: true });
  await mkdir(join(solo, 'root'), { recursive: true });
  await writeMutation(join(solo, 'root'), join(solo, 'outside'), mutation);
  return realpath(join(solo, 'root'));
}

/** Whether `text` names one of the mutation's files (paths normalized: `F/../F/x` names `F/x`). */
function names(mutation: Mutation, text: string): boolean {
  const paths = (text.match(/\/[^\s:,"']+/g) ?? []).map((path) => normalize(path));
  return mutation.culprits.some((culprit) => paths.some((path) => path.endsWith(`/${culprit}`)));
}

beforeAll(async () => {
  work = await realpath(await mkdtemp(join(tmpdir(), 'synthvhd-damaged-')));
  root = join(work, 'root');
  outside = join(work, 'outside');
  await mkdir(root);
  catalogue = makeCatalogue();
  await writeFiles(root, outside, catalogue.goodFiles());
  for (const mutation of catalogue.mutations) {
    byClient.set(mutation.name, mutation);
    await writeMutation(root, outside, mutation);
  }
}, 300_000);

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe('a damaged backup costs only itself (issue 19)', () => {
  it('the mount lives, stays small, answers bytes or EIO for damaged disks and the truth for good ones', async () => {
    const failures: string[] = [];
    const mountpoint = await tempMountpoint('synthvhd-damaged-mnt-');
    const mount = await startMount(root, mountpoint.path, [], 60_000);
    const pid = mount.child.pid ?? 0;
    let maxRss = 0;
    const sampleRss = async (): Promise<void> => {
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      maxRss = Math.max(maxRss, vmField(status, 'VmRSS'));
    };
    const sampler = setInterval(() => { void sampleRss(); }, 200);
    const log = (): string => `${mount.stdout()}\n${mount.stderr()}`;
    try {
      // Every client folder is listed.
      const clients = (await within(10_000, 'readdir of the mount root', readdir(mountpoint.path))).sort();
      const expectedClients = [...new Set([...catalogue.good.map(({ folder }) => folder.split('/')[0] ?? ''), ...catalogue.mutations.map(({ name }) => name)])].sort();
      expect(clients).toEqual(expectedClients);
      const folders: string[] = [];
      await eachLimited(clients, 8, async (client) => {
        try {
          const entries = await within(10_000, `readdir ${client}`, readdir(join(mountpoint.path, client), { withFileTypes: true }));
          for (const entry of entries) if (entry.isDirectory()) folders.push(`${client}/${entry.name}`);
        } catch (error) {
          failures.push(`${client}: readdir of the client folder: ${(error as Error).message}`);
        }
      });
      // Each backup folder composes its disk in the background once looked at: list it until
      // it shows its disk files or the mount logged what became of it.
      const listing = new Map<string, string[]>();
      const pending = new Set(folders);
      const deadline = performance.now() + 120_000;
      while (pending.size > 0 && performance.now() < deadline) {
        const text = log();
        await eachLimited([...pending], 8, async (folder) => {
          try {
            const entries = await within(10_000, `readdir ${folder}`, readdir(join(mountpoint.path, folder)));
            const disks = entries.filter((name) => /\.disk(_diff)?\.vhdx?$/.test(name));
            const settled = text.split('\n').some((line) => line.includes(`${root}/${folder}: `) && !line.includes('composing its disk in the background'));
            if (disks.length > 0 || settled) {
              listing.set(folder, disks);
              pending.delete(folder);
            }
          } catch (error) {
            failures.push(`${folder}: readdir: ${(error as Error).message}`);
            pending.delete(folder);
          }
        });
        if (pending.size > 0) await new Promise((resolvePromise) => setTimeout(resolvePromise, 250));
      }
      for (const folder of pending) failures.push(`${folder}: mount: no disk files and no log line about the folder after 120 s`);
      // Every served disk file is read in full by the reader process.
      const files = [...listing].flatMap(([folder, disks]) => disks.map((name) => `${folder}/${name}`)).sort();
      const outcome = await readAll(work, mountpoint.path, files);
      const goodFolders = new Map(catalogue.good.map((backup) => [backup.folder, backup]));
      for (const file of files) {
        const folder = file.split('/').slice(0, 2).join('/');
        const result = outcome.get(file);
        const who = goodFolders.has(folder) ? `good ${folder}` : (byClient.get(folder.split('/')[0] ?? '')?.name ?? folder);
        if (result === undefined) {
          failures.push(`${who}: read ${file}: never read`);
          continue;
        }
        if (result.hang !== undefined) failures.push(`${who}: read ${file}: hang (${result.hang})`);
        for (const error of result.errors) {
          if (goodFolders.has(folder) || error.code !== 'EIO') failures.push(`${who}: read ${file}: ${error.op} at ${error.offset} failed with ${error.code}${goodFolders.has(folder) ? ' (a good disk)' : ''}`);
        }
        if (result.hang === undefined && result.errors.length === 0 && result.bytes !== result.size) {
          failures.push(`${who}: read ${file}: ${result.bytes} of ${result.size} bytes came back without an error`);
        }
      }
      // Good disks are their truth, read through the mount by qemu-img.
      for (const good of catalogue.good) {
        const disks = listing.get(good.folder) ?? [];
        const stem = good.image.split('/').at(-1)?.replace(/\.[a-z]+$/, '') ?? '';
        for (const [format, driver] of [['vhdx', 'vhdx'], ['vhd', 'vpc']] as const) {
          const name = `${stem}.disk.${format}`;
          if (!disks.includes(name)) {
            failures.push(`good ${good.folder}: ${name} is not served`);
            continue;
          }
          const out = join(work, `${good.folder.replace('/', '_')}.${format}.raw`);
          const converted = await runBounded('qemu-img', ['convert', '-f', driver, '-O', 'raw', join(mountpoint.path, good.folder, name), out], 60_000);
          if (converted.code !== 0) {
            failures.push(`good ${good.folder}: qemu-img convert of ${name} failed: ${abnormal(converted) ?? firstLines(converted.stderr)}`);
            continue;
          }
          const bytes = await readFile(out);
          await rm(out);
          if (bytes.length !== good.truth.length) failures.push(`good ${good.folder}: ${name} is a ${bytes.length}-byte disk, the truth ${good.truth.length}`);
          else if (!bytes.equals(good.truth)) failures.push(`good ${good.folder}: ${name} differs from its truth disk from byte ${bytes.findIndex((byte, index) => byte !== good.truth[index])}`);
        }
      }
      // A damaged backup not served whole has a log line naming its file.
      const lines = log().split('\n');
      for (const mutation of catalogue.mutations) {
        const served = (listing.get(mutation.target) ?? []).length > 0;
        const failedReads = mutation.folders.some((folder) => (listing.get(folder) ?? []).some((name) => (outcome.get(`${folder}/${name}`)?.errors.length ?? 0) > 0));
        if ((!served || failedReads) && !lines.some((line) => names(mutation, line))) {
          const about = lines.filter((line) => line.includes(`/${mutation.name}/`) && !line.includes('composing its disk')).slice(0, 2).join(' | ').slice(0, 300);
          failures.push(`${mutation.name}: mount: ${served ? 'reads failed' : 'not served'} but no log line names ${mutation.culprits.join(' or ')}: ${about}`);
        }
      }
      // The daemon is alive, answers, and stayed small.
      await sampleRss();
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      const peak = vmField(status, 'VmHWM');
      expect(mount.child.exitCode, `the mount daemon exited\n${log().slice(-4000)}`).toBeNull();
      expect(mount.child.signalCode, 'the mount daemon was killed by a signal').toBeNull();
      await within(10_000, 'readdir of the mount root at the end', readdir(mountpoint.path));
      if (maxRss >= RSS_BOUND) failures.push(`mount: VmRSS reached ${mib(maxRss)}, over the bound of ${mib(RSS_BOUND)}`);
      if (peak >= RSS_BOUND) failures.push(`mount: VmHWM (peak RSS) ${mib(peak)}, over the bound of ${mib(RSS_BOUND)}`);
      process.stdout.write(`damaged-backups: mount RSS max sampled ${mib(maxRss)}, VmHWM ${mib(peak)}; ${files.length} disk files of ${catalogue.mutations.length} damaged and ${catalogue.good.length} good backups read\n`);
    } finally {
      clearInterval(sampler);
      const code = await mount.stop();
      await mountpoint.cleanup();
      if (code !== 0) failures.push(`mount: exited ${code} on SIGTERM (expected 0)`);
    }
    expect(failures, failures.join('\n')).toEqual([]);
  }, 600_000);

  it('ls and doctor of the whole root, and materialize of each damaged backup, exit 0 or 1 with one line naming the file', async () => {
    const failures: string[] = [];
    await checkScan('ls', [], failures);
    await checkScan('doctor', ['--probe-dir', work], failures);
    const outputs = join(work, 'materialized');
    await eachLimited(catalogue.mutations, 2, async (mutation) => {
      const directory = join(outputs, mutation.name);
      await mkdir(directory, { recursive: true });
      const output = join(directory, 'disk.vhdx');
      const result = await synthvhd(['materialize', join(root, mutation.target), '-o', output], MATERIALIZE_TIMEOUT_MS);
      const wrong = abnormal(result);
      if (wrong !== undefined) {
        failures.push(`${mutation.name}: materialize: ${wrong}`);
      } else if (result.code === 1) {
        const lines = result.stderr.trim().split('\n');
        if (lines.length !== 1) failures.push(`${mutation.name}: materialize: exit 1 with ${lines.length} lines on stderr: ${firstLines(result.stderr)}`);
        else if (!names(mutation, result.stderr)) failures.push(`${mutation.name}: materialize: its error line names none of ${mutation.culprits.join(', ')}: ${firstLines(result.stderr)}`);
        const left = await readdir(directory);
        if (left.length > 0) failures.push(`${mutation.name}: materialize: exit 1 but left ${left.join(', ')}`);
      } else {
        const left = await readdir(directory);
        if (!left.includes('disk.vhdx')) failures.push(`${mutation.name}: materialize: exit 0 but no output file`);
      }
      await rm(directory, { recursive: true, force: true });
    });
    expect(failures, failures.join('\n')).toEqual([]);
  }, 900_000);
});

// ---- reading through the mount -------------------------------------------------------------

interface ReadOutcome {
  size: number;
  bytes: number;
  errors: { op: string; offset: number; code: string }[];
  hang?: string;
}

/**
 * Reads `files` (relative to `mountpoint`) with the reader process; a file whose read gets no
 * answer for READ_TIMEOUT_MS is marked hung, the reader killed and started again after it.
 */
async function readAll(scratch: string, mountpoint: string, files: readonly string[]): Promise<Map<string, ReadOutcome>> {
  const outcome = new Map<string, ReadOutcome>();
  const list = join(scratch, 'read-list.json');
  await writeFile(list, JSON.stringify(files.map((file) => join(mountpoint, file))));
  let first = 0;
  while (first < files.length) {
    first = await new Promise<number>((resolvePromise) => {
      const child = spawn(process.execPath, [READER, list, String(first)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let current = first;
      let step = 'open';
      let last = performance.now();
      let buffered = '';
      let stderr = '';
      let hung = false;
      const entry = (index: number): ReadOutcome => {
        const file = files[index] ?? '';
        let found = outcome.get(file);
        if (found === undefined) {
          found = { size: -1, bytes: -1, errors: [] };
          outcome.set(file, found);
        }
        return found;
      };
      child.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        const parts = buffered.split('\n');
        buffered = parts.pop() ?? '';
        for (const line of parts) {
          last = performance.now();
          const event = JSON.parse(line) as { open?: number; read?: number; offset?: number; error?: number; op?: string; code?: string; done?: number; size?: number; bytes?: number };
          if (event.open !== undefined) {
            current = event.open;
            step = 'open';
            entry(current);
          } else if (event.read !== undefined) {
            step = `read of 1 MiB at ${event.offset ?? 0}`;
          } else if (event.error !== undefined) {
            entry(event.error).errors.push({ op: event.op ?? '?', offset: event.offset ?? 0, code: event.code ?? '?' });
          } else if (event.done !== undefined) {
            Object.assign(entry(event.done), { size: event.size ?? -1, bytes: event.bytes ?? -1 });
            current = event.done + 1;
            step = 'open';
          }
        }
      });
      child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
      const watchdog = setInterval(() => {
        if (performance.now() - last > READ_TIMEOUT_MS) {
          hung = true;
          entry(current).hang = `${step}: no answer in ${READ_TIMEOUT_MS / 1000} s`;
          child.kill('SIGKILL');
        }
      }, 500);
      child.on('close', (code, signal) => {
        clearInterval(watchdog);
        if (!hung && code !== 0 && current < files.length) entry(current).hang = `the reader died (${code ?? signal ?? '?'}) at its ${step}: ${firstLines(stderr)}`;
        resolvePromise(hung || code !== 0 ? current + 1 : files.length);
      });
    });
  }
  return outcome;
}

// ---- ls and doctor ---------------------------------------------------------------------------

/** Backup folders of `mutation`'s client that `ls` lists as disks. */
function lsServed(output: string): Set<string> {
  const served = new Set<string>();
  let client = '';
  for (const line of output.split('\n')) {
    if (line === 'not served:') break;
    if (/^\S/.test(line)) client = line;
    const disk = /^ {2}(\d{6}-\d{4}) {2}([A-Za-z]):/.exec(line);
    if (disk !== null) served.add(`${client}/${disk[1] ?? ''}_Image_${disk[2] ?? ''}`);
  }
  return served;
}

/**
 * ls: one "not served" line per backup folder of the mutation's client that is not listed as a
 * disk, none otherwise; the damaged backup's line names its file. doctor: exactly one line per
 * backup folder; a "not served" one names the file.
 */
function scanFailures(command: 'ls' | 'doctor', mutation: Mutation, output: string): string[] {
  const failures: string[] = [];
  const lines = output.split('\n');
  if (command === 'ls') {
    const served = lsServed(output);
    const start = lines.indexOf('not served:');
    const problems = start === -1 ? [] : lines.slice(start + 1).filter((line) => line.includes(`/${mutation.name}/`));
    const notServed = mutation.folders.filter((folder) => !served.has(folder));
    if (problems.length !== notServed.length) {
      failures.push(`${mutation.name}: ls: ${problems.length} lines for ${notServed.length} backups not served (${notServed.join(', ') || 'none'}): ${problems.join(' | ').slice(0, 400)}`);
    }
    if (!served.has(mutation.target) && !problems.some((line) => names(mutation, line))) {
      failures.push(`${mutation.name}: ls: not served and no line names ${mutation.culprits.join(' or ')}`);
    }
    return failures;
  }
  for (const folder of mutation.folders) {
    const about = lines.filter((line) => line.startsWith('  ') && line.includes(`  ${folder} (`));
    if (about.length !== 1) {
      failures.push(`${mutation.name}: doctor: ${about.length} lines for ${folder}`);
      continue;
    }
    const line = about[0] ?? '';
    if (/^ {2}not served/.test(line) && folder === mutation.target && !names(mutation, line)) failures.push(`${mutation.name}: doctor: its line names none of ${mutation.culprits.join(', ')}: ${line.slice(0, 300)}`);
  }
  return failures;
}

/** Runs `command` on the whole root; when it fails as a whole, on each mutation alone, to name the culprits. */
async function checkScan(command: 'ls' | 'doctor', extra: readonly string[], failures: string[]): Promise<void> {
  const result = await synthvhd([command, ...extra, root], SCAN_TIMEOUT_MS);
  const wrong = abnormal(result);
  if (wrong === undefined) {
    for (const mutation of catalogue.mutations) failures.push(...scanFailures(command, mutation, result.stdout));
    return;
  }
  failures.push(`${command} of the whole root: ${wrong}`);
  await eachLimited(catalogue.mutations, 2, async (mutation) => {
    const solo = await soloRoot(mutation);
    const alone = await synthvhd([command, ...extra, solo], SCAN_TIMEOUT_MS);
    const wrongAlone = abnormal(alone);
    if (wrongAlone !== undefined) failures.push(`${mutation.name}: ${command}: ${wrongAlone}`);
    else failures.push(...scanFailures(command, mutation, alone.stdout.replaceAll(solo, root)));
  });
}
