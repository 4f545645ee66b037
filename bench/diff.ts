// SPDX-License-Identifier: MIT
/**
 * `npm run bench -- diff`: two backups of a 200 GB disk whose C: holds 100 GiB of data (one
 * written 1 GiB file cloned 100 times), the newer made as urBackup makes RAW incrementals (a
 * reflink copy of the older `.raw`, then 1 % of its 512 KiB chunks rewritten, `.raw.hash`
 * updated). `synthvhd diff` is timed beside `blocklist create` + `blocklist copy --createmeta`
 * of the same pair, which must read both disks. SYNTHVHD_BENCH_DATA_GIB shrinks the data.
 */
import { join } from 'node:path';
import { makeIncrementalPair } from './lib/incremental.js';
import { withLoopFs } from '../test/helpers/loop-fs.js';
import { CLI, GiB, MiB, sh, timed, usedBytes } from './lib/shell.js';

const DISK_BYTES = 200e9;
const CHUNK = 512 * 1024;



export async function runDiffBench(): Promise<void> {
  const dataGiB = Number(process.env.SYNTHVHD_BENCH_DATA_GIB ?? 100);
  await withLoopFs('btrfs', 1024 * GiB, async (mountDir) => {
    const volumeLength = Math.floor((DISK_BYTES - 2 * MiB) / CHUNK) * CHUNK;
    const { older, newer, dataChunks, rewritten: changedCount } = await makeIncrementalPair(join(mountDir, 'backups'), { volumeLength, dataBytes: dataGiB * GiB, seedBytes: GiB });

    const parent = join(mountDir, 'older.vhdx');
    await sh(process.execPath, [CLI, 'materialize', older.folder, '-o', parent]);
    await sh('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
    const beforeDiff = await usedBytes(mountDir);
    const diff = await timed(() => sh(process.execPath, [CLI, 'diff', older.folder, newer.folder, '-o', join(mountDir, 'diff.vhdx'), '--parent', parent, '--json']));
    const report = JSON.parse(diff.value) as { changedBytes: number; volumes: { bytesRead: number; changedChunks: number; decidedBySharing: number; decidedByHashes: number }[] };
    const volume = report.volumes[0];
    const diffSpace = (await usedBytes(mountDir)) - beforeDiff;

    await sh('mkdir', ['-p', join(mountDir, 'bl'), join(mountDir, 'cache')]);
    await sh('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
    const create = await timed(() => sh(process.execPath, [CLI, 'blocklist', 'create', parent]));
    const copy = await timed(() => sh(process.execPath, [CLI, 'blocklist', 'copy', '--createmeta', '--cache-dir', join(mountDir, 'cache'), '--diffdir', join(mountDir, 'bl'), newer.folder, parent]));
    const blocklistSeconds = create.seconds + copy.seconds;
    const lines = [
      `disk ${(DISK_BYTES / 1e9).toFixed(0)} GB, ${dataGiB} GiB of data, ${changedCount} of ${dataChunks} data chunks (1 %) changed`,
      `synthvhd diff: ${diff.seconds.toFixed(2)} s, ${(report.changedBytes / MiB).toFixed(1)} MiB changed, ${((volume?.bytesRead ?? 0) / MiB).toFixed(1)} MiB read comparing, ${(diffSpace / MiB).toFixed(1)} MiB new space (chunks decided by shared extents ${volume?.decidedBySharing ?? 0}, by .raw.hash ${volume?.decidedByHashes ?? 0})`,
      `blocklist create (older) + copy --createmeta (newer): ${blocklistSeconds.toFixed(1)} s, reads both disks' data: ${(2 * dataGiB).toFixed(0)} GiB`,
      `ratio diff / blocklist: ${(diff.seconds / blocklistSeconds).toFixed(4)} (${(blocklistSeconds / diff.seconds).toFixed(0)}x faster)`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });
}
