// SPDX-License-Identifier: MIT
/**
 * materialize on a sparse loop btrfs: a 500 GB disk whose C: `.raw` holds 100 GiB of real,
 * allocated data extents (one 1 GiB file written once, then cloned 100 times into the `.raw`:
 * no further I/O), materialized to .vhdx; beside it `cp --reflink=always` of the `.raw` (the
 * floor) and `qemu-img convert` of a 1 GiB disk (the copy path, scaled to 100 GiB).
 */
import { open, rm, truncate, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { cloneRange } from '../src/native/native.js';
import { composeDiskFor, resolveSource } from '../src/catalog/catalog.js';
import { containerLayout } from '../src/catalog/virtual-files.js';
import { writeLayout } from '../src/materialize/write-layout.js';
import { makeRawBackup } from './lib/raw-backup.js';
import { withLoopFs } from '../test/helpers/loop-fs.js';
import { CLI, GiB, MiB, sh, timed, usedBytes } from './lib/shell.js';

const DISK_BYTES = 500e9;
const DATA_GIB = 100;
const RAW_HEADER = 524288;

async function fillWithClones(raw: string, seed: string, copies: number): Promise<void> {
  const source = await open(seed, 'r');
  const target = await open(raw, 'r+');
  try {
    for (let index = 0; index < copies; index++) await cloneRange(source.fd, 0, target.fd, RAW_HEADER + index * GiB, GiB);
  } finally {
    await source.close();
    await target.close();
  }
}

async function writeSeed(path: string, bytes: number): Promise<void> {
  const handle = await open(path, 'w');
  try {
    const chunk = randomBytes(16 * MiB);
    for (let offset = 0; offset < bytes; offset += chunk.length) await handle.write(chunk, 0, chunk.length, offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function runMaterializeBench(): Promise<void> {
  await withLoopFs('btrfs', 1200 * GiB, async (mountDir) => {

    const volumeLength = Math.floor((DISK_BYTES - 2 * MiB) / 512) * 512;
    const { folder, raw } = await makeRawBackup(join(mountDir, 'backups'), 'bench', '241201-0100', volumeLength);
    await writeFile(raw, '');
    await truncate(raw, RAW_HEADER + volumeLength);
    const seed = join(mountDir, 'seed.bin');
    await writeSeed(seed, GiB);
    await fillWithClones(raw, seed, DATA_GIB);
    await rm(seed);

    const before = await usedBytes(mountDir);
    const out = join(mountDir, 'disk.vhdx');
    const materialize = await timed(() => sh(process.execPath, [CLI, 'materialize', folder, '-o', out, '--json']));
    const report = JSON.parse(materialize.value) as { clonedBytes: number; copiedBytes: number };
    const materializeSpace = (await usedBytes(mountDir)) - before;

    // The same work without Node's process start-up and module loading (~0.2 s here).
    const inProcess = await timed(async () => {
      const { anchor, siblings } = await resolveSource(folder);
      const { disk } = await composeDiskFor(anchor, siblings);
      return writeLayout(containerLayout(disk.image, 'vhdx'), join(mountDir, 'disk2.vhdx'));
    });

    const beforeCp = await usedBytes(mountDir);
    const cp = await timed(() => sh('cp', ['--reflink=always', raw, join(mountDir, 'raw.copy')]));
    const cpSpace = (await usedBytes(mountDir)) - beforeCp;
    // The same floor made durable, as materialize's output is (fsync before the rename).
    const cpSynced = await timed(async () => {
      await sh('cp', ['--reflink=always', raw, join(mountDir, 'raw.copy2')]);
      await sh('sync', [join(mountDir, 'raw.copy2')]);
    });

    // The copy path: qemu-img convert of a 1 GiB raw disk of random data, scaled to DATA_GIB.
    const small = join(mountDir, 'small.raw');
    await writeSeed(small, GiB);
    const convert = await timed(() => sh('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', small, join(mountDir, 'small.vhdx')]));

    const lines = [
      `disk ${(DISK_BYTES / 1e9).toFixed(0)} GB, ${DATA_GIB} GiB of allocated data in the .raw`,
      `synthvhd materialize .vhdx: ${materialize.seconds.toFixed(2)} s, new space ${(materializeSpace / MiB).toFixed(1)} MiB, cloned ${(report.clonedBytes / GiB).toFixed(1)} GiB, copied ${(report.copiedBytes / MiB).toFixed(1)} MiB`,
      `  the same in-process (no Node start-up): ${inProcess.seconds.toFixed(2)} s, cloned ${(inProcess.value.clonedBytes / GiB).toFixed(1)} GiB`,
      `cp --reflink=always of the .raw (floor): ${cp.seconds.toFixed(2)} s, new space ${(cpSpace / MiB).toFixed(1)} MiB`,
      `qemu-img convert 1 GiB -> vhdx: ${convert.seconds.toFixed(2)} s, scaled to ${DATA_GIB} GiB: ${(convert.seconds * DATA_GIB).toFixed(0)} s`,
      `cp --reflink=always + sync of the copy: ${cpSynced.seconds.toFixed(2)} s`,
      `ratio materialize / cp --reflink: ${(materialize.seconds / cp.seconds).toFixed(2)} whole command, ${(inProcess.seconds / cp.seconds).toFixed(2)} in-process (target <= 2); in-process / (cp + sync): ${(inProcess.seconds / cpSynced.seconds).toFixed(2)}`,
      `ratio materialize / scaled copy: ${(materialize.seconds / (convert.seconds * DATA_GIB)).toFixed(4)}`,
      `targets: <= 5 s ${materialize.seconds <= 5 ? 'met' : 'MISSED'}, <= 16 MiB new space ${materializeSpace <= 16 * MiB ? 'met' : 'MISSED'}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });
}
