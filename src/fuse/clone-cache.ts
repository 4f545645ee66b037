// SPDX-License-Identifier: MIT
/**
 * Clones of served disks (docs/fuse-passthrough.md §3): a served disk whose bytes are all
 * headers, zeros and block-aligned ranges of its backup's files is written once as a real file
 * that shares those ranges with the backup (FICLONERANGE: kilobytes of metadata, no data copied;
 * the materializer's fillLayout, from the same extent map the mount serves), and opened as a FUSE
 * passthrough file: the kernel then reads the copy itself, with no request to the daemon, from
 * its own page cache.
 *
 * Where the copies live:
 * - By default (`CloneCache.besideBackups`), each is an anonymous file (open(2) O_TMPFILE) made in
 *   the folder of the disk's first backup file, so on its file system: it has no name, nothing
 *   in the backup tree changes (not even the folder's mtime), no one else can open it, and the
 *   file system frees it when the daemon closes it or dies (a crash leaves nothing behind). A
 *   file system that cannot share blocks (ext4, a read-only mount) is found out once and its
 *   disks are served by the daemon, silently (it is the default, and changes no byte).
 * - With `--clone-cache DIR` (`CloneCache.create`), named files in a private `synthvhd-clones-
 *   <pid>-*` folder (mode 0700) in DIR, removed at unmount; ones left by a dead process are
 *   removed at the next mount. DIR must be on the backup's file system and outside the backup
 *   root and the mount point.
 * - A disk that cannot be cloned (compressed backups, another file system, a partition not on a
 *   file-system block boundary) is served by the daemon as before: decided once per disk state,
 *   so one path never mixes the two kinds of open (the kernel refuses that).
 * - When a disk's backup changes or vanishes, its copy is truncated to nothing before it is
 *   dropped: open files read end-of-file from then on, never bytes of a backup that is gone.
 *   The kernel keeps a dropped copy's blocks until its last open file is closed.
 */
import { constants } from 'node:fs';
import { chmod, mkdtemp, open, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Confinement } from '../extents/confined-open.js';
import type { Layout } from '../extents/extent.js';
import { SourceFiles } from '../extents/source-files.js';
import { planClone } from '../materialize/clone-plan.js';
import { fillLayout } from '../materialize/write-layout.js';
import { fsBlockSize } from '../native/native.js';
import { isNativeError } from '../native/native-error.js';

/** Bytes a copy may take beyond shared blocks (generated headers and BAT, unaligned ends). */
const MAX_WRITTEN_BYTES = 64 * 1024 * 1024;
/** Copies kept at most by default; the oldest one no file has open goes first. */
const MAX_COPIES = 256;
/**
 * A copy no file has had open for this long is dropped: it pins its backup's blocks, and urBackup
 * deletes old backups to free space (a deleted backup's blocks stay allocated while a clone shares
 * them). Making it again on the next open costs tens of milliseconds.
 */
const IDLE_MS = 30_000;
const FOLDER_PREFIX = 'synthvhd-clones-';
/**
 * open(2) O_TMPFILE (Linux >= 3.11; `__O_TMPFILE | O_DIRECTORY`, the same value on x86-64 and
 * arm64): an unnamed regular file in the given folder's file system. Node does not export it.
 */
const O_TMPFILE = 0o20200000;
/** Errors that say a file system cannot hold clones at all (not just this disk). */
const FILE_SYSTEM_CANNOT = new Set(['EROFS', 'EOPNOTSUPP', 'ENOTSUP', 'EISDIR', 'ENOTTY', 'EACCES', 'EPERM']);

interface Copy {
  /** The backups the copy was made from (ServedDisk objects): a new disk object is a new state. */
  readonly disks: readonly object[];
  ready: Promise<FileHandle | undefined>;
  /** Its name (`--clone-cache DIR`), or undefined for an anonymous file. */
  file: string | undefined;
  opens: number;
  /** Set while no file has it open: drops it after IDLE_MS. */
  idle?: NodeJS.Timeout | undefined;
}

/** Why `layout` cannot be a cheap clone in a file system of `blockSize`-byte blocks, or undefined. */
export function whyNotClonable(layout: Layout, blockSize: number): string | undefined {
  if (holdsDecodedBytes(layout)) return COMPRESSED;
  let written = 0;
  for (const extent of layout.extents) {
    if (extent.kind === 'bytes') written += extent.length;
    if (extent.kind === 'file') {
      for (const piece of planClone(extent.start, extent.offset, extent.length, blockSize)) if (piece.action === 'copy') written += piece.length;
    }
  }
  if (written > MAX_WRITTEN_BYTES) return `${written} of its bytes would be copied, not shared (a partition off the ${blockSize}-byte block grid)`;
  return undefined;
}

const COMPRESSED = 'its backup is compressed (a copy would hold decoded bytes)';

/** Compressed or chained extents: bytes that exist only once decoded, so no clone can share them. */
function holdsDecodedBytes(layout: Layout): boolean {
  return layout.extents.some((extent) => extent.kind === 'compressed' || extent.kind === 'chain');
}

/** The errno name (`EROFS`) of a failure or of what caused it, if a system call failed. */
function errnoOf(error: unknown): string | undefined {
  for (let at: unknown = error; at instanceof Error; at = at.cause) {
    if (isNativeError(at)) return at.errno;
    const { code } = at as NodeJS.ErrnoException;
    if (code !== undefined && /^E[A-Z]+$/.test(code)) return code;
  }
  return undefined;
}

/** An empty file a copy is written into, and what names it in messages. */
interface Target {
  readonly handle: FileHandle;
  readonly name: string;
  /** Beside the backups: the folder it was made in and that folder's file system. */
  readonly beside?: { readonly folder: string; readonly device: number };
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
  /** Besides the backups: file systems (st_dev) found unable to hold clones, with why. */
  private readonly unable = new Map<number, string>();
  private made = 0;
  private active: () => boolean = () => true;

  private constructor(
    /** This mount's private folder (`--clone-cache DIR`), or undefined: anonymous files beside the backups. */
    readonly folder: string | undefined,
    private readonly confinement: Confinement,
    private readonly log: (line: string) => void,
    private readonly maxCopies: number,
    private readonly idleMs: number,
  ) {}

  /** `--clone-cache DIR`: makes this mount's folder in `dir` (checked by the caller), removing ones dead mounts left. */
  static async create(dir: string, root: string, log: (line: string) => void, maxCopies = MAX_COPIES, idleMs = IDLE_MS): Promise<CloneCache> {
    for (const name of await readdir(dir)) {
      const pid = Number(/^synthvhd-clones-(\d+)-/.exec(name)?.[1] ?? NaN);
      if (Number.isInteger(pid) && pid !== process.pid && !processAlive(pid)) await rm(join(dir, name), { recursive: true, force: true });
    }
    const folder = await mkdtemp(join(dir, `${FOLDER_PREFIX}${process.pid}-`));
    await chmod(folder, 0o700);
    return new CloneCache(folder, { root }, log, maxCopies, idleMs);
  }

  /** The default: each copy an anonymous file on its backup's file system (see the top of this file). */
  static besideBackups(root: string, log: (line: string) => void, maxCopies = MAX_COPIES, idleMs = IDLE_MS): CloneCache {
    return new CloneCache(undefined, { root }, log, maxCopies, idleMs);
  }

  /**
   * Copies are made only while `active()` says so: the mount passes "the kernel accepted FUSE
   * passthrough", without which a copy would be read by the daemon anyway, for nothing.
   */
  onlyWhile(active: () => boolean): void {
    this.active = active;
  }

  /**
   * The descriptor of the copy of `servedPath`'s disk in the state `disks`, made now if need be;
   * undefined when that disk is served by the daemon instead (not clonable, or making it failed).
   */
  async backingFor(servedPath: string, layout: Layout, disks: readonly object[]): Promise<number | undefined> {
    if (!this.active()) return undefined;
    const refusedFor = this.refused.get(servedPath);
    if (refusedFor !== undefined && sameDisks(refusedFor, disks)) return undefined;
    let copy = this.copies.get(servedPath);
    if (copy !== undefined && !sameDisks(copy.disks, disks)) {
      this.discard(servedPath, copy, true);
      copy = undefined;
    }
    if (copy === undefined) {
      if (holdsDecodedBytes(layout)) {
        this.refuse(servedPath, disks, COMPRESSED, this.folder === undefined);
        return undefined;
      }
      copy = { disks, file: undefined, opens: 0, ready: Promise.resolve(undefined) };
      copy.ready = this.makeCopy(servedPath, layout, copy);
      this.copies.set(servedPath, copy);
      this.evict(copy);
    }
    // Made or found for an open that follows (or for nothing: then it goes when idle).
    this.idleFrom(servedPath, copy);
    const handle = await copy.ready;
    return handle?.fd;
  }

  /** Creates the empty file a copy is written into, or says why there is none. */
  private async createFile(layout: Layout, copy: Copy): Promise<Target | string> {
    if (this.folder !== undefined) {
      const file = join(this.folder, `${++this.made}.img`);
      copy.file = file;
      return { handle: await open(file, 'wx+', 0o600), name: file };
    }
    const source = layout.extents.find((extent) => extent.kind === 'file');
    if (source === undefined) return 'it holds no backup file data';
    // The folder of a backup file the layout names. Were it swapped for a symlink meanwhile, the
    // unnamed file would only land elsewhere, where cloning from the sources (opened confined to
    // the root) fails or shares their bytes with a file no one else can open: nothing is exposed.
    const folder = dirname(source.path);
    const device = (await stat(folder)).dev;
    const unable = this.unable.get(device);
    if (unable !== undefined) return unable;
    try {
      return { handle: await open(folder, O_TMPFILE | constants.O_RDWR, 0o600), name: `a clone beside ${source.path}`, beside: { folder, device } };
    } catch (error) {
      const cannot = this.fileSystemCannot(folder, device, error);
      if (cannot === undefined) throw error;
      return cannot;
    }
  }

  /**
   * Notes a file system that cannot hold clones, so its disks are not tried again; undefined for
   * other failures. Not logged: clones beside the backups are the default wherever they work, and
   * their absence changes no byte (`synthvhd doctor` says whether the root's file system can share
   * blocks).
   */
  private fileSystemCannot(folder: string, device: number, error: unknown): string | undefined {
    const errno = errnoOf(error);
    if (errno === undefined || !FILE_SYSTEM_CANNOT.has(errno)) return undefined;
    const why = `the file system of ${folder} cannot hold clones (${errno})`;
    this.unable.set(device, why);
    return why;
  }

  private async makeCopy(servedPath: string, layout: Layout, copy: Copy): Promise<FileHandle | undefined> {
    let target: Target | string | undefined;
    const sources = new SourceFiles(4, this.confinement, false);
    try {
      target = await this.createFile(layout, copy);
      if (typeof target === 'string') {
        this.refuse(servedPath, copy.disks, target, this.folder === undefined);
        return undefined;
      }
      const why = whyNotClonable(layout, await fsBlockSize(target.handle.fd));
      if (why !== undefined) throw new Error(why);
      const report = await fillLayout(layout, target.handle, target.name, sources, 'always');
      if (report.copiedBytes + report.generatedBytes > MAX_WRITTEN_BYTES) throw new Error(`${report.copiedBytes} of its bytes were copied, not shared`);
      // Writable: a retired clone is emptied through this descriptor (`discard`).
      return target.handle;
    } catch (error) {
      if (typeof target === 'object') await target.handle.close().catch(() => undefined);
      if (copy.file !== undefined) await rm(copy.file, { force: true });
      const beside = typeof target === 'object' ? target.beside : undefined;
      const expected = beside !== undefined && this.fileSystemCannot(beside.folder, beside.device, error) !== undefined;
      this.refuse(servedPath, copy.disks, error instanceof Error ? error.message : String(error), expected);
      return undefined;
    } finally {
      await sources.close();
    }
  }

  /** `quiet`: an expected refusal (beside the backups: compressed, a file system that cannot) is not logged. */
  private refuse(servedPath: string, disks: readonly object[], why: string, quiet = false): void {
    this.refused.set(servedPath, disks);
    const copy = this.copies.get(servedPath);
    if (copy !== undefined && copy.disks === disks) this.copies.delete(servedPath);
    if (!quiet) this.log(`${servedPath}: served by the daemon, not from a clone${this.folder === undefined ? '' : ` in ${this.folder}`}: ${why}`);
  }

  /** A file of `servedPath` was opened on its copy / closed. */
  opened(servedPath: string): void {
    const copy = this.copies.get(servedPath);
    if (copy === undefined) return;
    copy.opens++;
    clearTimeout(copy.idle);
    copy.idle = undefined;
  }

  released(servedPath: string): void {
    const copy = this.copies.get(servedPath);
    if (copy === undefined || copy.opens === 0) return;
    copy.opens--;
    this.idleFrom(servedPath, copy);
  }

  /** With no file open on it, `copy` is dropped IDLE_MS from now unless opened again. */
  private idleFrom(servedPath: string, copy: Copy): void {
    if (copy.opens > 0) return;
    clearTimeout(copy.idle);
    copy.idle = setTimeout(() => {
      if (this.copies.get(servedPath) === copy && copy.opens === 0) this.discard(servedPath, copy, false);
    }, this.idleMs);
    copy.idle.unref();
  }

  /** `disk` changed or vanished: copies made from it read as empty from now on, and go. */
  retire(disk: object): void {
    for (const [servedPath, copy] of this.copies) if (copy.disks.includes(disk)) this.discard(servedPath, copy, true);
  }

  /**
   * Stops keeping `copy`: its descriptor closed, its file removed (an anonymous one goes with its
   * last descriptor). `empty` truncates it first (a retired disk: open passthrough files keep the
   * inode, and emptied it reads end of file).
   */
  private discard(servedPath: string, copy: Copy, empty: boolean): void {
    clearTimeout(copy.idle);
    this.copies.delete(servedPath);
    void copy.ready
      .then(async (handle) => {
        if (handle === undefined) return;
        if (empty) await handle.truncate(0).catch(() => undefined);
        await handle.close();
      })
      .finally(() => (copy.file === undefined ? undefined : rm(copy.file, { force: true })))
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
    for (const copy of copies) clearTimeout(copy.idle);
    this.copies.clear();
    await Promise.all(copies.map(async (copy) => (await copy.ready.catch(() => undefined))?.close().catch(() => undefined)));
    if (this.folder !== undefined) await rm(this.folder, { recursive: true, force: true });
  }
}

function sameDisks(a: readonly object[], b: readonly object[]): boolean {
  return a.length === b.length && a.every((disk, index) => disk === b[index]);
}
