// SPDX-License-Identifier: MIT
/**
 * The virtual disks of a live backup root, composed lazily and cached.
 *
 * Nothing is scanned at mount time. The first lookup of a drive-letter backup folder (a readdir
 * of it, or a getattr of its `.disk.vhdx`) probes that folder: its own files and those of the
 * same client's backups within the grouping window (the only ones that can join its disk, see
 * urbackup/group-disks.ts). The probe's result is a source key: folder names, `.raw.sync`
 * presence, size and mtime of every `.raw` and `.raw.mbr`. The composed disk is cached in an
 * LRU under the folder path together with that key. A later lookup re-probes at most once per
 * `revalidateMs`; a different key (a backup completed, a companion appeared, a file changed or
 * vanished) composes the disk again and marks the old one stale, so handles still open on it
 * answer EIO instead of serving bytes of a layout that no longer matches its sources. A disk whose
 * volume is a differencing image also reads its parents, in other backup folders: their
 * identity, size, mtime, owner and mode are checked the same way (ServedDisk.chainKey).
 *
 * A folder whose disk cannot be composed shows no virtual file, and the reason is logged once
 * for each source state.
 */
import type { VhdChain } from '../extents/vhd-chain.js';
import { readdir } from 'node:fs/promises';
import { constants } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { composeDiskFor, virtualFileName, type ContainerFormat } from '../catalog/catalog.js';
import { containerLayout, offeredFiles } from '../catalog/virtual-files.js';
import { type ComposedDisk, withSettledIdentity } from '../disk/compose-disk.js';
import type { Layout } from '../extents/extent.js';
import type { SourceFiles } from '../extents/source-files.js';
import { errorNaming } from '../errors/naming.js';
import { isSynthvhdError } from '../errors/synthvhd-error.js';
import { BACKUP_FOLDER_PATTERN, isVolumeBackup, readBackupFolder, timestampMinutes, type VolumeBackup } from '../urbackup/backup-tree.js';
import { diskIdentityKey, RUN_WINDOW_MINUTES } from '../urbackup/group-disks.js';
import { BLOCKLIST_SUFFIX } from '../blocklist/blocklist.js';
import { type SourceObject, type VirtualAccess, virtualAccess } from './reader-access.js';
import { createLimiter } from '../util/limit.js';
import { testHold } from '../util/test-hold.js';
import { lstatPaths, type EntryStat } from '../native/native.js';

/** docs/urbackup-formats.md §1.1: `<YYMMDD-HHMM>_Image_<L>`; only drive letters get a virtual disk. */
const DRIVE_LETTER_FOLDER = /^(\d{6}-\d{4})_Image_([A-Za-z])$/;
const FORMATS: readonly ContainerFormat[] = ['vhdx', 'vhd'];

/** Timestamp and letter of a drive-letter backup folder name, or undefined. */
export function parseDriveLetterFolder(name: string): { timestamp: string; letter: string } | undefined {
  const match = DRIVE_LETTER_FOLDER.exec(name);
  if (match === null) return undefined;
  const [, timestamp = '', letter = ''] = match;
  return { timestamp, letter };
}

/** The differencing disk of a backup over the previous backup of its disk (./served-diffs.ts). */
export function diffFileName(letter: string, timestamp: string): string {
  return `Image_${letter}_${timestamp}.disk_diff.vhdx`;
}

/** What a name inside a drive-letter backup folder would be served as, if it is a virtual name. */
export type VirtualEntry =
  | { readonly kind: 'disk'; readonly format: ContainerFormat }
  | { readonly kind: 'blocklist'; readonly format: ContainerFormat }
  | { readonly kind: 'diff' };

/**
 * Every virtual name a drive-letter backup folder can hold: the whole disk per format, its
 * blocklist per format (`<disk name>.blocklist.bin`, see src/blocklist/cache.ts) and the
 * differencing disk over the previous backup. Whether each exists is decided on lookup.
 */
export function virtualEntriesOf(folderName: string): Map<string, VirtualEntry> {
  const entries = new Map<string, VirtualEntry>();
  const parsed = parseDriveLetterFolder(folderName);
  if (parsed === undefined) return entries;
  for (const [name, format] of virtualNamesOf(folderName)) {
    entries.set(name, { kind: 'disk', format });
    entries.set(`${name}${BLOCKLIST_SUFFIX}`, { kind: 'blocklist', format });
  }
  entries.set(diffFileName(parsed.letter, parsed.timestamp), { kind: 'diff' });
  return entries;
}

/** The virtual file names a drive-letter backup folder can hold, by format. */
export function virtualNamesOf(folderName: string): Map<string, ContainerFormat> {
  const names = new Map<string, ContainerFormat>();
  const parsed = parseDriveLetterFolder(folderName);
  if (parsed === undefined) return names;
  for (const format of FORMATS) names.set(`Image_${parsed.letter}_${parsed.timestamp}.disk.${format}`, format);
  return names;
}

interface Probe {
  readonly key: string;
  /** Set when the folder is a complete drive-letter RAW backup. */
  readonly anchor: VolumeBackup | undefined;
  readonly siblings: readonly VolumeBackup[];
  /** Owner of the anchor's `.raw`: the owner of the virtual files. */
  readonly uid: number;
  readonly gid: number;
  /** The root and client folders: every source is reached through them (./reader-access.ts). */
  readonly ancestors: readonly SourceObject[];
  /** By volume folder: its `.raw`, `.raw.mbr` and the folder itself. */
  readonly volumeObjects: ReadonlyMap<string, readonly SourceObject[]>;
}

/** The parent files of differencing VHD/VHDZ/VHDX(Z) backups on the disk (docs/urbackup-image-formats.md §3). */
function chainParents(disk: ComposedDisk): string[] {
  return disk.placed.flatMap(({ volume }) => (volume.image?.loaded.chain ?? []).slice(1).map((file) => file.path));
}

/**
 * A differencing image backup serves bytes of its parents, which live in other backup folders:
 * who may read the disk must be able to read them too (and the folders they are reached through).
 * Their state (`key`) also decides when the disk is stale: a parent replaced (another inode),
 * rewritten, truncated, re-owned or deleted gives another key ('' without parents). One stat each.
 */
async function chainState(disk: ComposedDisk): Promise<{ objects: SourceObject[]; key: string }> {
  const parents = chainParents(disk);
  if (parents.length === 0) return { objects: [], key: '' };
  const paths = [...new Set(parents.flatMap((path) => [path, dirname(path)]))];
  const stats = await lstatPaths(paths, true);
  const infos = new Map(paths.map((path, index) => [path, stats[index]] as const));
  const objects = stats.flatMap((info) => (info === undefined ? [] : [sourceObject(info)]));
  return { objects, key: chainKeyOf(parents.map((path) => infos.get(path))) };
}

function chainKeyOf(parents: readonly (EntryStat | undefined)[]): string {
  return parents.map((info) => (info === undefined ? '-' : `${info.dev}.${info.ino}:${fingerprint(info)}`)).join('|');
}

/** Size, mtime and who may read it: a change of any of them composes the disk again. */
function fingerprint(info: EntryStat | undefined): string {
  return info === undefined ? '-' : `${info.size}@${info.mtimeMs}:${info.uid}.${info.gid}.${info.mode.toString(8)}`;
}

function fileType(mode: number): 'symlink' | 'file' | 'dir' | 'other' {
  switch (mode & constants.S_IFMT) {
    case constants.S_IFLNK:
      return 'symlink';
    case constants.S_IFREG:
      return 'file';
    case constants.S_IFDIR:
      return 'dir';
    default:
      return 'other';
  }
}

/**
 * For each path, what a reader gets (`info`: stat, a symlink followed; undefined when it is gone)
 * and the directory entry itself (`identity`: its type and inode, not what a symlink leads to).
 * Both go into a disk's key: `stat` alone follows a symlink, so a source swapped for a symlink to
 * a file of the same size, owner, mode and times (and its folder's times put back) would keep the
 * key, and an open disk would go on serving bytes of sources that are no longer there (README
 * "Who may read what"). One lstat gives both unless the entry is a symlink, and all of a probe's
 * are one pool job (lstatPaths): on a walk of 10 000 disks every round trip counts.
 */
async function statsWithIdentity(paths: readonly string[]): Promise<{ info: EntryStat | undefined; identity: string }[]> {
  const entries = await lstatPaths(paths);
  const links = paths.filter((_, index) => entries[index] !== undefined && fileType(entries[index].mode) === 'symlink');
  const followed = new Map((await lstatPaths(links, true)).map((info, index) => [links[index], info] as const));
  return entries.map((entry, index) => {
    // No entry (or no way to it): stat, which resolves the same path, fails too.
    if (entry === undefined) return { info: undefined, identity: '-' };
    const type = fileType(entry.mode);
    return { info: type === 'symlink' ? followed.get(paths[index]) : entry, identity: `${type}#${entry.dev}.${entry.ino}` };
  });
}

function sourceObject(info: EntryStat): SourceObject {
  return { uid: info.uid, gid: info.gid, mode: info.mode, isDirectory: fileType(info.mode) === 'dir' };
}

async function probeFolder(folder: string): Promise<Probe> {
  const folderName = basename(folder);
  const clientDir = dirname(folder);
  const client = basename(clientDir);
  const none = (key: string): Probe => ({ key, anchor: undefined, siblings: [], uid: 0, gid: 0, ancestors: [], volumeObjects: new Map() });
  if (parseDriveLetterFolder(folderName) === undefined) return none('not a drive-letter backup');
  // Both listings at once: the client folder's is needed as soon as the folder is a backup.
  const [entry, names] = await Promise.all([
    readBackupFolder(client, folder, folderName),
    // The client folder vanished between the two reads: the probe below sees no sources.
    readdir(clientDir).catch((): string[] => []),
  ]);
  if (entry === undefined || !isVolumeBackup(entry)) return none(`not served: ${entry?.reason ?? ''}`);
  if (!entry.complete) return none('incomplete');
  const minutes = timestampMinutes(entry.timestamp);
  const candidates = names.filter((name) => {
    const match = BACKUP_FOLDER_PATTERN.exec(name);
    return name !== folderName && match !== null && Math.abs(timestampMinutes(match[1] ?? '') - minutes) <= RUN_WINDOW_MINUTES;
  });
  const found = await Promise.all(candidates.sort().map((name) => readBackupFolder(client, join(clientDir, name), name)));
  const siblings = found.filter((item): item is VolumeBackup => item !== undefined && isVolumeBackup(item));
  const volumes = [entry, ...siblings];
  // The folders every source is reached through: the root and the client folder (each volume
  // folder is among the volumes' three).
  const [all, ancestors] = await Promise.all([
    statsWithIdentity(volumes.flatMap((volume) => [volume.rawPath, volume.mbrPath, volume.folder])),
    lstatPaths([dirname(clientDir), clientDir], true),
  ]);
  const looked = volumes.map((_, index) => all.slice(3 * index, 3 * index + 3));
  const states = looked.map((three) => three.map(({ info }) => info));
  const identities = looked.map((three) => three.map(({ identity }) => identity).join(','));
  const parts = volumes.map((volume, index) => {
    const [raw, mbr, folderInfo] = states[index] ?? [undefined, undefined, undefined];
    return `${basename(volume.folder)}:${volume.complete ? 'sync' : 'nosync'}:${fingerprint(raw)}:${fingerprint(mbr)}:${fingerprint(folderInfo)}:${identities[index] ?? ''}`;
  });
  parts.push(...ancestors.map(fingerprint));
  const anchorRaw = states[0]?.[0];
  if (anchorRaw === undefined) return none('raw vanished');
  const objectsOf = (infos: readonly (EntryStat | undefined)[]): SourceObject[] => infos.flatMap((info) => (info === undefined ? [] : [sourceObject(info)]));
  const volumeObjects = new Map(volumes.map((volume, index) => [volume.folder, objectsOf(states[index] ?? [])]));
  return { key: parts.join('|'), anchor: entry, siblings: volumes, uid: anchorRaw.uid, gid: anchorRaw.gid, ancestors: objectsOf(ancestors), volumeObjects };
}

/** One composed disk, as served in its anchor's folder. */
export class ServedDisk {
  /** Set once its sources changed or vanished; open handles then answer EIO. */
  stale = false;
  /** When the sources were last compared with `key` (ms, performance clock). */
  checkedAt: number;
  private readonly layouts = new Map<ContainerFormat, Layout | undefined>();
  /** Who may read the disk's virtual files: everyone who could read all of `sources`. */
  readonly access: VirtualAccess;

  constructor(
    readonly folder: string,
    readonly key: string,
    readonly anchor: VolumeBackup,
    readonly disk: ComposedDisk,
    /** urbackup/group-disks.ts `diskIdentityKey` of the anchor: client, device, disk GUID/signature. */
    readonly identityKey: string,
    /** The files the disk serves bytes of and the folders on the way to them. */
    readonly sources: readonly SourceObject[],
    /** Owner of the anchor's `.raw`, who owns the virtual files. */
    owner: { readonly uid: number; readonly gid: number },
    /** chainState(disk).key when composed. */
    readonly chainKey: string,
    checkedAt: number,
    private readonly onLayoutError: (format: ContainerFormat, error: unknown) => void,
  ) {
    this.checkedAt = checkedAt;
    this.access = virtualAccess(sources, owner.uid, owner.gid);
  }

  get mtimeMs(): number {
    return this.disk.image.mtimeMs;
  }

  /** The virtual files offered for this disk: name → format. */
  files(): Map<string, ContainerFormat> {
    const files = new Map<string, ContainerFormat>();
    for (const { format, unavailable } of offeredFiles(this.disk.image)) {
      if (unavailable === undefined) files.set(virtualFileName(this.anchor, format), format);
    }
    return files;
  }

  /** The container layout for `format`, built on first use; undefined when it is not offered. */
  layout(format: ContainerFormat): Layout | undefined {
    if (this.layouts.has(format)) return this.layouts.get(format);
    let layout: Layout | undefined;
    const offered = offeredFiles(this.disk.image).find((file) => file.format === format);
    if (offered !== undefined && offered.unavailable === undefined) {
      try {
        layout = containerLayout(this.disk.image, format);
      } catch (error) {
        this.onLayoutError(format, error);
      }
    }
    this.layouts.set(format, layout);
    return layout;
  }

  /**
   * What this disk holds in memory: its layout, the loaded volumes' table and boot sector bytes,
   * and its container layouts (built ones measured, the others estimated: a VHDX's BAT is 8
   * bytes per 32 MiB block and per sector bitmap, its headers and metadata a few KiB).
   */
  memoryBytes(): number {
    const built: Layout[] = [this.disk.image.layout];
    let bytes = 0;
    for (const { volume } of this.disk.placed) bytes += (volume.mbrBytes?.length ?? 0) + volume.bootSector.buffer.byteLength + volume.dataRanges.length * 48;
    for (const format of this.files().values()) {
      const layout = this.layouts.get(format);
      if (layout !== undefined) built.push(layout);
      else bytes += format === 'vhdx' ? 16 * Math.ceil(this.disk.image.layout.size / (32 * 1024 * 1024)) + 64 * 1024 : 4096;
    }
    return bytes + layoutMemoryBytes(...built);
  }

  /** Every source file the disk reads. */
  sourcePaths(): string[] {
    return [...this.disk.placed.map(({ volume }) => volume.backup.rawPath), ...chainParents(this.disk)];
  }

  /** Whether the parents of its image chains are as they were when it was composed. */
  async chainUnchanged(): Promise<boolean> {
    const parents = chainParents(this.disk);
    return parents.length === 0 || chainKeyOf(await lstatPaths(parents, true)) === this.chainKey;
  }
}

interface Entry {
  readonly key: string;
  checkedAt: number;
  readonly result: Promise<ServedDisk | undefined>;
  /** What the entry holds in memory (ServedDisk.memoryBytes once composed). */
  bytes: number;
  /** Composed in the background (see ServedDisks.get): lookups do not wait for `result`. */
  readonly background: boolean;
  /** `result` has settled (shared by the copies lru-cache re-sizing makes). */
  readonly settled: { done: boolean };
}

/**
 * Whether composing the disk of a probed folder may read a volume: a `.vhd`/`.vhdz`/`.vhdx(z)`
 * backup's sector bitmaps sit beside its data (inside the compressed blocks of a .vhdz), so
 * building its layout reads (and decodes) most of the image: minutes for a large one.
 */
function composeReadsVolumes(probe: Probe): boolean {
  return probe.siblings.some((volume) => volume.format !== undefined && volume.format !== 'raw');
}

export interface GetOptions {
  /**
   * Wait for a disk composed in the background (a diff's parent search, tools). Lookups do not:
   * a stat never waits for reading a volume, the disk's files appear once it is composed.
   */
  readonly wait?: boolean;
}

/** False when the entry's disk reads image parents that changed since it was composed. */
async function chainUnchanged(result: Promise<ServedDisk | undefined>): Promise<boolean> {
  const disk = await result;
  return disk === undefined || (await disk.chainUnchanged());
}

/** Bytes a cache entry costs before it is known (a probe, a pending build). */
export const PENDING_ENTRY_BYTES = 4096;
/** Default bound of the composed-disk cache. */
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
/**
 * Default bound of the diff cache: a diff counts its BAT and bitmaps and both of its disks (whose
 * layouts the disk cache may hold too), so half the disks' bound holds as many (bench catalog:
 * with 64 MiB the daemon reached 312 MB while diffs were planned after a walk of 10 000 disks).
 */
export const DEFAULT_DIFF_CACHE_BYTES = 32 * 1024 * 1024;

/**
 * Memory layouts hold: ~100 bytes per extent object and their generated bytes, each buffer once
 * (a disk's GPT tables are the same buffers in the disk and in both containers), and for a VHD
 * chain its files' BATs and container indexes (8 bytes per index entry), each chain once.
 */
export function layoutMemoryBytes(...layouts: readonly Layout[]): number {
  let bytes = 0;
  const counted = new Set<ArrayBufferLike>();
  const chains = new Set<VhdChain>();
  for (const layout of layouts) {
    bytes += layout.extents.length * 100;
    for (const extent of layout.extents) {
      if (extent.kind === 'chain' && !chains.has(extent.chain)) {
        chains.add(extent.chain);
        for (const level of extent.chain.levels) bytes += level.bat.byteLength + (level.compressed?.offsets.length ?? 0) * 8;
      }
      if (extent.kind !== 'bytes' || counted.has(extent.data.buffer)) continue;
      counted.add(extent.data.buffer);
      bytes += extent.data.buffer.byteLength;
    }
  }
  return bytes;
}

export interface ServedDisksOptions {
  /** Bytes of composed disks kept cached (LRU by memory: a 64 TiB disk's BAT is 16 MiB, a 100 GiB disk's 25 KiB); default 64 MiB. */
  readonly maxBytes?: number;
  /** How long a probe result is trusted before the sources are looked at again. */
  readonly revalidateMs?: number;
  /**
   * Called once for every disk composed (a folder looked up for the first time, or again after
   * its sources changed): the mount queues its blocklist there. Must not throw or block.
   */
  readonly onComposed?: (disk: ServedDisk) => void;
  /**
   * Called once when a disk turns stale (its backups changed or vanished): the mount invalidates
   * the handles still open on it then, not at their next read, since the addon answers an open
   * file's getattr itself. Must not throw or block.
   */
  readonly onRetired?: (disk: ServedDisk) => void;
}

export class ServedDisks {
  private readonly entries: LRUCache<string, Entry>;
  private readonly probes = new Map<string, Promise<Probe>>();
  /** Image backups composed in the background, at most two at a time (see compose). */
  private readonly backgroundSlots = createLimiter(2);
  private readonly logged = new Set<string>();
  readonly revalidateMs: number;
  private readonly onComposed: ((disk: ServedDisk) => void) | undefined;
  private readonly onRetired: ((disk: ServedDisk) => void) | undefined;

  constructor(
    private readonly sources: SourceFiles,
    private readonly log: (line: string) => void,
    options: ServedDisksOptions = {},
  ) {
    const maxBytes = options.maxBytes ?? DEFAULT_CACHE_BYTES;
    // A disk larger than the whole cache (a deep chain of 1 TiB images: 12 MB of BATs and
    // indexes per file) counts as all of it: kept alone while it is the latest used, rather
    // than refused by the LRU and composed again on every lookup.
    this.entries = new LRUCache<string, Entry>({ maxSize: maxBytes, sizeCalculation: (entry) => Math.min(maxBytes, Math.max(1, entry.bytes)) });
    this.revalidateMs = options.revalidateMs ?? 1000;
    this.onComposed = options.onComposed;
    this.onRetired = options.onRetired;
  }

  /**
   * The disk served in backup folder `folder` (a path in the source tree), or undefined. A disk
   * of image backups is composed in the background (composeReadsVolumes): until it is, this
   * answers undefined at once unless `options.wait`.
   */
  async get(folder: string, options: GetOptions = {}): Promise<ServedDisk | undefined> {
    const answer = (entry: Entry): Promise<ServedDisk | undefined> =>
      entry.background && !entry.settled.done && options.wait !== true ? Promise.resolve(undefined) : entry.result;
    const cached = this.entries.get(folder);
    if (cached !== undefined && performance.now() - cached.checkedAt < this.revalidateMs) return answer(cached);
    const probe = await this.probe(folder);
    const now = performance.now();
    const current = this.entries.get(folder);
    if (current?.key === probe.key && (!current.settled.done || (await chainUnchanged(current.result)))) {
      current.checkedAt = now;
      return answer(current);
    }
    if (current !== undefined) void current.result.then((disk) => { this.retire(disk); });
    const background = composeReadsVolumes(probe);
    const result = probe.anchor === undefined ? Promise.resolve(undefined) : this.compose(folder, probe, now, background);
    const settled = { done: false };
    const entry: Entry = { key: probe.key, checkedAt: now, result, bytes: PENDING_ENTRY_BYTES, background, settled };
    this.entries.set(folder, entry);
    // Sized again once composed: a new entry object, since lru-cache keeps the size of a value set again.
    void result.then((disk) => {
      settled.done = true;
      const current = this.entries.peek(folder);
      if (disk === undefined || current?.result !== result) return;
      this.entries.set(folder, { ...current, bytes: disk.memoryBytes() });
    });
    return answer(entry);
  }

  /**
   * Compares `disk`'s sources with its key at most once per `revalidateMs`, in the background;
   * marks it stale when they differ. Called on every read of an open handle: costs a clock read.
   */
  revalidate(disk: ServedDisk): void {
    const now = performance.now();
    if (disk.stale || now - disk.checkedAt < this.revalidateMs) return;
    disk.checkedAt = now;
    this.probe(disk.folder).then(
      async (probe) => {
        if (probe.key !== disk.key || !(await disk.chainUnchanged())) this.retire(disk);
      },
      () => undefined,
    );
  }

  private probe(folder: string): Promise<Probe> {
    let pending = this.probes.get(folder);
    if (pending === undefined) {
      pending = probeFolder(folder).finally(() => this.probes.delete(folder));
      this.probes.set(folder, pending);
    }
    return pending;
  }

  private retire(disk: ServedDisk | undefined): void {
    if (disk === undefined || disk.stale) return;
    disk.stale = true;
    for (const path of disk.sourcePaths()) this.sources.forget(path);
    this.onRetired?.(disk);
  }

  private async compose(folder: string, probe: Probe, now: number, background: boolean): Promise<ServedDisk | undefined> {
    const anchor = probe.anchor;
    if (anchor === undefined) return undefined;
    const started = performance.now();
    if (background) this.logOnce(probe.key, `${folder}: composing its disk in the background (an image backup's headers and BATs are read first); its .disk files appear when it is ready`);
    try {
      if (background) await testHold('SYNTHVHD_TEST_HOLD_BACKGROUND');
      // At most two at once (one per core here): each opens its chain file after file, decoding
      // a .vhdz's header and last blocks; a listing of a client with 30 incrementals starts 31
      // of them, which all at once held 1 GB of decoded blocks waiting for the collector.
      const composed = background ? await this.backgroundSlots(() => composeDiskFor(anchor, probe.siblings)) : await composeDiskFor(anchor, probe.siblings);
      const disk = withSettledIdentity(composed.disk);
      const loaded = composed.loaded;
      if (background) this.logOnce(probe.key, `${folder}: disk ready after ${((performance.now() - started) / 1000).toFixed(1)} s`);
      for (const unplaced of disk.unplaced) this.logOnce(probe.key, `${unplaced.reason} (left out of the disk served in ${folder})`);
      // What `ls` and `doctor` show as the disk's notes (a companion from another backup run, …).
      for (const note of disk.notes) this.logOnce(probe.key, `${folder}: note: ${note}`);
      // Only the volumes placed on the disk give it bytes; companions left out do not count.
      const chain = await chainState(disk);
      const sources = [...probe.ancestors, ...disk.placed.flatMap(({ volume }) => probe.volumeObjects.get(volume.backup.folder) ?? []), ...chain.objects];
      const served = new ServedDisk(folder, probe.key, anchor, disk, diskIdentityKey(loaded), sources, probe, chain.key, now, (format, error) => {
        this.logOnce(probe.key, `${folder}: no .${format}: ${describe(error)}`);
      });
      this.onComposed?.(served);
      return served;
    } catch (error) {
      // Siblings that fail to load are left out, so what failed is the anchor's image (or a
      // file the error names): the line names it even when the parser did not know it.
      this.logOnce(probe.key, `${folder}: no virtual disk: ${describe(isSynthvhdError(error) ? errorNaming(error, anchor.rawPath) : error)}`);
      return undefined;
    }
  }

  /** Logs `message` once per source state `key` (a later change of the sources may log it again). */
  logOnce(key: string, message: string): void {
    const id = `${key}\0${message}`;
    if (this.logged.has(id)) return;
    if (this.logged.size > 10_000) this.logged.clear();
    this.logged.add(id);
    this.log(message);
  }
}

export function describe(error: unknown): string {
  if (isSynthvhdError(error)) return error.message;
  return `internal error (please report): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`.replace(/\n\s*/g, ' | ');
}
