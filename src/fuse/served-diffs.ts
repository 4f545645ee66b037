// SPDX-License-Identifier: MIT
/**
 * The backup-run diffs of a mount: in the folder of a drive-letter backup whose disk has an
 * earlier backup, `Image_<L>_<ts>.disk_diff.vhdx` is what changed since that backup, as a
 * differencing VHDX (src/diff/backup-diff.ts `planDiff`) whose parent is the earlier backup's
 * served `.disk.vhdx` in the mounted tree, so the parent locator's relative_path is
 * `..\<older folder>\Image_<L>_<ts>.disk.vhdx` and a Windows client on the share follows it.
 *
 * The parent is the nearest earlier backup folder of the same client and drive letter whose disk
 * is served (complete, composable) and has the same disk identity (urbackup/group-disks.ts
 * `diskIdentityKey`: device number and GPT disk GUID / MBR signature); a folder of the same
 * letter that held another disk is passed over. Finding it composes disks (cheap: `.raw.mbr`
 * and boot sectors, cached by ServedDisks), never compares them.
 *
 * Two steps, two costs:
 * - `parentOf`: which earlier disk; re-checked at most once per `revalidateMs` like the disks
 *   themselves, in the background of the lookup that asked.
 * - the build: the diff's layout, whose size getattr must report, planned by `planDiff`
 *   (compareVolumes: shared extents and `.raw.hash` decide most chunks without reading; missing
 *   or untrusted hashes mean reading both volumes, hours for a multi-TB volume). No lookup ever
 *   waits for it: the first readdir or lookup of the folder starts it in the background (one
 *   build at a time, like the blocklists), and the diff appears (listed, found) once it is
 *   complete; until then the name answers ENOENT. A build is cached under both backups' source
 *   keys (folder + ServedDisk.key of newer and older), so a change on either side builds a new
 *   diff.
 * A build that fails is logged once and the name answers ENOENT; it is tried again after
 * RETRY_FAILED_MS (a transient I/O error must not hide the diff for the life of the mount).
 */
import { readdir } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import { LRUCache } from 'lru-cache';
import { virtualFileName } from '../catalog/catalog.js';
import { planDiff } from '../diff/backup-diff.js';
import { type VirtualAccess, virtualAccess } from './reader-access.js';
import { absoluteWin32Path } from '../container/windows-path.js';
import type { Layout } from '../extents/extent.js';
import { timestampMinutes } from '../urbackup/backup-tree.js';
import { createLimiter } from '../util/limit.js';
import { testHold } from '../util/test-hold.js';
import { ForegroundActivity } from './foreground-activity.js';
import {
  DEFAULT_DIFF_CACHE_BYTES,
  describe,
  diffFileName,
  layoutMemoryBytes,
  parseDriveLetterFolder,
  PENDING_ENTRY_BYTES,
  type ServedDisk,
  type ServedDisks,
} from './served-disks.js';

const RETRY_FAILED_MS = 60_000;
/**
 * A diff's parent search and its build each start once the mount has answered no request for
 * QUIET_MS (at the latest after MAX_QUIET_WAIT_MS). A first `ls -l` (or Explorer opening the
 * folder) is a burst of lookups and getattrs answered from the thread pool and this thread;
 * composing the earlier disk and sampling its hashes at the same moment made that burst wait
 * (bench catalog). The diff is listed once built, a moment later.
 */
const QUIET_MS = 150;
const MAX_QUIET_WAIT_MS = 5_000;
/** Folders whose diff may wait to be planned (see ServedDiffs.wanted). */
const MAX_WANTED = 1024;

/** One built diff: `newer`'s disk over `older`'s `.disk.vhdx`. */
export class ServedDiff {
  /**
   * Readable by whoever could read both backups: its bytes are NEWER's, and which blocks it
   * holds tells what changed since OLDER.
   */
  readonly access: VirtualAccess;

  constructor(
    readonly newer: ServedDisk,
    readonly older: ServedDisk,
    readonly layout: Layout,
  ) {
    this.access = virtualAccess([...newer.sources, ...older.sources], newer.access.uid, newer.access.gid);
  }

  /** Either backup changed or vanished: the child no longer matches its sources or its parent. */
  get stale(): boolean {
    return this.newer.stale || this.older.stale;
  }

  /** What the diff keeps alive: its layout and both disks. */
  memoryBytes(): number {
    return layoutMemoryBytes(this.layout) + this.newer.memoryBytes() + this.older.memoryBytes();
  }

  /** Newest source mtime of both sides (the parent's identity is part of the child's bytes). */
  get mtimeMs(): number {
    return Math.max(this.newer.mtimeMs, this.older.mtimeMs);
  }
}

/**
 * Which disk a folder's diff has as parent, by name: the folder and source key of the earlier
 * backup, not its ServedDisk. Holding the disk here would keep thousands of disks alive outside
 * the disk cache's bound (an `ls -lR` of a big root looks up every folder); the disk cache gives
 * it back, composed again if it was evicted (RAW: one small read).
 */
interface ParentEntry {
  readonly newerKey: string;
  readonly older: { readonly folder: string; readonly key: string } | undefined;
  checkedAt: number;
}

interface BuildEntry {
  result: Promise<ServedDiff | undefined>;
  /** The diff once its build completed. */
  diff: ServedDiff | undefined;
  /** performance.now() of a failed build, so it is retried later. */
  failedAt: number | undefined;
}

export interface ServedDiffsOptions {
  /** Bytes of built diffs kept cached (LRU by memory, their BATs and bitmaps, and both disks); default 32 MiB. */
  readonly maxBytes?: number;
  /**
   * The mount point as Windows reaches it (`\\server\share`, from parseWindowsFolder): the
   * diff's `absolute_win32_path` then names its parent there; without it the entry is left out.
   */
  readonly windowsPath?: string;
}

export class ServedDiffs {
  private readonly parents: LRUCache<string, ParentEntry>;
  private readonly builds: LRUCache<string, BuildEntry>;
  /** One build at a time: a diff that reads both volumes must not starve the mount's reads. */
  private readonly buildSlot = createLimiter(1);
  /**
   * Folders whose diff was asked for and is not planned yet, the latest last: planned one at a
   * time, latest first (the folder a client just opened), whenever the mount is quiet. By name,
   * not by disk: a walk of the whole share asks for thousands, and holding their disks here
   * would keep them alive outside the disk cache's bound. At most MAX_WANTED; the oldest wishes
   * are dropped (a later look at the folder asks again).
   */
  private readonly wanted = new Set<string>();
  private draining = false;

  /**
   * `root`: the backup root (source tree); `mountpoint`: where it is mounted, so the parent
   * locator names the parent as a client of the mount sees it.
   */
  constructor(
    private readonly disks: ServedDisks,
    private readonly root: string,
    private readonly mountpoint: string,
    private readonly options: ServedDiffsOptions = {},
    /** Client requests, which background work lets pass first. */
    private readonly activity: ForegroundActivity = new ForegroundActivity(),
  ) {
    // A parent entry names a disk the disk cache holds (and sizes); counted at a fixed cost.
    this.parents = new LRUCache<string, ParentEntry>({ maxSize: PENDING_ENTRY_BYTES * 4096, sizeCalculation: () => PENDING_ENTRY_BYTES });
    this.builds = new LRUCache<string, BuildEntry>({
      maxSize: options.maxBytes ?? DEFAULT_DIFF_CACHE_BYTES,
      // A built diff keeps both its disks alive (open handles revalidate them): they count here too.
      sizeCalculation: (entry) => (entry.diff === undefined ? PENDING_ENTRY_BYTES : entry.diff.memoryBytes()),
    });
  }

  /** The disk `newer`'s diff would have as parent, or undefined (a first backup of its disk). */
  async parentOf(newer: ServedDisk): Promise<ServedDisk | undefined> {
    const cached = this.parents.get(newer.folder);
    const now = performance.now();
    if (cached !== undefined && cached.newerKey === newer.key && now - cached.checkedAt < this.disks.revalidateMs) {
      if (cached.older === undefined) return undefined;
      const older = await this.disks.get(cached.older.folder, { wait: true });
      if (older !== undefined && older.key === cached.older.key && !older.stale) return older;
    }
    const older = await this.findParent(newer);
    this.parents.set(newer.folder, { newerKey: newer.key, older: older === undefined ? undefined : { folder: older.folder, key: older.key }, checkedAt: performance.now() });
    return older;
  }

  /** True when the diff name should be listed: its build is complete. Starts the build (in the background) when there is none yet. */
  offered(newer: ServedDisk): Promise<boolean> {
    return Promise.resolve(this.get(newer) !== undefined);
  }

  /**
   * The diff served in `newer`'s folder once its build is complete; undefined when there is none
   * or it is still being built. Answers from what is known at once: finding the parent (composing
   * earlier disks) and building are started in the background, never waited for.
   */
  get(newer: ServedDisk): ServedDiff | undefined {
    this.refresh(newer);
    const parent = this.parents.peek(newer.folder);
    if (parent?.older === undefined || parent.newerKey !== newer.key) return undefined;
    const diff = this.builds.get(buildKey(newer, parent.older))?.diff;
    return diff === undefined || diff.stale ? undefined : diff;
  }

  /** Asks for `newer`'s parent search and build, in the background (see `wanted`). */
  private refresh(newer: ServedDisk): void {
    if (this.wanted.has(newer.folder)) return;
    this.wanted.add(newer.folder);
    if (this.wanted.size > MAX_WANTED) {
      const oldest = this.wanted.values().next();
      if (oldest.done !== true) this.wanted.delete(oldest.value);
    }
    if (!this.draining) void this.drain();
  }

  /** Plans the wanted diffs one after another, latest first, each once the mount is quiet. */
  private async drain(): Promise<void> {
    this.draining = true;
    try {
      for (;;) {
        await this.activity.quiet(QUIET_MS, MAX_QUIET_WAIT_MS);
        const folder = [...this.wanted].at(-1);
        if (folder === undefined) return;
        this.wanted.delete(folder);
        try {
          const newer = await this.disks.get(folder, { wait: true });
          if (newer !== undefined) await (await this.started(newer))?.result;
        } catch {
          // A failed search or build is logged by started(); the next folder is planned all the same.
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** Resolves once the diff of `newer` is built (or cannot be); for callers that may wait (tests, tools). */
  async ready(newer: ServedDisk): Promise<ServedDiff | undefined> {
    return (await this.started(newer))?.result;
  }

  /** The build of `newer`'s diff over its parent, started if there is none (or a failed one is due a retry). */
  private async started(newer: ServedDisk): Promise<BuildEntry | undefined> {
    const older = await this.parentOf(newer);
    if (older === undefined) return undefined;
    const key = buildKey(newer, older);
    const name = join(newer.folder, diffFileName(newer.anchor.letter, newer.anchor.timestamp));
    if (!compatible(older, newer)) {
      this.disks.logOnce(key, `${name}: not served: the disk's size or sector size differs from the previous backup's (${older.folder}); a differencing disk needs its parent's`);
      return undefined;
    }
    let build = this.builds.get(key);
    if (build?.failedAt !== undefined && performance.now() - build.failedAt > RETRY_FAILED_MS) build = undefined;
    if (build === undefined) {
      const entry: BuildEntry = { result: Promise.resolve(undefined), diff: undefined, failedAt: undefined };
      entry.result = this.buildSlot(async () => {
        await this.activity.quiet(QUIET_MS, MAX_QUIET_WAIT_MS);
        await testHold('SYNTHVHD_TEST_HOLD_BACKGROUND');
        return this.build(newer, older);
      }).then(
        (diff) => {
          entry.diff = diff;
          // Sized again now that its layout exists: a new entry object, since lru-cache keeps
          // the size of a value set again (both objects share the result).
          if (this.builds.peek(key) === entry) this.builds.set(key, { ...entry });
          return diff;
        },
        (error: unknown) => {
          entry.failedAt = performance.now();
          this.disks.logOnce(key, `${name}: not served: ${describe(error)}`);
          return undefined;
        },
      );
      this.builds.set(key, entry);
      build = entry;
    }
    return build;
  }

  private async findParent(newer: ServedDisk): Promise<ServedDisk | undefined> {
    const clientDir = dirname(newer.folder);
    const minutes = timestampMinutes(newer.anchor.timestamp);
    let names: string[];
    try {
      names = await readdir(clientDir);
    } catch {
      return undefined; // The client folder vanished: the newer disk goes stale on its own.
    }
    const earlier = names
      .flatMap((name) => {
        const parsed = parseDriveLetterFolder(name);
        if (parsed === undefined || parsed.letter !== newer.anchor.letter) return [];
        const at = timestampMinutes(parsed.timestamp);
        return at < minutes ? [{ name, at }] : [];
      })
      .sort((a, b) => b.at - a.at);
    // Nearest first; incomplete or unservable backups are no parent (a client could not open
    // their .disk.vhdx), nor a backup of another disk that had the same letter then.
    for (const { name } of earlier) {
      const disk = await this.disks.get(join(clientDir, name), { wait: true });
      if (disk !== undefined && disk.identityKey === newer.identityKey) return disk;
    }
    return undefined;
  }

  private async build(newer: ServedDisk, older: ServedDisk): Promise<ServedDiff> {
    const parentInMount = join(relative(this.root, older.folder), virtualFileName(older.anchor, 'vhdx'));
    const parentPath = join(this.mountpoint, parentInMount);
    const outputPath = join(this.mountpoint, relative(this.root, newer.folder), diffFileName(newer.anchor.letter, newer.anchor.timestamp));
    const windowsPath = this.options.windowsPath;
    const plan = await planDiff(older.disk, newer.disk, parentPath, outputPath, windowsPath === undefined ? undefined : absoluteWin32Path(windowsPath, parentInMount));
    return new ServedDiff(newer, older, plan.layout);
  }
}

/** planDiff refuses these; checked up front so readdir does not list a diff that cannot exist. */
function compatible(older: ServedDisk, newer: ServedDisk): boolean {
  return older.disk.image.layout.size === newer.disk.image.layout.size && older.disk.image.sectorSize === newer.disk.image.sectorSize;
}

function buildKey(newer: ServedDisk, older: { readonly folder: string; readonly key: string }): string {
  return [newer.folder, newer.key, basename(older.folder), older.key].join('\0');
}

