// SPDX-License-Identifier: MIT
/**
 * The read-only file system a mount serves, independent of the FUSE binding: the backup root
 * mirrored (real files and directories passed through, read-only) plus, in each drive-letter
 * volume backup folder, the whole-disk `Image_<L>_<ts>.disk.vhdx` / `.disk.vhd`, their
 * blocklists `….disk.vhdx.blocklist.bin` / `….disk.vhd.blocklist.bin` when a blocklist cache is
 * given and holds the list of the disk's current state (a real file of the cache passed through;
 * with `precomputeBlocklists`, missing lists are computed in the background as disks are
 * composed, and a list shows up once it is complete), and `Image_<L>_<ts>.disk_diff.vhdx` over
 * the previous backup of the same disk (./served-diffs.ts).
 *
 * Every method is async and only ever awaits asynchronous fs calls on the SOURCE tree: the
 * handlers run on the Node main thread, which answers every lookup, getattr, readdir and open of
 * the mount, so a synchronous call (or any call touching the mount itself) would stall or
 * deadlock it. Reads never come here: `open` answers with what the file is served from (an fd,
 * or the layout and the fds of its sources) and the native session (./native-session.ts) reads
 * on its own threads; `touched` is how a handle being read comes back to re-check its backups.
 *
 * Errors are thrown (SynthvhdError or Node system errors); ./session-handlers.ts turns them into
 * errno values.
 */
import { ForegroundActivity } from './foreground-activity.js';
import { constants } from 'node:fs';
import { lstat, open, readdir, readlink, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { BlocklistPrecomputer, readCachedBlocklist, type CachedBlocklist } from '../blocklist/cache.js';
import { BLOCKLIST_SUFFIX } from '../blocklist/blocklist.js';
import type { Layout } from '../extents/extent.js';
import { SourceFiles } from '../extents/source-files.js';
import { openSourceFile } from '../extents/confined-open.js';
import { SynthvhdError } from '../errors/synthvhd-error.js';
import { systemError } from './errno.js';
import { realInode, virtualInode } from './inode.js';
import type { CloneCache } from './clone-cache.js';
import { packLayout, type DirEntryInfo, type NodeStat, type NodeStatfs, type OpenAnswer } from './native-session.js';
import { ServedDisks, diffFileName, type ServedDisk, type ServedDisksOptions, type VirtualEntry, virtualEntriesOf } from './served-disks.js';
import { ServedDiffs } from './served-diffs.js';
import { mirroredMode, type VirtualAccess } from './reader-access.js';
import { lstatPaths, type EntryStat } from '../native/native.js';

const S_IFMT = constants.S_IFMT;
const S_IFREG = constants.S_IFREG;
const S_IFLNK = constants.S_IFLNK;
const S_IFDIR = constants.S_IFDIR;
/**
 * Names lstat'ed per pool job of a listing (lstatPaths): a batch is one round trip instead of one
 * per name, and a mirrored file backup's folder may hold 100 000 names.
 */
const READDIR_STAT_BATCH = 256;
const SECTOR = 512;
/** open(2) access-mode mask (fcntl.h); Node's fs.constants lacks it. */
const O_ACCMODE = 3;

/** What getattr and statfs answer: the session's own shapes (./native-session.ts). */
export type FileStat = NodeStat;
export type FsStats = NodeStatfs;

type Target =
  | { readonly kind: 'real'; readonly source: string }
  | { readonly kind: 'virtual'; readonly source: string; readonly folder: string; readonly entry: VirtualEntry };

/** What a virtual name stands for once it is known to exist; `access`: who may read it. */
type Served =
  /** A container composed from extents; `disks` are the backups it depends on (EIO once one is stale). */
  | { readonly kind: 'layout'; readonly disks: readonly ServedDisk[]; readonly layout: Layout; readonly mtimeMs: number; readonly access: VirtualAccess }
  /** A real file outside the backup tree (a cached blocklist), passed through read-only. */
  | { readonly kind: 'file'; readonly list: CachedBlocklist; readonly access: VirtualAccess };

/** An open file, by the native session's handle: what it depends on. */
/** `cloned`: the served path whose clone (src/fuse/clone-cache.ts) the kernel reads for this handle. */
type Handle = { readonly kind: 'real' } | { readonly kind: 'virtual'; readonly disks: readonly ServedDisk[]; readonly cloned?: string };

export interface BackupFsOptions extends ServedDisksOptions {
  /** Where "not served" reasons go (one line each). */
  readonly log: (line: string) => void;
  /** Source `.raw` files kept open (LRU). */
  readonly maxOpenSources?: number;
  /**
   * Where the tree is mounted (absolute): a `.disk_diff.vhdx` names its parent by its path in
   * the mount. Default: the root (only meaningful for tests that never mount).
   */
  readonly mountpoint?: string;
  /** Blocklist cache directory (absolute, outside the root: src/blocklist/cache.ts `checkCacheDir`). */
  readonly blocklistCache?: string;
  /** Compute missing lists into `blocklistCache` in the background (one worker thread). */
  readonly precomputeBlocklists?: boolean;
  /** The mount point as Windows reaches it, checked (src/container/windows-path.ts). */
  readonly windowsPath?: string;
  /** Serve disks that can be cloned from reflinked copies, read by the kernel (FUSE passthrough). */
  readonly cloneCache?: CloneCache;
}

export class BackupFs {
  readonly sources: SourceFiles;
  readonly disks: ServedDisks;
  readonly diffs: ServedDiffs;
  private readonly blocklistCache: string | undefined;
  private readonly precomputer: BlocklistPrecomputer | undefined;
  /** Client requests (getattr, readdir, open): background diff work waits for a quiet moment. */
  private readonly activity = new ForegroundActivity();
  private readonly handles = new Map<number, Handle>();
  private readonly cloneCache: CloneCache | undefined;
  /** Re-checks the backups of cloned open files, whose reads never reach us (no touch). */
  private readonly cloneWatch: NodeJS.Timeout | undefined;

  /** `root`: absolute, resolved path of the backup root; `rootDev`: its st_dev. */
  constructor(
    readonly root: string,
    private readonly rootDev: number,
    options: BackupFsOptions,
  ) {
    // Every source is opened confined to the root: no symlink, no file outside it, even if one
    // is swapped in after its disk was composed.
    this.sources = new SourceFiles(options.maxOpenSources ?? 256, { root });
    this.blocklistCache = options.blocklistCache;
    const log = options.log;
    const precomputer =
      options.blocklistCache !== undefined && options.precomputeBlocklists === true
        ? new BlocklistPrecomputer(options.blocklistCache, {
            onError: (request, error) => {
              log(`${request.anchor.folder}: no blocklist computed: ${error.message}`);
            },
          })
        : undefined;
    this.precomputer = precomputer;
    const onComposed = options.onComposed;
    this.disks = new ServedDisks(this.sources, log, {
      ...options,
      // A disk is queued when its folder is first looked at, never by scanning the root: the
      // precomputer looks in the cache first and hashes (on a worker) only what is missing.
      onComposed: (disk) => {
        onComposed?.(disk);
        precomputer?.request(disk.anchor, disk.disk.image);
      },
      onRetired: (disk) => {
        this.retired(disk);
      },
    });
    this.diffs = new ServedDiffs(this.disks, root, options.mountpoint ?? root, options, this.activity);
    this.cloneCache = options.cloneCache;
    if (this.cloneCache !== undefined) {
      this.cloneWatch = setInterval(() => {
        // What a read's touch does for a handle the daemon reads (a stale disk retires its clone).
        for (const [fh, handle] of this.handles) if (handle.kind === 'virtual' && handle.cloned !== undefined) this.touched(fh);
      }, 500);
      this.cloneWatch.unref();
    }
  }

  /** Number of open file handles (tests and the bench look at it). */
  get openHandles(): number {
    return this.handles.size;
  }

  private resolve(path: string): Target {
    const parts = path.split('/').filter((part) => part !== '');
    const source = join(this.root, ...parts);
    const [, folderName, name] = parts;
    if (parts.length === 3 && folderName !== undefined && name !== undefined) {
      const entry = virtualEntriesOf(folderName).get(name);
      if (entry !== undefined) return { kind: 'virtual', source, folder: join(this.root, ...parts.slice(0, 2)), entry };
    }
    return { kind: 'real', source };
  }

  /** The cached blocklist of `disk`'s current state, when a cache is configured and holds it. */
  private async blocklistOf(disk: ServedDisk): Promise<CachedBlocklist | undefined> {
    if (this.blocklistCache === undefined) return undefined;
    return readCachedBlocklist(this.blocklistCache, disk.anchor, disk.disk.image);
  }

  /** What a virtual path serves, or undefined (then the path is a real one, usually absent). */
  private async virtual(target: Target): Promise<Served | undefined> {
    if (target.kind !== 'virtual') return undefined;
    const disk = await this.disks.get(target.folder);
    if (disk === undefined) return undefined;
    const { entry } = target;
    switch (entry.kind) {
      case 'disk': {
        const layout = disk.layout(entry.format);
        return layout === undefined ? undefined : { kind: 'layout', disks: [disk], layout, mtimeMs: disk.mtimeMs, access: disk.access };
      }
      case 'blocklist': {
        // Beside a container only when that container is offered (no .vhd above 2040 GiB).
        if (![...disk.files().values()].includes(entry.format)) return undefined;
        const list = await this.blocklistOf(disk);
        // The list is derived from the disk's bytes: the same readers as the disk.
        return list === undefined ? undefined : { kind: 'file', list, access: disk.access };
      }
      case 'diff': {
        const diff = this.diffs.get(disk);
        return diff === undefined ? undefined : { kind: 'layout', disks: [diff.newer, diff.older], layout: diff.layout, mtimeMs: diff.mtimeMs, access: diff.access };
      }
    }
  }

  async getattr(path: string): Promise<FileStat> {
    this.activity.touch();
    const target = this.resolve(path);
    const found = await this.virtual(target);
    if (found !== undefined) {
      const size = found.kind === 'layout' ? found.layout.size : found.list.size;
      const mtimeMs = found.kind === 'layout' ? found.mtimeMs : found.list.mtimeMs;
      return {
        mode: S_IFREG | found.access.mode,
        uid: found.access.uid,
        gid: found.access.gid,
        size,
        nlink: 1,
        ino: virtualInode(path),
        blksize: 4096,
        // docs/architecture.md §8: reported as fully allocated; Windows refuses sparse-looking VHDs over SMB.
        blocks: Math.ceil(size / SECTOR),
        atime: mtimeMs,
        mtime: mtimeMs,
        ctime: mtimeMs,
      };
    }
    return this.realStat(await lstat(target.source));
  }

  private realStat(info: EntryStat): FileStat {
    const type = info.mode & S_IFMT;
    // The source's own permissions minus write: the kernel (default_permissions) then refuses
    // whoever the source tree refuses. A symlink is mirrored as a symlink (the kernel resolves
    // it on the client's side, with the client's rights); its mode means nothing.
    const permissions = type === S_IFLNK ? 0o777 : mirroredMode(info.mode);
    return {
      mode: type | permissions,
      uid: info.uid,
      gid: info.gid,
      size: info.size,
      nlink: info.nlink,
      ino: realInode(info.dev, info.ino, this.rootDev),
      blksize: info.blksize,
      blocks: info.blocks,
      atime: info.atimeMs,
      mtime: info.mtimeMs,
      ctime: info.ctimeMs,
    };
  }

  async readdir(path: string): Promise<string[]> {
    const { names } = await this.listing(path);
    return ['.', '..', ...names];
  }

  /**
   * The listing with what readdir reports besides each name: the inode number getattr gives
   * (d_ino) and the file type (d_type), so `ls -i`, `find` and Samba see the same numbers as
   * stat. Real entries are lstat'ed (in batches) and carry the attributes getattr gives them
   * (realStat of the same lstat), which the session hands the kernel with READDIRPLUS so that
   * `ls -l` of a folder needs no lookup per file; virtual ones (and real names a virtual entry
   * could claim) are regular files without attributes: their lookup composes what it needs.
   */
  async readdirEntries(path: string): Promise<DirEntryInfo[]> {
    const { source, names, virtual } = await this.listing(path);
    const entries: DirEntryInfo[] = [
      { name: '.', ino: NaN, mode: S_IFDIR },
      { name: '..', ino: NaN, mode: S_IFDIR },
    ];
    const prefix = path === '/' ? '/' : `${path}/`;
    for (let at = 0; at < names.length; at += READDIR_STAT_BATCH) {
      const batch = names.slice(at, at + READDIR_STAT_BATCH);
      const real = batch.filter((name) => !virtual.has(name));
      const stats = await lstatPaths(real.map((name) => join(source, name)));
      const infos = new Map(real.map((name, index) => [name, stats[index]] as const));
      entries.push(
        ...batch.map((name): DirEntryInfo => {
          if (virtual.has(name)) return { name, ino: virtualInode(`${prefix}${name}`), mode: S_IFREG };
          const info = infos.get(name);
          if (info === undefined) return { name, ino: NaN, mode: 0 }; // gone since the listing: unknown, as before
          const entry = { name, ino: realInode(info.dev, info.ino, this.rootDev), mode: info.mode & S_IFMT };
          return this.resolve(`${prefix}${name}`).kind === 'real' ? { ...entry, stat: this.realStat(info) } : entry;
        }),
      );
    }
    return entries;
  }

  private async listing(path: string): Promise<{ source: string; names: string[]; virtual: ReadonlySet<string> }> {
    this.activity.touch();
    const target = this.resolve(path);
    const names = await readdir(target.source);
    const virtual = new Set<string>();
    const parts = path.split('/').filter((part) => part !== '');
    if (parts.length === 2) {
      const disk = await this.disks.get(target.source);
      if (disk !== undefined) {
        const present = new Set(names);
        const files = [...disk.files().keys()];
        // Neither waits for a build: one stat in the cache, and a diff only once built in the background.
        const [list, diff] = await Promise.all([this.blocklistOf(disk), this.diffs.offered(disk)]);
        const extra = [...files, ...(list === undefined ? [] : files.map((name) => `${name}${BLOCKLIST_SUFFIX}`))];
        if (diff) extra.push(diffFileName(disk.anchor.letter, disk.anchor.timestamp));
        for (const name of extra) {
          virtual.add(name);
          if (!present.has(name)) names.push(name);
        }
      }
    }
    return { source: target.source, names, virtual };
  }

  /**
   * What `path` is served from once opened: a virtual disk's layout and its sources opened (the
   * session dup()s their fds; SourceFiles keeps its own), or a real file opened here. A disk whose
   * backup changed or vanished is not opened (EIO), as its reads would answer.
   */
  async open(path: string, flags: number): Promise<OpenAnswer> {
    this.activity.touch();
    if ((flags & O_ACCMODE) !== constants.O_RDONLY || (flags & (constants.O_TRUNC | constants.O_CREAT)) !== 0) {
      throw systemError('EROFS', `${path}: read-only file system`);
    }
    const target = this.resolve(path);
    const found = await this.virtual(target);
    if (found?.kind === 'layout') {
      const { disks } = found;
      for (const disk of disks) {
        if (disk.stale) throw new SynthvhdError('E_IO', `${path}: the backup changed or was deleted`, { path });
        this.disks.revalidate(disk);
      }
      const clone = await this.cloneCache?.backingFor(path, found.layout, disks);
      if (clone !== undefined) {
        return {
          file: { kind: 'fd', fd: clone },
          passthrough: true,
          onOpen: (fh) => {
            this.handles.set(fh, { kind: 'virtual', disks, cloned: path });
            this.cloneCache?.opened(path);
          },
        };
      }
      const layout = packLayout(found.layout);
      const files = await Promise.all(layout.paths.map((source) => this.sources.get(source)));
      return {
        file: { kind: 'layout', layout, fds: new Map(layout.paths.map((source, index) => [source, files[index]?.fd ?? -1])) },
        onOpen: (fh) => {
          this.handles.set(fh, { kind: 'virtual', disks });
        },
      };
    }
    // A cached blocklist lives outside the root by design; a mirrored file must be a regular
    // file that is still inside the root when it is opened (no folder swapped for a symlink
    // since the kernel looked it up, no FIFO to hang on).
    const file = found === undefined ? await openSourceFile(target.source, { root: this.root }) : await open(found.list.path, constants.O_RDONLY | constants.O_NOFOLLOW);
    return {
      file: { kind: 'fd', fd: file.fd },
      onOpen: (fh) => {
        this.handles.set(fh, { kind: 'real' });
      },
      dispose: () => file.close(),
    };
  }

  /**
   * Handle `fh` is being read (the session says so at most every few hundred ms): its backups
   * are re-checked in the background (ServedDisks.revalidate, at most once per revalidateMs).
   * True once one of them is stale: the handle must answer EIO from now on.
   */
  touched(fh: number): boolean {
    const handle = this.handles.get(fh);
    if (handle?.kind !== 'virtual') return false;
    for (const disk of handle.disks) this.disks.revalidate(disk);
    return handle.disks.some((disk) => disk.stale);
  }

  /**
   * Told which open handles turned stale the moment their disk does (set by the session's
   * handlers): they answer EIO from then on, reads and attributes alike.
   */
  onHandleStale: ((fh: number) => void) | undefined;

  private retired(disk: ServedDisk): void {
    this.cloneCache?.retire(disk);
    for (const [fh, handle] of this.handles) {
      if (handle.kind === 'virtual' && handle.disks.includes(disk)) this.onHandleStale?.(fh);
    }
  }

  /** The kernel closed handle `fh`. */
  release(fh: number): void {
    const handle = this.handles.get(fh);
    if (handle?.kind === 'virtual' && handle.cloned !== undefined) this.cloneCache?.released(handle.cloned);
    this.handles.delete(fh);
  }

  async readlink(path: string): Promise<string> {
    return readlink(this.resolve(path).source);
  }

  /** Existence check; write access is refused (the kernel asks before writes without default_permissions). */
  async access(path: string, mode: number): Promise<void> {
    if ((mode & constants.W_OK) !== 0) throw systemError('EROFS', `${path}: read-only file system`);
    await this.getattr(path);
  }

  /** The source file system's size; nothing free (nothing can be written). */
  async statfs(): Promise<FsStats> {
    const info = await statfs(this.root);
    const unit = info.bsize > 0 ? info.bsize : 4096;
    return {
      bsize: unit,
      frsize: unit,
      blocks: info.blocks,
      bfree: 0,
      bavail: 0,
      files: info.files,
      ffree: 0,
      favail: 0,
      fsid: 0,
      flag: 1, // ST_RDONLY
      namemax: 255,
    };
  }

  async close(): Promise<void> {
    // First: a list being hashed stops after its current chunk and is not written.
    await this.precomputer?.close();
    // Open handles keep reading from the session's own copies of the fds (and the kernel, from
    // the clones it holds).
    clearInterval(this.cloneWatch);
    this.handles.clear();
    await this.sources.close();
    await this.cloneCache?.close();
  }
}
