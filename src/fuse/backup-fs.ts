// SPDX-License-Identifier: MIT
/**
 * The read-only file system a mount serves, independent of fuse-native: the backup root
 * mirrored (real files and directories passed through, read-only) plus, in each drive-letter
 * volume backup folder, the whole-disk `Image_<L>_<ts>.disk.vhdx` / `.disk.vhd`.
 *
 * Every method is async and only ever awaits asynchronous fs calls on the SOURCE tree: the
 * handlers run on the Node main thread, which libfuse's worker threads are waiting on, so a
 * synchronous call (or any call touching the mount itself) would stall or deadlock the mount.
 *
 * Errors are thrown (SynthvhdError or Node system errors); operations.ts turns them into errno.
 */
import { constants, type Stats } from 'node:fs';
import { lstat, open, readdir, readlink, statfs, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerFormat } from '../catalog/catalog.js';
import type { Layout } from '../extents/extent.js';
import { SourceFiles } from '../extents/source-files.js';
import { SynthvhdError } from '../errors/synthvhd-error.js';
import { systemError } from './errno.js';
import { realInode, virtualInode } from './inode.js';
import { readAt } from '../extents/read-at.js';
import { ServedDisks, type ServedDisk, type ServedDisksOptions, virtualNamesOf } from './served-disks.js';

const S_IFMT = constants.S_IFMT;
const S_IFDIR = constants.S_IFDIR;
const S_IFREG = constants.S_IFREG;
const S_IFLNK = constants.S_IFLNK;
/** DESIGN.md "Virtual names": files 0444, directories 0555 (symlinks carry no mode of their own). */
const FILE_MODE = 0o444;
const DIR_MODE = 0o555;
const SECTOR = 512;
/** open(2) access-mode mask (fcntl.h); Node's fs.constants lacks it. */
const O_ACCMODE = 3;

/** What getattr answers; times in ms since the epoch (fuse-native's format). */
export interface FileStat {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly nlink: number;
  readonly ino: number;
  readonly blksize: number;
  readonly blocks: number;
  readonly atime: number;
  readonly mtime: number;
  readonly ctime: number;
}

export interface FsStats {
  readonly bsize: number;
  readonly frsize: number;
  readonly blocks: number;
  readonly bfree: number;
  readonly bavail: number;
  readonly files: number;
  readonly ffree: number;
  readonly favail: number;
  readonly fsid: number;
  readonly flag: number;
  readonly namemax: number;
}

type Target =
  | { readonly kind: 'real'; readonly source: string }
  | { readonly kind: 'virtual'; readonly source: string; readonly folder: string; readonly format: ContainerFormat };

type Handle =
  | { readonly kind: 'real'; readonly file: FileHandle }
  | { readonly kind: 'virtual'; readonly disk: ServedDisk; readonly layout: Layout };

export interface BackupFsOptions extends ServedDisksOptions {
  /** Where "not served" reasons go (one line each). */
  readonly log: (line: string) => void;
  /** Source `.raw` files kept open (LRU). */
  readonly maxOpenSources?: number;
}

export class BackupFs {
  readonly sources: SourceFiles;
  readonly disks: ServedDisks;
  private readonly handles = new Map<number, Handle>();
  private nextHandle = 1;

  /** `root`: absolute, resolved path of the backup root; `rootDev`: its st_dev. */
  constructor(
    readonly root: string,
    private readonly rootDev: number,
    options: BackupFsOptions,
  ) {
    this.sources = new SourceFiles(options.maxOpenSources ?? 256);
    this.disks = new ServedDisks(this.sources, options.log, options);
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
      const format = virtualNamesOf(folderName).get(name);
      if (format !== undefined) return { kind: 'virtual', source, folder: join(this.root, ...parts.slice(0, 2)), format };
    }
    return { kind: 'real', source };
  }

  /** The served disk and layout behind a virtual path, or undefined (then the path is a real one). */
  private async virtual(target: Target): Promise<{ disk: ServedDisk; layout: Layout } | undefined> {
    if (target.kind !== 'virtual') return undefined;
    const disk = await this.disks.get(target.folder);
    const layout = disk?.layout(target.format);
    return disk === undefined || layout === undefined ? undefined : { disk, layout };
  }

  async getattr(path: string): Promise<FileStat> {
    const target = this.resolve(path);
    const found = await this.virtual(target);
    if (found !== undefined) {
      const { disk, layout } = found;
      return {
        mode: S_IFREG | FILE_MODE,
        uid: disk.uid,
        gid: disk.gid,
        size: layout.size,
        nlink: 1,
        ino: virtualInode(path),
        blksize: 4096,
        // DESIGN.md: reported as fully allocated; Windows refuses sparse-looking VHDs over SMB.
        blocks: Math.ceil(layout.size / SECTOR),
        atime: disk.mtimeMs,
        mtime: disk.mtimeMs,
        ctime: disk.mtimeMs,
      };
    }
    return this.realStat(await lstat(target.source));
  }

  private realStat(info: Stats): FileStat {
    const type = info.mode & S_IFMT;
    const permissions = type === S_IFDIR ? DIR_MODE : type === S_IFLNK ? 0o777 : FILE_MODE;
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
    const target = this.resolve(path);
    const names = await readdir(target.source);
    const parts = path.split('/').filter((part) => part !== '');
    if (parts.length === 2) {
      const disk = await this.disks.get(target.source);
      if (disk !== undefined) {
        const present = new Set(names);
        for (const name of disk.files().keys()) if (!present.has(name)) names.push(name);
      }
    }
    return ['.', '..', ...names];
  }

  async open(path: string, flags: number): Promise<number> {
    if ((flags & O_ACCMODE) !== constants.O_RDONLY || (flags & (constants.O_TRUNC | constants.O_CREAT)) !== 0) {
      throw systemError('EROFS', `${path}: read-only file system`);
    }
    const target = this.resolve(path);
    const found = await this.virtual(target);
    const handle: Handle =
      found !== undefined
        ? { kind: 'virtual', disk: found.disk, layout: found.layout }
        : { kind: 'real', file: await open(target.source, constants.O_RDONLY | constants.O_NOFOLLOW) };
    return this.register(handle);
  }

  private register(handle: Handle): number {
    // fuse-native hands file handles over as uint32.
    while (this.handles.has(this.nextHandle) || this.nextHandle === 0) this.nextHandle = (this.nextHandle + 1) % 2 ** 32;
    const id = this.nextHandle;
    this.nextHandle = (this.nextHandle + 1) % 2 ** 32;
    this.handles.set(id, handle);
    return id;
  }

  /** Reads into `into` (libfuse's buffer): the promise settles only once nothing writes to it. */
  async read(path: string, fh: number, into: Uint8Array, length: number, position: number): Promise<number> {
    const handle = this.handles.get(fh);
    if (handle === undefined) throw systemError('EBADF', `${path}: bad file handle ${fh}`);
    if (handle.kind === 'real') {
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.file.read(into, done, length - done, position + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done;
    }
    const { disk, layout } = handle;
    if (disk.stale) throw new SynthvhdError('E_IO', `${path}: the backup changed or was deleted while open`, { path });
    this.disks.revalidate(disk);
    return readAt(layout, this.sources, position, into, length);
  }

  async release(fh: number): Promise<void> {
    const handle = this.handles.get(fh);
    this.handles.delete(fh);
    if (handle?.kind === 'real') await handle.file.close();
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
    // fuse-native truncates every field to 32 bits: grow the unit until the block count fits.
    let unit = info.bsize > 0 ? info.bsize : 4096;
    let blocks = Math.floor((info.blocks * info.bsize) / unit);
    while (blocks >= 2 ** 32) {
      unit *= 2;
      blocks = Math.floor((info.blocks * info.bsize) / unit);
    }
    return {
      bsize: unit,
      frsize: unit,
      blocks,
      bfree: 0,
      bavail: 0,
      files: Math.min(info.files, 2 ** 32 - 1),
      ffree: 0,
      favail: 0,
      fsid: 0,
      flag: 1, // ST_RDONLY
      namemax: 255,
    };
  }

  async close(): Promise<void> {
    const files = [...this.handles.values()].flatMap((handle) => (handle.kind === 'real' ? [handle.file] : []));
    this.handles.clear();
    await Promise.allSettled(files.map((file) => file.close()));
    await this.sources.close();
  }
}
