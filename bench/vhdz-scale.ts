// SPDX-License-Identifier: MIT
/**
 * VHDZ backups at scale (`npm run bench -- vhdz-scale [--tib N] [--depth D] [--mib M]`), issue 21:
 * 1. A full VHDZ of an N TiB volume (default 1; written as a stream by ./lib/big-vhdz.ts, never
 *    in memory) beside a sparse RAW backup of the same size: from the mount being live, the time
 *    until the served `.disk.vhdx` appears, the time of its first 4 KiB read (checked against the
 *    volume's bytes), the daemon's RSS (VmRSS) after each, and `synthvhd ls --json` of the root.
 * 2. A chain: a full VHDZ of an M MiB volume (default 256) and D incrementals (default 30), each
 *    rewriting 40 runs of 64 KiB, against the same final volume as one full VHDZ: sequential
 *    `dd bs=1M` of the served `.disk.vhdx` and 8 readers x 2000 random 4 KiB reads, each in a
 *    fresh mount with the files in the page cache. Prints chain/full ratios (goal >= 0.8).
 * Quiet machine only: the load average is printed and a warning given above 1.
 */
import { copyFile, mkdir, mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { seededRandom, writeUrbackupImage } from '../fixtures/urbackup-images.js';
import { type BigVhdz, writeBigVhdz } from './lib/big-vhdz.js';
import { withMount } from './lib/mount.js';
import { makeRawBackup } from './lib/raw-backup.js';
import { CLI, MiB, REPO_ROOT, sh, timed } from './lib/shell.js';

const TiB = 1024 ** 4;
const READER = join(REPO_ROOT, 'dist', 'bench', 'random-reader.js');

function argument(args: readonly string[], name: string, fallback: number): number {
  const at = args.indexOf(name);
  return at === -1 ? fallback : Number(args[at + 1]);
}

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? 0) / 1024;
}


/** Waits for `file` to appear; seconds since `since` (performance.now()). */
async function appears(file: string, since: number): Promise<number> {
  for (;;) {
    if (await stat(file).then(() => true, () => false)) return (performance.now() - since) / 1000;
    if (performance.now() - since > 1_800_000) throw new Error(`${file} did not appear within 30 minutes`);
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 5));
  }
}

/** Puts an image file into a backup folder of `root` (its .mbr from a RAW backup of that volume size). */
async function placeImage(root: string, timestamp: string, volumeBytes: number, write: (path: string) => Promise<void>): Promise<string> {
  const backup = await makeRawBackup(root, 'client', timestamp, volumeBytes);
  const path = join(backup.folder, `Image_C_${timestamp}.vhdz`);
  await write(path);
  await copyFile(`${backup.raw}.mbr`, `${path}.mbr`);
  await rm(`${backup.raw}.mbr`);
  await rm(`${backup.raw}.sync`);
  await writeFile(`${path}.sync`, '');
  return path;
}

async function bigVolume(work: string, volumeBytes: number): Promise<string[]> {
  const timestamp = '261201-0100';
  const vhdzRoot = join(work, 'big-vhdz');
  let written: BigVhdz = { uniqueId: new Uint8Array(16), fileBytes: 0, logicalBytes: 0, records: 0, pattern: new Uint8Array(0) };
  const writing = await timed(async () => {
    await placeImage(vhdzRoot, timestamp, volumeBytes, async (path) => {
      written = await writeBigVhdz(path, volumeBytes);
    });
  });
  const rawRoot = join(work, 'big-raw');
  const raw = await makeRawBackup(rawRoot, 'client', timestamp, volumeBytes);
  await writeFile(raw.raw, '');
  await truncate(raw.raw, 512 * 1024 + volumeBytes); // sparse: reads as zeros
  const measure = (root: string, check: (bytes: Buffer) => boolean): Promise<{ appear: number; firstRead: number; rssAppear: number; rssRead: number; right: boolean }> =>
    withMount(root, async (mountpoint, pid, live) => {
      const served = join(mountpoint, 'client', `${timestamp}_Image_C`, `Image_C_${timestamp}.disk.vhdx`);
      const appear = await appears(served, live);
      const rssAppear = await rssMiB(pid);
      // The first 4 KiB read: in the middle of the volume, far from anything composing touched,
      // through the .disk.vhd beside it (the disk's bytes at their own offsets; the volume at 1 MiB).
      const handle = await open(served.replace(/\.disk\.vhdx$/, '.disk.vhd'), 'r');
      const piece = Buffer.alloc(4096);
      const position = MiB + Math.floor(volumeBytes / 2 / 4096) * 4096;
      const started = performance.now();
      await handle.read(piece, 0, 4096, position);
      const firstRead = (performance.now() - started) / 1000;
      await handle.close();
      return { appear, firstRead, rssAppear, rssRead: await rssMiB(pid), right: check(piece) };
    });
  const vhdz = await measure(vhdzRoot, (bytes) => bytes.equals(Buffer.from(written.pattern)));
  const rawResult = await measure(rawRoot, (bytes) => bytes.every((byte) => byte === 0));
  const lsVhdz = await timed(() => sh(process.execPath, [CLI, 'ls', '--json', vhdzRoot]));
  const lsRaw = await timed(() => sh(process.execPath, [CLI, 'ls', '--json', rawRoot]));
  // An incremental of it: a differencing VHDZ rewriting 1 000 blocks of 512 KiB spread over the
  // disk; the backup-run diff between the two comes from the child's BAT and bitmaps.
  const childStamp = '261202-0100';
  const changed = Array.from({ length: 1000 }, (_, index) => 1 + Math.floor((index * (volumeBytes / (512 * 1024))) / 1000));
  await placeImage(vhdzRoot, childStamp, volumeBytes, async (path) => {
    await writeBigVhdz(path, volumeBytes, { parent: { uniqueId: written.uniqueId, unicodeName: `../${timestamp}_Image_C/Image_C_${timestamp}.vhdz` }, changed, seed: 2 });
  });
  const diffOutput = join(work, 'big-diff.vhdx');
  const olderFolder = join(vhdzRoot, 'client', `${timestamp}_Image_C`);
  const newerFolder = join(vhdzRoot, 'client', `${childStamp}_Image_C`);
  const diff = await timed(() => sh(process.execPath, [CLI, 'diff', olderFolder, newerFolder, '-o', diffOutput, '--json']));
  const diffReport = JSON.parse(diff.value) as { volumes?: { changedChunks: number; bytesRead: number }[] };
  const changedChunks = (diffReport.volumes ?? []).reduce((sum, each) => sum + each.changedChunks, 0);
  const diffRead = (diffReport.volumes ?? []).reduce((sum, each) => sum + each.bytesRead, 0);
  const diffBytes = (await stat(diffOutput)).blocks * 512;
  const tib = (volumeBytes / TiB).toFixed(2);
  return [
    `A full VHDZ of a ${tib} TiB volume (${written.records} zstd records, ${(written.fileBytes / 1e9).toFixed(2)} GB file, written in ${writing.seconds.toFixed(0)} s) beside a sparse RAW backup of it:`,
    `                                   VHDZ        RAW`,
    `  .disk.vhdx appears after         ${vhdz.appear.toFixed(2).padStart(6)} s    ${rawResult.appear.toFixed(2).padStart(6)} s   (goal < 1 s)`,
    `  its first 4 KiB read             ${(vhdz.firstRead * 1000).toFixed(1).padStart(6)} ms   ${(rawResult.firstRead * 1000).toFixed(1).padStart(6)} ms  (goal < 50 ms; bytes right: ${vhdz.right && rawResult.right})`,
    `  daemon RSS when it appeared      ${vhdz.rssAppear.toFixed(0).padStart(6)} MiB  ${rawResult.rssAppear.toFixed(0).padStart(6)} MiB`,
    `  daemon RSS after the read        ${vhdz.rssRead.toFixed(0).padStart(6)} MiB  ${rawResult.rssRead.toFixed(0).padStart(6)} MiB`,
    `  synthvhd ls --json of the root   ${lsVhdz.seconds.toFixed(2).padStart(6)} s    ${lsRaw.seconds.toFixed(2).padStart(6)} s`,
    `  synthvhd diff of it and an incremental rewriting 1 000 of its blocks: ${diff.seconds.toFixed(1)} s (${changedChunks} changed 512 KiB chunks decided from the BATs and bitmaps, ${diffRead} bytes read to decide; ${(diffBytes / 1e6).toFixed(0)} MB of differencing VHDX allocated)`,
  ];
}

function chainVolume(bytes: number): Uint8Array {
  const random = seededRandom(5);
  const volume = new Uint8Array(bytes);
  const words = ['backup ', 'volume ', 'urbackup ', 'image ', 'sector ', 'windows ', 'the ', 'of '];
  for (let at = 0; at < bytes; ) {
    if (Math.floor(at / 4096) % 2 === 0) {
      const word = words[Math.floor(random() * words.length)] ?? ' ';
      for (let index = 0; index < word.length && at < bytes; index++) volume[at++] = word.charCodeAt(index);
    } else {
      volume[at++] = Math.floor(random() * 256);
    }
  }
  return volume;
}

async function chain(work: string, volumeBytes: number, depth: number): Promise<string[]> {
  const random = seededRandom(9);
  const volume = chainVolume(volumeBytes);
  const all = Array.from({ length: volumeBytes / 4096 }, (_, block) => block);
  const chainRoot = join(work, 'chain');
  const timestamp = (day: number): string => `2611${String(1 + Math.floor(day / 24)).padStart(2, '0')}-${String(day % 24).padStart(2, '0')}00`;
  let image = writeUrbackupImage(volume, all, { random, compressed: { codec: 'zstd' } });
  let parentPath = await placeImage(chainRoot, timestamp(0), volumeBytes, (path) => writeFile(path, image.bytes));
  for (let level = 1; level <= depth; level++) {
    const changed: number[] = [];
    for (let run = 0; run < 40; run++) {
      const first = Math.floor(random() * (volumeBytes / 4096 - 16));
      for (let block = first; block < first + 16; block++) {
        changed.push(block);
        for (let at = block * 4096; at < (block + 1) * 4096; at++) volume[at] = Math.floor(random() * 256);
      }
    }
    const unique = [...new Set(changed)].sort((a, b) => a - b);
    const parent = { path: parentPath, uniqueId: image.uniqueId, timeStamp: image.timeStamp, size: image.diskSize };
    image = writeUrbackupImage(volume, unique, { random, compressed: { codec: 'zstd' }, parent });
    const bytes = image.bytes;
    parentPath = await placeImage(chainRoot, timestamp(level), volumeBytes, (path) => writeFile(path, bytes));
  }
  const top = timestamp(depth);
  const fullRoot = join(work, 'chain-full');
  const full = writeUrbackupImage(volume, all, { random, compressed: { codec: 'zstd' } });
  await placeImage(fullRoot, top, volumeBytes, (path) => writeFile(path, full.bytes));

  const read = (root: string): Promise<{ sequential: number; random: number; bytes: number }> =>
    withMount(root, async (mountpoint, _pid, live) => {
      const served = join(mountpoint, 'client', `${top}_Image_C`, `Image_C_${top}.disk.vhdx`);
      await appears(served, live);
      await sh('sh', ['-c', `cat '${root}'/client/*/* > /dev/null`]);
      const sequential = await timed(() => sh('dd', [`if=${served}`, 'of=/dev/null', 'bs=1M', 'status=none']));
      const size = (await stat(served)).size;
      const readers = 8;
      const count = 2000;
      const start = Date.now() + 300;
      const finished = await Promise.all(
        Array.from({ length: readers }, (_, index) => sh(process.execPath, [READER, served, String(count), String(index + 1), String(start)])),
      );
      const end = Math.max(...finished.map((text) => Number(text.trim())));
      return { sequential: sequential.seconds, random: (readers * count) / ((end - start) / 1000), bytes: size };
    });
  // Best of three, alternating, each in a fresh mount (its decoded-block cache empty).
  const best = (results: { sequential: number; random: number; bytes: number }[]): { sequential: number; random: number; bytes: number } => ({
    sequential: Math.min(...results.map((result) => result.sequential)),
    random: Math.max(...results.map((result) => result.random)),
    bytes: results[0]?.bytes ?? 0,
  });
  const chainRuns: { sequential: number; random: number; bytes: number }[] = [];
  const fullRuns: { sequential: number; random: number; bytes: number }[] = [];
  for (let run = 0; run < 3; run++) {
    chainRuns.push(await read(chainRoot));
    fullRuns.push(await read(fullRoot));
  }
  const ofChain = best(chainRuns);
  const ofFull = best(fullRuns);
  const mbps = (bytes: number, seconds: number): string => (bytes / 1e6 / seconds).toFixed(0);
  return [
    `A chain of ${depth} incrementals (VHDZ, each 40 runs of 64 KiB rewritten) over a full VHDZ of a ${volumeBytes / MiB} MiB volume, against the final volume as one full VHDZ (best of 3 fresh mounts each, files in the page cache):`,
    `                                   chain          full      chain/full (goal >= 0.8)`,
    `  dd bs=1M of .disk.vhdx           ${mbps(ofChain.bytes, ofChain.sequential).padStart(6)} MB/s  ${mbps(ofFull.bytes, ofFull.sequential).padStart(6)} MB/s   ${(ofFull.sequential / ofChain.sequential).toFixed(2)}x`,
    `  8 x 2000 random 4 KiB reads      ${ofChain.random.toFixed(0).padStart(6)} IOPS  ${ofFull.random.toFixed(0).padStart(6)} IOPS   ${(ofChain.random / ofFull.random).toFixed(2)}x`,
  ];
}

export async function runVhdzScaleBench(args: readonly string[] = []): Promise<void> {
  const [load] = loadavg();
  process.stdout.write(`load average ${(load ?? 0).toFixed(2)}${(load ?? 0) > 1 ? ': WARNING, above 1: the numbers below do not count' : ''}\n`);
  const work = await mkdtemp(join(tmpdir(), 'synthvhd-bench-scale-'));
  try {
    await mkdir(work, { recursive: true });
    const lines: string[] = [];
    const bigBytes = Math.floor((argument(args, '--tib', 1) * TiB) / MiB) * MiB;
    if (!args.includes('--no-big')) lines.push(...(await bigVolume(work, bigBytes)));
    if (!args.includes('--no-chain')) lines.push(...(await chain(work, argument(args, '--mib', 256) * MiB, argument(args, '--depth', 30))));
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    if (args.includes('--keep')) process.stdout.write(`kept ${work} (chain/, chain-full/: backup roots to mount)\n`);
    else await rm(work, { recursive: true, force: true });
  }
}
