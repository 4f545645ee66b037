// SPDX-License-Identifier: MIT
/**
 * `synthvhd mount ROOT MOUNTPOINT [--allow-other] [--blocklist-cache DIR [--blocklists]]`:
 * serves the backup root read-only, with the whole-disk `.disk.vhdx`/`.disk.vhd` in each
 * drive-letter backup folder, `.disk_diff.vhdx` over the previous backup of the same disk, and
 * with `--blocklist-cache` the cached blocklists (`--blocklists`: computed in the background
 * when missing). Runs in the foreground: one line on stdout once the mount is ready, unmounts
 * on SIGINT/SIGTERM (or when someone else unmounts it) and then returns, so the process exits 0.
 */
import { existsSync } from 'node:fs';
import { SynthvhdError } from '../../errors/synthvhd-error.js';
import { mountBackupRoot } from '../../fuse/mount.js';
import { parseWindowsFolder } from '../../container/windows-path.js';

export interface MountCommandOptions {
  readonly allowOther?: boolean;
  readonly debug?: boolean;
  /** `--blocklist-cache DIR`: serve the lists `synthvhd blocklist create --cache-dir DIR` made. */
  readonly blocklistCache?: string;
  /** `--blocklists`: compute missing lists into the cache in the background. */
  readonly blocklists?: boolean;
  /** `--clone-cache DIR`: serve disks that can be from reflinked copies made there (passthrough). */
  readonly cloneCache?: string;
  /** `--no-clones` (false): every disk read through the daemon. */
  readonly clones?: boolean;
  /** `--windows-path \\server\share`: the mount point as Windows reaches it. */
  readonly windowsPath?: string;
}

/**
 * Test-only, off unless SYNTHVHD_TEST_BLOCK_JS names a file: SIGUSR2 then blocks the Node main
 * thread until that file exists (at most 60 s), so a test can show that reads of an open disk
 * are answered without JavaScript (README "How the mount serves reads"). The lines go to stderr
 * synchronously (a pipe), so the test knows when the thread is blocked.
 */
function installTestJsBlocker(): void {
  const release = process.env.SYNTHVHD_TEST_BLOCK_JS;
  if (release === undefined || release === '') return;
  process.on('SIGUSR2', () => {
    process.stderr.write('synthvhd: test: JavaScript thread blocked\n');
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const deadline = Date.now() + 60_000;
    while (!existsSync(release) && Date.now() < deadline) Atomics.wait(pause, 0, 0, 10);
    process.stderr.write(`synthvhd: test: JavaScript thread ${existsSync(release) ? 'released' : 'released after 60 s'}\n`);
  });
}

export async function mountCommand(root: string, mountpoint: string, options: MountCommandOptions): Promise<void> {
  // Before any signal handler or mount: a usage error exits 2 with one line and nothing to undo.
  if (options.blocklists === true && options.blocklistCache === undefined) {
    throw new SynthvhdError('E_USAGE', '--blocklists needs --blocklist-cache DIR: the cache the lists are written to (outside the backup root)');
  }
  const windowsPath = options.windowsPath === undefined ? undefined : parseWindowsFolder(options.windowsPath);
  // Signals are caught from the start: one that arrives while mounting unmounts right after.
  let stopReason: string | undefined;
  let wake: () => void = () => undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    stopReason ??= signal;
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const mounted = await mountBackupRoot(root, mountpoint, {
      allowOther: options.allowOther ?? false,
      debug: options.debug ?? false,
      ...(options.blocklistCache === undefined ? {} : { blocklistCache: options.blocklistCache }),
      precomputeBlocklists: options.blocklists ?? false,
      ...(options.cloneCache === undefined ? {} : { cloneCache: options.cloneCache }),
      clones: options.clones ?? true,
      ...(windowsPath === undefined ? {} : { windowsPath }),
    });
    // A bug that escapes every handler must not leave a dead mount ("Transport endpoint is not
    // connected") behind: report it, unmount, exit 70 (internal error).
    process.on('uncaughtException', (error) => {
      process.stderr.write(`synthvhd: internal error (please report): ${(error.stack ?? error.message).replace(/\n\s*/g, ' | ')}\n`);
      void mounted.unmount().finally(() => process.exit(70));
    });
    installTestJsBlocker();
    if (stopReason === undefined) process.stdout.write(`synthvhd: mounted ${mounted.root} at ${mounted.mountpoint} (read-only)\n`);
    await new Promise<void>((resolvePromise) => {
      wake = resolvePromise;
      if (stopReason !== undefined) resolvePromise();
      void mounted.lost.then(() => {
        stopReason ??= 'unmounted from outside';
        resolvePromise();
      });
    });
    await mounted.unmount();
    process.stdout.write(`synthvhd: unmounted ${mounted.mountpoint} (${stopReason ?? ''})\n`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // A file opened before the (lazy) unmount keeps the FUSE session serving it until it is
    // closed; that must not hold the exit. main() sets the exit code before this fires.
    setTimeout(() => process.exit(), 2000).unref();
  }
}
