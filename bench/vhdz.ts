// SPDX-License-Identifier: MIT
/**
 * Reading a urBackup VHDZ backup (`npm run bench -- vhdz [--mib N] [--keep]`), issue #15:
 * 1. A VHDZ image of an N MiB volume (default 512; half text-like, half noise, some free space)
 *    written as urBackup writes it (fixtures/urbackup-images.ts, zstd level 7).
 * 2. The decode floor: `zstd -d` of exactly the blocks the index points to, as one multi-frame
 *    file (libzstd on one core), its input in the page cache and, second, read from the disk.
 * 3. Through a fresh mount (empty decoded-block cache): the served `Image_C_<ts>.disk.vhdx` of
 *    that backup read with `dd bs=1M` (the native FUSE session decodes on its threads and decodes
 *    ahead of a sequential reader), beside the same disk served from the RAW backup of the same
 *    volume; once with the backup's files in the page cache, once after dropping it, each beside
 *    the floor measured the same way. The mount composes an image backup's disk in the
 *    background (headers and BATs; sector bitmaps are read with their blocks): the time until
 *    the served file appears is printed too, and the cold read drops the page cache again after it.
 * 4. In process: the volume read in order in 1 MiB reads, 8 MiB in flight, through the
 *    TypeScript path (each record read and decoded by the native codec on the libuv pool,
 *    src/extents/compressed-record.ts, into the bytes-bounded cache): what materialize and
 *    blocklists use.
 * 5. Random 4 KiB reads (8 readers) inside a 32 MiB working set of the served disk, read once
 *    before so that it is in the decoded-block cache, against the same reads of the RAW backup's
 *    served disk (issue 21: "at RAW speed").
 * Prints times, MB/s and the ratio floor time / our time; the aim is >= 50 % on 2 cores. Run as
 * root (mount, drop_caches).
 */
import { copyFile, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { seededRandom, writeUrbackupImage } from '../fixtures/urbackup-images.js';
import { readCompressedRecord } from '../src/extents/compressed-record.js';
import { DecodedBlocks } from '../src/extents/decoded-blocks.js';
import type { CompressedExtent } from '../src/extents/extent.js';
import { resolveLayoutChains } from '../src/extents/vhd-chain.js';
import { ImageBytes } from '../src/urbackup/images/image-bytes.js';
import { volumeLayout } from '../src/urbackup/images/image-volume.js';
import { openImageDisk } from '../src/urbackup/images/open-image-backup.js';
import { withMount } from './lib/mount.js';
import { makeRawBackup } from './lib/raw-backup.js';
import { MiB, sh, timed } from './lib/shell.js';


type Cache = 'cold' | 'warm';

/** Empties the page cache (written pages are synced first, or they would stay). */
const WORKING_SET = 32 * MiB;
const RANDOM_READERS = 8;
const RANDOM_COUNT = 2000;
const READER = join(dirname(fileURLToPath(import.meta.url)), 'random-reader.js');

/**
 * Random 4 KiB reads of the served disk inside a working set that fits the decoded-block cache
 * (issue 21: "at RAW speed"): the set is read once in a fresh mount, the served file's own page
 * cache is dropped (so every read reaches the daemon), then RANDOM_READERS processes read it at
 * random aligned offsets. Reads per second.
 */
async function randomInWorkingSet(root: string, timestamp: string): Promise<number> {
  return withMount(root, async (mountpoint) => {
    const file = join(mountpoint, 'client', `${timestamp}_Image_C`, `Image_C_${timestamp}.disk.vhdx`);
    await sh('sh', ['-c', `cat '${join(root, 'client', `${timestamp}_Image_C`)}'/* > /dev/null`]);
    for (let tries = 0; !(await stat(file).then(() => true, () => false)); tries++) {
      if (tries > 30_000) throw new Error(`${file} did not appear`);
      await new Promise((resolvePromise) => setTimeout(resolvePromise, 20));
    }
    // In the volume, past the disk's first MiB (generated headers and the partition table).
    const from = 64 * MiB;
    await sh('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', `skip=${from / MiB}`, `count=${WORKING_SET / MiB}`, 'status=none']);
    await sh('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
    const start = Date.now() + 300;
    const finished = await Promise.all(
      Array.from({ length: RANDOM_READERS }, (_, index) =>
        sh(process.execPath, [READER, file, String(RANDOM_COUNT), String(index + 1), String(start), '4096', String(from), String(WORKING_SET)]),
      ),
    );
    const end = Math.max(...finished.map((text) => Number(text.trim())));
    return (RANDOM_READERS * RANDOM_COUNT) / ((end - start) / 1000);
  });
}

async function dropCaches(): Promise<void> {
  await sh('sync', []);
  await writeFile('/proc/sys/vm/drop_caches', '3').catch(() => undefined);
}

/**
 * Reads the served disk of the backup in a fresh mount (its decoded-block cache empty). `cold`:
 * the backup's files come from the disk; `warm`: they are in the page cache, as the floor's
 * input is, so the two measure the same work (decoding and serving, not the disk).
 */
async function readServed(root: string, timestamp: string, cache: Cache): Promise<{ seconds: number; bytes: number; composeSeconds: number }> {
  return withMount(root, async (mountpoint) => {
    const file = join(mountpoint, 'client', `${timestamp}_Image_C`, `Image_C_${timestamp}.disk.vhdx`);
    await dropCaches();
    if (cache === 'warm') await sh('sh', ['-c', `cat '${join(root, 'client', `${timestamp}_Image_C`)}'/* > /dev/null`]);
    // An image backup's disk is composed in the background (its sector bitmaps are read): the
    // file appears when it is ready. Then the blocks that held bitmaps are in the decoded-block
    // cache of the TypeScript side only; the native session's cache is still empty.
    const composeStarted = performance.now();
    let size: number | undefined;
    while (size === undefined) {
      size = await stat(file).then(
        (info) => info.size,
        () => undefined,
      );
      if (size === undefined) await new Promise((resolvePromise) => setTimeout(resolvePromise, 20));
      if (performance.now() - composeStarted > 600_000) throw new Error(`${file} did not appear within 10 minutes`);
    }
    const composeSeconds = (performance.now() - composeStarted) / 1000;
    // Composing read the image: cold means cold for the read too.
    if (cache === 'cold') await dropCaches();
    const read = await timed(() => sh('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', 'status=none']));
    return { seconds: read.seconds, bytes: size, composeSeconds };
  });
}

function makeVolume(bytes: number): { volume: Uint8Array; used: number[] } {
  const random = seededRandom(1);
  const volume = new Uint8Array(bytes);
  const used: number[] = [];
  const words = ['backup ', 'volume ', 'urbackup ', 'image ', 'sector ', 'windows ', 'system32 ', 'the ', 'of '];
  for (let block = 0; block < bytes / 4096; block++) {
    if (Math.floor(block / 256) % 8 === 7) continue; // free space: 1 MiB in 8 never written
    used.push(block);
    const start = block * 4096;
    if (block % 2 === 0) {
      let at = start;
      while (at < start + 4096) {
        const word = words[Math.floor(random() * words.length)] ?? ' ';
        for (let index = 0; index < word.length && at < start + 4096; index++) volume[at++] = word.charCodeAt(index);
      }
    } else {
      for (let at = start; at < start + 4096; at++) volume[at] = Math.floor(random() * 256);
    }
  }
  return { volume, used };
}

const mbps = (bytes: number, seconds: number): string => (bytes / 1e6 / seconds).toFixed(0);

export async function runVhdzBench(args: readonly string[] = []): Promise<void> {
  const mibArgument = args.indexOf('--mib');
  const volumeBytes = (mibArgument === -1 ? 512 : Number(args[mibArgument + 1])) * MiB;
  const work = await mkdtemp(join(tmpdir(), 'synthvhd-bench-vhdz-'));
  try {
    process.stdout.write(`writing a VHDZ of a ${volumeBytes / MiB} MiB volume as urBackup does...\n`);
    const { volume, used } = makeVolume(volumeBytes);
    const image = writeUrbackupImage(volume, used, { random: seededRandom(2), compressed: { codec: 'zstd' } });
    const timestamp = '260101-0100';
    // The RAW backup of the volume, and the same backup as urBackup's VHDZ in another root.
    const rawRoot = join(work, 'raw-root');
    const rawBackup = await makeRawBackup(rawRoot, 'client', timestamp, volumeBytes);
    const rawHandle = await open(rawBackup.raw, 'w');
    await rawHandle.write(volume, 0, volume.length, 512 * 1024);
    await rawHandle.close();
    const vhdzRoot = join(work, 'vhdz-root');
    const vhdzBackup = await makeRawBackup(vhdzRoot, 'client', timestamp, volumeBytes);
    await rm(`${vhdzBackup.raw}.sync`);
    await rm(`${vhdzBackup.raw}.mbr`).catch(() => undefined);
    const path = join(vhdzBackup.folder, `Image_C_${timestamp}.vhdz`);
    await writeFile(path, image.bytes);
    await copyFile(`${rawBackup.raw}.mbr`, `${path}.mbr`);
    await writeFile(`${path}.sync`, '');
    const raw = join(work, 'volume.raw');
    await writeFile(raw, volume);

    const opener = (file: string): ReturnType<typeof open> => open(file, 'r');
    const disk = await openImageDisk(path, opener);
    // The chain's sector bitmaps resolved once up front: the in-process read below then measures
    // decoding the blocks, as the decode floor does (materialize resolves 64 MiB at a time).
    const bitmapReader = new ImageBytes(opener);
    const layout = await resolveLayoutChains(volumeLayout(disk.disk, 512 * 1024), (bitmap) => bitmapReader.read(bitmap, 0, bitmap.size));
    await bitmapReader.close();
    const records = [...new Set(layout.extents.flatMap((extent) => (extent.kind === 'compressed' ? [extent.record] : [])))];

    // The decode floor: the same frames, one file, `zstd -d` on one core.
    const handle = await open(path, 'r');
    const frames: Uint8Array[] = [];
    for (const record of records) {
      const head = new Uint8Array(8);
      await handle.read(head, 0, 8, record);
      const size = new DataView(head.buffer).getUint32(0, true);
      const payload = new Uint8Array(size);
      await handle.read(payload, 0, size, record + 8);
      frames.push(payload);
    }
    const framesPath = join(work, 'frames.zst');
    await writeFile(framesPath, Buffer.concat(frames));
    const decodedBytes = records.length * 2 * MiB;
    const zstdDecode = (): Promise<unknown> => sh('zstd', ['-d', '-q', '-c', framesPath, '-o', '/dev/null', '-f']);
    await zstdDecode();
    const floor = await timed(zstdDecode);

    // synthvhd: sequential 1 MiB reads, 8 MiB in flight.
    const readVolume = async (): Promise<void> => {
      const blocks = new DecodedBlocks((file, record, blockLength) => readCompressedRecord(handle, file, record, blockLength));
      const out = new Uint8Array(MiB);
      const inFlight: Promise<void>[] = [];
      const readOne = async (position: number): Promise<void> => {
        for (const extent of layout.extents) {
          const end = extent.start + extent.length;
          if (end <= position || extent.start >= position + MiB) continue;
          if (extent.kind !== 'compressed') continue;
          const from = Math.max(position, extent.start);
          const to = Math.min(position + MiB, end);
          await blocks.readInto(extent satisfies CompressedExtent, from - extent.start, out, from - position, to - from);
        }
      };
      for (let position = 0; position < layout.size; position += MiB) {
        inFlight.push(readOne(position));
        if (inFlight.length >= 8) await inFlight.shift();
      }
      await Promise.all(inFlight);
    };
    await readVolume(); // warm-up: JIT, the pool threads' decoders
    const ours = await timed(readVolume);
    const rawRead = await timed(() => sh('dd', [`if=${raw}`, 'of=/dev/null', 'bs=1M', 'status=none']));
    await dropCaches();
    const coldFloor = await timed(zstdDecode);
    await handle.close();
    const servedVhdz = await readServed(vhdzRoot, timestamp, 'warm');
    const servedRaw = await readServed(rawRoot, timestamp, 'warm');
    const coldVhdz = await readServed(vhdzRoot, timestamp, 'cold');
    const coldRaw = await readServed(rawRoot, timestamp, 'cold');
    const randomVhdz = await randomInWorkingSet(vhdzRoot, timestamp);
    const randomRaw = await randomInWorkingSet(rawRoot, timestamp);
    const ofFloor = (floorSeconds: number, seconds: number): string => `${((floorSeconds / seconds) * 100).toFixed(0)} % of the floor's speed`;
    const lines = [
      `VHDZ sequential read, ${volumeBytes / MiB} MiB volume, ${records.length} zstd blocks of 2 MiB, ${availableParallelism()} cores.`,
      `Files in the page cache (fresh mount: its decoded-block cache is empty):`,
      `  zstd -d of the same blocks (floor)     ${floor.seconds.toFixed(2)} s  (${mbps(decodedBytes, floor.seconds)} MB/s decoded, one core)`,
      `  mount: served .disk.vhdx of the VHDZ   ${servedVhdz.seconds.toFixed(2)} s  (${mbps(servedVhdz.bytes, servedVhdz.seconds)} MB/s): ${ofFloor(floor.seconds, servedVhdz.seconds)}`,
      `  mount: served .disk.vhdx of the RAW    ${servedRaw.seconds.toFixed(2)} s  (${mbps(servedRaw.bytes, servedRaw.seconds)} MB/s)`,
      `  in process (native codec + cache)      ${ours.seconds.toFixed(2)} s  (${mbps(volumeBytes, ours.seconds)} MB/s of volume): ${ofFloor(floor.seconds, ours.seconds)}`,
      `  the volume as a plain file (dd)        ${rawRead.seconds.toFixed(2)} s  (${mbps(volumeBytes, rawRead.seconds)} MB/s)`,
      `Page cache dropped first (the files come from the disk):`,
      `  zstd -d of the same blocks (floor)     ${coldFloor.seconds.toFixed(2)} s  (${mbps(decodedBytes, coldFloor.seconds)} MB/s decoded)`,
      `  mount: served .disk.vhdx of the VHDZ   ${coldVhdz.seconds.toFixed(2)} s  (${mbps(coldVhdz.bytes, coldVhdz.seconds)} MB/s): ${ofFloor(coldFloor.seconds, coldVhdz.seconds)}`,
      `  mount: served .disk.vhdx of the RAW    ${coldRaw.seconds.toFixed(2)} s  (${mbps(coldRaw.bytes, coldRaw.seconds)} MB/s)`,
      `Until the served .disk.vhdx appears (composed in the background from headers and BATs):`,
      `  VHDZ ${servedVhdz.composeSeconds.toFixed(2)} s (page cache), ${coldVhdz.composeSeconds.toFixed(2)} s (cold); RAW ${servedRaw.composeSeconds.toFixed(2)} s`,
      `Random 4 KiB reads inside a ${WORKING_SET / MiB} MiB working set read once before (it fits the 64 MiB decoded-block cache; the served file's pages dropped), ${RANDOM_READERS} readers × ${RANDOM_COUNT}:`,
      `  served .disk.vhdx of the VHDZ ${randomVhdz.toFixed(0).padStart(8)} reads/s, of the RAW ${randomRaw.toFixed(0).padStart(8)} reads/s: ${(randomVhdz / randomRaw).toFixed(2)}× RAW`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    if (args.includes('--keep')) process.stdout.write(`kept ${work} (the trees, the frames file)\n`);
    else await rm(work, { recursive: true, force: true });
  }
}
