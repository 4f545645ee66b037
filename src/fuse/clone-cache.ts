// SPDX-License-Identifier: MIT
/**
 * `synthvhd mount --clone-cache DIR` (docs/fuse-passthrough.md §3): a served disk whose bytes are
 * all headers, zeros and block-aligned ranges of its backup's files is written once into DIR as a
 * real file that shares those ranges with the backup (FICLONERANGE: kilobytes of metadata, no
 * data copied; the materializer's writeLayout, the same extent map the mount serves), and opened
 * as a FUSE passthrough file: the kernel then reads the copy itself, with no request to the
 * daemon, from its own page cache.
 *
 * - DIR must be on the backup's file system (btrfs, XFS with reflink, ZFS with block cloning) and
 *   outside the backup root and the mount point; each mount works in a private `synthvhd-clones-
 *   <pid>-*` folder (mode 0700) inside it, removed at unmount; ones left by a dead process are
 *   removed at the next mount.
 * - A disk that cannot be cloned (compressed backups, another file system, a partition not on a
 *   file-system block boundary) is served by the daemon as before: decided once per disk and
 *   logged once, so one path never mixes the two kinds of open (the kernel refuses that).
 * - When a disk's backup changes or vanishes, its copy is truncated to nothing before it is
 *   removed: open files read end-of-file from then on, never bytes of a backup that is gone.
 *   The kernel keeps a removed copy's blocks until its last open file is closed.
 */
import { chmod, mkdtemp, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Confinement } from '../extents/confined-open.js';
import type { Layout } from '../extents/extent.js';
import { planClone } from '../materialize/clone-plan.js';
import { writeLayout } from '../materialize/write-layout.js';
import { fsBlockSize } from '../native/native.js';

/** Bytes a copy may take beyond shared blocks (generated headers and BAT, unaligned ends). */
const MAX_WRITTEN_BYTES = 64 * 1024 * 1024;
/** Copies kept at most by default; the oldest one no file has open goes first. */
const MAX_COPIES = 256;
const FOLDER_PREFIX = 'synthvhd-clones-';

interface Copy {
  /** The backups the copy was made from (ServedDisk objects): a new disk object is a new state. */
  readonly disks: readonly object[];
  readonly ready: Promise<FileHandle | undefined>;
  readonly file: string;
  opens: number;
}

/** Why `layout` cannot be a cheap clone in a file system of `blockSize`-byte blocks, or undefined. */
export function whyNotClonable(layout: Layout, blockSize: number): string | undefined {
  let written = 0;
  for (const extent of layout.extents) {
    if (extent.kind === 'compressed' || extent.kind === 'chain') return 'its backup is compressed (a copy would hold decoded bytes)';
    if (extent.kind === 'bytes') written += extent.length;
    if (extent.kind === 'file') {
      for (const piece of planClone(extent.start, extent.offset, extent.length, blockSize)) if (piece.action === 'copy') written += piece.length;
    }
  }
  if (written > MAX_WRITTEN_BYTES) return `${written} of its bytes would be copied, not shared (a partition off the ${blockSize}-byte block grid)`;
  return undefined;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class CloneCache {
  private readonly copies = new Map<string, Copy>();
  /** Served paths whose disk state cannot be cloned (that state's disks), so they are not retried. */
  private readonly refused = new Map<string, readonly object[]>();
  private made = 0;

  private constructor(
    /** This mount's private folder. */
    readonly folder: string,
    private readonly blockSize: number,
    private readonly confinement: Confinement,
    private readonly log: (line: string) => void,
    private readonly maxCopies: number,
  ) {}

  /** Makes this mount's folder in `dir` (checked by the caller), removing ones dead mounts left. */
  static async create(dir: string, root: string, log: (line: string) => void, maxCopies = MAX_COPIES): Promise<CloneCache> {
    for (const name of await readdir(dir)) {
      const pid = Number(/^synthvhd-clones-(\d+)-/.exec(name)?.[1] ?? NaN);
      if (Number.isInteger(pid) && pid !== process.pid && !processAlive(pid)) await rm(join(dir, name), { recursive: true, force: true });
    }
    const folder = await mkdtemp(join(dir, `${FOLDER_PREFIX}${process.pid}-`));
    await chmod(folder, 0o700);
    const probe = await open(folder, 'r');
    let blockSize: number;
    try {
      blockSize = await fsBlockSize(probe.fd);
    } finally {
      await probe.close();
    }
    return new CloneCache(folder, blockSize, { root }, log, maxCopies);
  }

  /**
   * The descriptor of the copy of `servedPath`'s disk in the state `disks`, made now if need be;
   * undefined when that disk is served by the daemon instead (not clonable, or making it failed).
   */
  async backingFor(servedPath: string, layout: Layout, disks: readonly object[]): Promise<number | undefined> {
    const refusedFor = this.refused.get(servedPath);
    if (refusedFor !== undefined && sameDisks(refusedFor, disks)) return undefined;
    let copy = this.copies.get(servedPath);
    if (copy !== undefined && !sameDisks(copy.disks, disks)) {
      this.discard(servedPath, copy, true);
      copy = undefined;
    }
    if (copy === undefined) {
      const why = whyNotClonable(layout, this.blockSize);
      if (why !== undefined) {
        this.refuse(servedPath, disks, why);
        return undefined;
      }
      const file = join(this.folder, `${++this.made}.img`);
      copy = { disks, file, opens: 0, ready: this.makeCopy(servedPath, layout, file, disks) };
      this.copies.set(servedPath, copy);
      this.evict(copy);
    }
    const handle = await copy.ready;
    return handle?.fd;
  }

  private async makeCopy(servedPath: string, layout: Layout, file: string, disks: readonly object[]): Promise<FileHandle | undefined> {
    try {
      const report = await writeLayout(layout, file, { reflink: 'always', confinement: this.confinement, durable: false });
      if (report.copiedBytes + report.generatedBytes > MAX_WRITTEN_BYTES) {
        await rm(file, { force: true });
        this.refuse(servedPath, disks, `${report.copiedBytes} of its bytes were copied, not shared`);
        return undefined;
      }
      // Writable: a retired clone is emptied through this descriptor (`discard`).
      return await open(file, 'r+');
    } catch (error) {
      this.refuse(servedPath, disks, error instanceof Error ? error.message : String(error));
      return undefined;
    }
  }

  private refuse(servedPath: string, disks: readonly object[], why: string): void {
    this.refused.set(servedPath, disks);
    const copy = this.copies.get(servedPath);
    if (copy !== undefined && copy.disks === disks) this.copies.delete(servedPath);
    this.log(`${servedPath}: served by the daemon, not from a clone in ${this.folder}: ${why}`);
  }

  /** A file of `servedPath` was opened on its copy / closed. */
  opened(servedPath: string): void {
    const copy = this.copies.get(servedPath);
    if (copy !== undefined) copy.opens++;
  }

  released(servedPath: string): void {
    const copy = this.copies.get(servedPath);
    if (copy !== undefined && copy.opens > 0) copy.opens--;
  }

  /** `disk` changed or vanished: copies made from it read as empty from now on, and go. */
  retire(disk: object): void {
    for (const [servedPath, copy] of this.copies) if (copy.disks.includes(disk)) this.discard(servedPath, copy, true);
  }

  /**
   * Stops keeping `copy`: its descriptor closed, its file removed. `empty` truncates it first (a
   * retired disk: open passthrough files keep the inode, and emptied it reads end of file).
   */
  private discard(servedPath: string, copy: Copy, empty: boolean): void {
    this.copies.delete(servedPath);
    void copy.ready
      .then(async (handle) => {
        if (handle === undefined) return;
        if (empty) await handle.truncate(0).catch(() => undefined);
        await handle.close();
      })
      .finally(() => rm(copy.file, { force: true }))
      .catch(() => undefined);
  }

  /** Over maxCopies: the oldest copies no file has open go, never `keep` (the one being made). */
  private evict(keep: Copy): void {
    for (const [servedPath, copy] of this.copies) {
      if (this.copies.size <= this.maxCopies) return;
      if (copy.opens === 0 && copy !== keep) this.discard(servedPath, copy, false);
    }
  }

  /** Closes every copy and removes this mount's folder (open passthrough files keep their blocks). */
  async close(): Promise<void> {
    const copies = [...this.copies.values()];
    this.copies.clear();
    await Promise.all(copies.map(async (copy) => (await copy.ready.catch(() => undefined))?.close().catch(() => undefined)));
    await rm(this.folder, { recursive: true, force: true });
  }
}

function sameDisks(a: readonly object[], b: readonly object[]): boolean {
  return a.length === b.length && a.every((disk, index) => disk === b[index]);
}
