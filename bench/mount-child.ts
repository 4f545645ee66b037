// SPDX-License-Identifier: MIT
/**
 * A synthvhd mount with explicit tuning, for the benchmark (the CLI always uses DEFAULT_TUNING):
 * `node dist/bench/mount-child.js ROOT MOUNTPOINT '{"pageCache":"none"}' [off|beside|CLONE_CACHE_DIR]` (clones: `--no-clones`, the default, `--clone-cache DIR`). Prints "ready" once
 * mounted, unmounts on SIGTERM/SIGINT. It never reads its own mount (that would deadlock).
 */
import { mountBackupRoot, type MountTuning } from '../src/fuse/mount.js';

const [root, mountpoint, tuningJson, clones = 'beside'] = process.argv.slice(2);
if (root === undefined || mountpoint === undefined) {
  process.stderr.write('usage: mount-child ROOT MOUNTPOINT [TUNING_JSON [off|beside|CLONE_CACHE_DIR]]\n');
  process.exit(2);
}
const tuning = JSON.parse(tuningJson ?? '{}') as Partial<MountTuning>;
let stopping = false;
const stop = (mounted: { unmount(): Promise<void> }): void => {
  if (stopping) return;
  stopping = true;
  mounted.unmount().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`${String(error)}\n`);
      process.exit(1);
    },
  );
};
const mounted = await mountBackupRoot(root, mountpoint, { tuning, allowOther: true, ...(clones === 'off' ? { clones: false } : clones === 'beside' ? {} : { cloneCache: clones }) });
process.on('SIGTERM', () => { stop(mounted); });
process.on('SIGINT', () => { stop(mounted); });
process.stdout.write('ready\n');
