// SPDX-License-Identifier: MIT
/**
 * Opens one urBackup image backup file (`Image_<L>_<ts>.vhd|.vhdz|.vhdx|.vhdxz`) with its
 * parent chain, as urBackup's own reader would, and returns the image's disk (synthetic MBR +
 * volume) and the volume as extents (./image-extent.ts): `file` extents where a plain file
 * holds the bytes, `compressed` extents where a compressed one does, `zero` where nothing does.
 * Chains are resolved here, once, down to the files that hold each byte.
 * docs/urbackup-image-formats.md tells the formats; the rules are cited where applied.
 */
import type { FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { SynthvhdError, fileError, isSynthvhdError } from '../../errors/synthvhd-error.js';
import { containerDiskLayout } from '../../container/disk-layout.js';
import { bitRuns } from '../../util/bit-runs.js';
import { guidEquals, guidFromString, guidToString, isZeroGuid } from '../../container/guid.js';
import { type ParsedVhdx, parseContainer } from '../../container/inspect.js';
import { readVhdxHeaders } from '../../container/parse-vhdx.js';
import { ContainerReader } from '../../container/parsed-container.js';
import { VHDX_FILE_ID_SIZE } from '../../container/vhdx/constants.js';
import type { Layout } from '../../extents/extent.js';
import { LayoutBuilder } from '../../extents/layout-builder.js';
import { type Range, RangeSet } from '../../util/range-set.js';
import { CHAIN_BAT_UNUSED, type VhdChain, type VhdChainLevel, bitmapOffsetOf, vhdChainDiskLayout } from '../../extents/vhd-chain.js';
import { LRUCache } from 'lru-cache';
import type { VhdFooter } from '../../container/vhd.js';
import type { CompressedIndex } from '../../extents/compressed-index.js';
import { indexOf, mapLogicalRange } from './compressed-file.js';
import { type FileId, ImageFile, type SourceOpener } from './image-file.js';
import { type ImageLayout, ImageLayoutBuilder, sliceImageLayout } from './image-extent.js';
import { type UrbackupVhd, parseUrbackupVhd, readUrbackupVhdFooter, urbackupVhdParentCandidates } from './urbackup-vhd.js';

/** A file of the chain, child first. */
export interface ChainFile {
  readonly path: string;
  readonly format: 'vhd' | 'vhdx';
  readonly compressed: boolean;
  readonly fileSize: number;
  readonly mtimeMs: number;
}

/**
 * One opened file of a chain, as kept after the chain is resolved: what backup-run diffs need
 * (its own ranges, its disk size), not its layout (only the top image's resolved disk is kept).
 */
export interface ChainLevel {
  readonly path: string;
  readonly format: 'vhd' | 'vhdx';
  readonly compressed: boolean;
  readonly type: 'dynamic' | 'differencing';
  /** The size of the disk this file stores. */
  readonly size: number;
  /**
   * Disk ranges this file itself holds (its BAT and sector bitmaps): what this backup run wrote.
   * A VHD's are read on first call (its sector bitmaps: a .vhdz decodes the blocks holding them).
   */
  readonly ownRanges: () => Promise<readonly Range[]>;
  /** What a child links to: the VHD footer Unique Id ('rfc'), the VHDX DataWriteGuid ('ms'). */
  readonly identity: Uint8Array;
  /** VHD footer Time Stamp (0 for VHDX). */
  readonly timeStamp: number;
  /** The parent of a differencing image. */
  readonly parent: ChainLevel | undefined;
}

export interface OpenedImageDisk extends ChainLevel {
  /** The disk urBackup stored (synthetic MBR in sector 0, the volume from its partition). */
  readonly disk: ImageLayout;
  readonly chain: readonly ChainFile[];
  /** Things urBackup only warns about (a parent timestamp that changed). */
  readonly warnings: readonly string[];
}

interface OpenContext {
  readonly opener: SourceOpener;
  /** Files of the chain so far by (device, inode), with the path each was reached by. */
  readonly seen: Map<string, string>;
}

/**
 * A chain longer than this is refused as a broken tree (docs/urbackup-image-formats.md §3):
 * urBackup's own chains are one full backup and its incrementals, far shorter.
 */
export const MAX_CHAIN_DEPTH = 1024;
/** Stands for "the parent's disk" in a child's layout before the parent's extents replace it. */
const PARENT = '\u0000parent';

/** What a child says its parent must be, checked on the parent's first bytes. */
type ParentLink =
  | { readonly format: 'vhd'; readonly child: string; readonly uniqueId: Uint8Array; readonly timeStamp: number }
  | { readonly format: 'vhdx'; readonly child: string; readonly linkage: Uint8Array; readonly linkageText: string };

/** The next file to open: its path, its open handle, and what its child requires of it. */
interface NextLevel {
  readonly path: string;
  readonly handle: FileHandle | undefined;
  readonly link: ParentLink | undefined;
}

/** One file opened: its own extents (PARENT extents at disk offsets stand for the parent). */
interface OpenedLevel {
  readonly self: ChainFile;
  readonly type: 'dynamic' | 'differencing';
  readonly size: number;
  /** A VHDX's own extents (PARENT for the parent); a VHD's are its chain level. */
  readonly own: Layout | VhdOwn;
  readonly ownRanges: () => Promise<readonly Range[]>;
  readonly identity: Uint8Array;
  readonly timeStamp: number;
  readonly warnings: readonly string[];
  readonly next: NextLevel | undefined;
}

/**
 * Opens `path` (and its parents) as the disk urBackup stored; see the file comment. The sector
 * bitmaps of a .vhdz live inside its compressed blocks, so building the layout of a full image
 * decodes most of the file: that runs on the libuv pool (the native record codec,
 * src/extents/compressed-record.ts), so a mount's thread keeps answering while a large backup is
 * opened.
 *
 * The chain is walked iteratively, child first, one file open at a time: each file is
 * recognised by (device, inode) before anything of it is read (a loop through `..`, a symlinked
 * folder or a hard link ends there), its parent's Unique Id / DataWriteGuid is checked on the
 * parent's footer or headers before the parent's BAT or bitmaps are read, and each file is
 * closed before its parent is opened. Then the layouts are resolved from the base up.
 */
export async function openImageDisk(path: string, opener: SourceOpener): Promise<OpenedImageDisk> {
  const context: OpenContext = { opener, seen: new Map() };
  const levels: OpenedLevel[] = [];
  let next: NextLevel | undefined = { path: resolve(path), handle: undefined, link: undefined };
  try {
    while (next !== undefined) {
      if (levels.length >= MAX_CHAIN_DEPTH) {
        const child = next.link?.child ?? next.path;
        throw fileError('E_CONTAINER', child, `the differencing chain is deeper than ${MAX_CHAIN_DEPTH} files (its parent ${next.path} would be file ${MAX_CHAIN_DEPTH + 1})`);
      }
      const current: NextLevel = next;
      next = undefined;
      const level = await openLevel(current, context);
      levels.push(level);
      next = level.next;
    }
  } finally {
    if (next?.handle !== undefined) await next.handle.close();
  }
  return resolveChain(levels);
}

/** Resolves the levels (child first) from the base up; only the top's disk is kept. */
function resolveChain(levels: readonly OpenedLevel[]): OpenedImageDisk {
  const vhdLevels = levels.map((level) => ('level' in level.own ? level.own : undefined));
  if (vhdLevels.every((level) => level !== undefined)) return resolveVhdChain(levels, vhdLevels);
  return resolveVhdxChain(levels);
}

/**
 * A VHD chain's disk from its BATs alone (src/extents/vhd-chain.ts): the sector bitmaps are
 * looked up when a block is read, as urBackup's VHDFile::Read does.
 */
function resolveVhdChain(levels: readonly OpenedLevel[], own: readonly VhdOwn[]): OpenedImageDisk {
  const top = own[0];
  if (top === undefined) throw new SynthvhdError('E_INTERNAL', 'internal error (please report): an empty chain');
  for (const level of own) {
    if (level.blockSize !== top.blockSize) {
      throw fileError('E_CONTAINER', level.level.path, `VHD Block Size ${level.blockSize} differs from the ${top.blockSize} of ${top.level.path} in the same chain (urBackup writes one block size)`);
    }
  }
  const chain: VhdChain = { levels: own.map((level) => level.level), size: top.level.size, blockSize: top.blockSize };
  const disk = vhdChainDiskLayout(chain, levels.length === 1 ? 'VHD blocks' : `VHD blocks of a chain of ${levels.length} files`);
  let parent: ChainLevel | undefined;
  let result: OpenedImageDisk | undefined;
  for (let index = levels.length - 1; index >= 0; index--) {
    const level = levels[index];
    if (level === undefined) continue;
    const { path, format, compressed } = level.self;
    const kept: ChainLevel = { path, format, compressed, type: level.type, size: level.size, ownRanges: level.ownRanges, identity: level.identity, timeStamp: level.timeStamp, parent };
    parent = kept;
    if (index === 0) {
      result = { ...kept, disk, chain: levels.map((each) => each.self), warnings: levels.flatMap((each) => each.warnings) };
    }
  }
  if (result === undefined) throw new SynthvhdError('E_INTERNAL', 'internal error (please report): an empty chain');
  return result;
}

/** A VHDX chain: each file's own extents over its parent's disk, from the base up. */
function resolveVhdxChain(levels: readonly OpenedLevel[]): OpenedImageDisk {
  let parentDisk: ImageLayout | undefined;
  let parent: ChainLevel | undefined;
  let chain: ChainFile[] = [];
  let warnings: string[] = [];
  let top: OpenedImageDisk | undefined;
  for (let index = levels.length - 1; index >= 0; index--) {
    const level = levels[index];
    if (level === undefined) continue;
    if ('level' in level.own) throw new SynthvhdError('E_CONTAINER', `${level.self.path}: a VHD in a chain of VHDX files`);
    const builder = new ImageLayoutBuilder();
    for (const extent of level.own.extents) {
      if (extent.kind === 'file' && extent.path === PARENT) {
        if (parentDisk === undefined) throw new SynthvhdError('E_INTERNAL', 'internal error (please report): parent extent without a parent');
        const inside = Math.max(0, Math.min(extent.length, parentDisk.size - extent.offset));
        for (const piece of sliceImageLayout(parentDisk, extent.offset, inside, 0)) builder.append(piece);
        builder.zero(extent.length - inside, 'zeros: past the end of the parent image');
        continue;
      }
      builder.append(extent);
    }
    const disk = builder.build(level.size);
    chain = [level.self, ...chain];
    warnings = [...level.warnings, ...warnings];
    const { path, format, compressed } = level.self;
    const kept: ChainLevel = { path, format, compressed, type: level.type, size: level.size, ownRanges: level.ownRanges, identity: level.identity, timeStamp: level.timeStamp, parent };
    top = { ...kept, disk, chain, warnings };
    parentDisk = disk;
    parent = kept;
  }
  if (top === undefined) throw new SynthvhdError('E_INTERNAL', 'internal error (please report): an empty chain');
  return top;
}

function withPath(error: unknown, path: string): unknown {
  if (isSynthvhdError(error) && error.path === undefined) return fileError(error.code, path, error.message, error);
  return error;
}

function fileIdKey(id: FileId): string {
  return `${id.dev.toString()}:${id.ino.toString()}`;
}

/**
 * What parsing a VHD of a chain found (footer, headers, BAT, container index), kept by the file's
 * identity and version (device, inode, size, mtime) for the next chain that holds the same file:
 * the backups of one client share their parents, and a listing of a client with 30 incrementals
 * composes 31 chains of up to 31 files (some 500 file opens, each decoding a .vhdz's first and
 * last 2 MiB blocks; 28 s in the mount) where 31 parses are enough. Bounded by bytes (BATs and
 * indexes, which the composed disks share anyway).
 */
interface ParsedVhdLevel {
  readonly vhd: UrbackupVhd;
  readonly compressed: CompressedIndex | undefined;
}

const parsedVhdLevels = new LRUCache<string, ParsedVhdLevel>({
  maxSize: 32 * 1024 * 1024,
  sizeCalculation: ({ vhd, compressed }) => 4096 + vhd.bat.byteLength + 8 * (compressed?.offsets.length ?? 0),
});

/** Opens one file of the chain: checks who it is, reads its structures, finds its parent. */
async function openLevel(at: NextLevel, context: OpenContext): Promise<OpenedLevel> {
  const { path, link } = at;
  const handle = at.handle ?? (await context.opener(path, 'urBackup image'));
  let version: string;
  let info: { size: number; mtimeMs: number };
  try {
    const stat = await handle.stat({ bigint: true });
    const key = fileIdKey(stat);
    const first = context.seen.get(key);
    if (first !== undefined) {
      const via = link === undefined ? '' : `: ${link.child} names it as its parent`;
      throw fileError('E_CONTAINER', path, `the differencing chain loops back to a file already in it (the same file as ${first})${via}`);
    }
    context.seen.set(key, path);
    version = `${key}:${stat.size.toString()}:${stat.mtimeNs.toString()}`;
    info = { size: Number(stat.size), mtimeMs: Number(stat.mtimeMs) };
  } catch (error) {
    await handle.close();
    throw withPath(error, path);
  }
  const known = parsedVhdLevels.get(version);
  if (known !== undefined) {
    try {
      if (link !== undefined && link.format !== 'vhd') throw fileError('E_CONTAINER', link.child, `wrong parent: ${path} is not a VHDX`);
      const self: ChainFile = { path, format: 'vhd', compressed: known.compressed !== undefined, fileSize: info.size, mtimeMs: info.mtimeMs };
      return vhdLevel(self, await vhdOwnLayout(known, path, checkVhdLink(known.vhd.footer, path, link), context), context);
    } catch (error) {
      throw withPath(error, path);
    } finally {
      await handle.close();
    }
  }
  const file = await ImageFile.open(path, () => Promise.resolve(handle), 'urBackup image');
  try {
    const read = (position: number, length: number): Promise<Uint8Array> => file.read(position, length);
    const head = await file.read(0, 8);
    const isVhdx = new TextDecoder('latin1').decode(head) === 'vhdxfile';
    const self: ChainFile = { path, format: isVhdx ? 'vhdx' : 'vhd', compressed: file.container !== undefined, fileSize: file.fileSize, mtimeMs: file.mtimeMs };
    if (link !== undefined && link.format !== self.format) {
      throw fileError('E_CONTAINER', link.child, `wrong parent: ${path} is not a ${link.format === 'vhd' ? 'VHD' : 'VHDX'}`);
    }
    const opened = isVhdx ? await openVhdx(file, read, link, context) : await openVhd(file, read, link, context, (parsed) => parsedVhdLevels.set(version, parsed));
    if ('level' in opened.own) return vhdLevel(self, opened, context);
    const own = opened.own;
    // Own extents resolved through the container now, while the file's index is at hand.
    const builder = new ImageLayoutBuilder();
    const ownRanges = new RangeSet();
    try {
      for (const extent of own.extents) {
        if (extent.kind === 'file' && extent.path === path) {
          ownRanges.add(extent.start, extent.length);
          if (file.container === undefined) builder.file(path, extent.offset, extent.length, extent.what);
          else mapLogicalRange(file.container, extent.offset, extent.length, builder, extent.what);
          continue;
        }
        builder.append(extent);
      }
    } catch (error) {
      await opened.next?.handle?.close();
      throw error;
    }
    const ranges = ownRanges.ranges();
    return {
      self,
      type: opened.type,
      size: own.size,
      own: builder.build(own.size),
      ownRanges: () => Promise.resolve(ranges),
      identity: opened.identity,
      timeStamp: opened.timeStamp,
      warnings: opened.warnings,
      next: opened.next,
    };
  } catch (error) {
    throw withPath(error, path);
  } finally {
    await file.close();
  }
}

/** A VHD of a chain: its level (BAT, no bitmaps) and what reading its own bitmaps later needs. */
interface VhdOwn {
  readonly level: VhdChainLevel;
  readonly blockSize: number;
}

interface OwnLayout {
  /** VHDX: extents of `path` (offsets in the VHDX bytes), PARENT (disk offsets) or zeros. VHD: its chain level. */
  readonly own: Layout | VhdOwn;
  readonly type: 'dynamic' | 'differencing';
  readonly warnings: string[];
  readonly identity: Uint8Array;
  readonly timeStamp: number;
  readonly next: NextLevel | undefined;
}

/** Reads up to `concurrency` items at once, in order (compressed files decode each block once). */
async function readEach<T>(items: readonly number[], read: (item: number) => Promise<T>, concurrency: number): Promise<Map<number, T>> {
  const out = new Map<number, T>();
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++];
      if (item !== undefined) out.set(item, await read(item));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, lane));
  return out;
}

/** Opens the first of `candidates` that opens (urBackup tries them in order). */
async function firstThatOpens(candidates: readonly string[], opener: SourceOpener): Promise<{ path: string; handle: FileHandle } | undefined> {
  for (const candidate of candidates) {
    try {
      return { path: candidate, handle: await opener(candidate, 'urBackup image') };
    } catch {
      // not there (or not ours to read): the next candidate, as urBackup's fallbacks
    }
  }
  return undefined;
}

/** A VHD's OpenedLevel from its own layout. */
function vhdLevel(self: ChainFile, opened: OwnLayout, context: OpenContext): OpenedLevel {
  const own = opened.own as VhdOwn;
  return {
    self,
    type: opened.type,
    size: own.level.size,
    own,
    ownRanges: memo(() => vhdOwnRanges(own, context.opener)),
    identity: opened.identity,
    timeStamp: opened.timeStamp,
    warnings: opened.warnings,
    next: opened.next,
  };
}

/** What a child requires of its VHD parent, checked on the parent's footer; the warnings it leaves. */
function checkVhdLink(footer: VhdFooter, path: string, link: ParentLink | undefined): string[] {
  const warnings: string[] = [];
  if (link?.format === 'vhd') {
    // VHDFile::read_dynamicheader: the parent's Unique Id, before anything else of it is read.
    if (!guidEquals(footer.uniqueId, link.uniqueId)) {
      throw fileError(
        'E_CONTAINER',
        link.child,
        `wrong parent: ${path} has Unique Id ${guidToString(footer.uniqueId, 'rfc')}, the child was made from ${guidToString(link.uniqueId, 'rfc')} (urBackup refuses it too: "Parent uid wrong")`,
      );
    }
    if (footer.timeStamp !== link.timeStamp) {
      // VHDFile::read_dynamicheader only logs this ("Continuing anyways").
      warnings.push(`${link.child}: the parent's timestamp differs from the one recorded (urBackup continues too)`);
    }
  }
  return warnings;
}

async function openVhd(
  file: ImageFile,
  read: (position: number, length: number) => Promise<Uint8Array>,
  link: ParentLink | undefined,
  context: OpenContext,
  remember: (parsed: ParsedVhdLevel) => void,
): Promise<OwnLayout> {
  const footer = await readUrbackupVhdFooter(read, file.size);
  const warnings = checkVhdLink(footer, file.path, link);
  // Headers and the BAT only: sector bitmaps are read when their blocks are (src/extents/vhd-chain.ts).
  const vhd = await parseUrbackupVhd(read, file.size, footer);
  const container = file.container;
  const parsed: ParsedVhdLevel = { vhd, compressed: container === undefined ? undefined : indexOf(container) };
  remember(parsed);
  return vhdOwnLayout(parsed, file.path, warnings, context);
}

/** A parsed VHD's chain level, and its parent found and opened (the last step: nothing fails after). */
async function vhdOwnLayout({ vhd, compressed }: ParsedVhdLevel, path: string, warnings: string[], context: OpenContext): Promise<OwnLayout> {
  const level: VhdChainLevel = { path, size: vhd.size, bat: vhd.bat, bitmapSize: vhd.bitmapSize, compressed };
  const own: VhdOwn = { level, blockSize: vhd.blockSize };
  let next: NextLevel | undefined;
  if (vhd.type === 'differencing') {
    // VHDFile::read_dynamicheader: find the parent by parent_unicodename.
    const candidates = urbackupVhdParentCandidates(path, vhd.parentUnicodeName);
    if (candidates.length === 0) throw new SynthvhdError('E_CONTAINER', 'differencing VHD without a parent name (parent_unicodename is empty)');
    const found = await firstThatOpens(candidates, context.opener);
    if (found === undefined) throw new SynthvhdError('E_CONTAINER', `parent not found: parent_unicodename "${vhd.parentUnicodeName}", tried ${candidates.join(', ')}`);
    next = { ...found, link: { format: 'vhd', child: path, uniqueId: vhd.header.parentUniqueId, timeStamp: vhd.header.parentTimeStamp } };
  }
  return { own, type: vhd.type, warnings, identity: vhd.footer.uniqueId, timeStamp: vhd.footer.timeStamp, next };
}

/** Calls `make` once, on first use. */
function memo<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => (made ??= make());
}

/**
 * What a VHD of a chain wrote: the sectors whose bitmap bits are set in its allocated blocks
 * (below its disk size). Opens the file again, reads the bitmaps in file order, closes it.
 */
async function vhdOwnRanges(own: VhdOwn, opener: SourceOpener): Promise<readonly Range[]> {
  const { level, blockSize } = own;
  const file = await ImageFile.open(level.path, opener, 'urBackup image');
  try {
    const blocks: number[] = [];
    for (let block = 0; block < level.bat.length; block++) if (level.bat[block] !== CHAIN_BAT_UNUSED) blocks.push(block);
    const bitmaps = await readEach(blocks, (block) => file.read(bitmapOffsetOf(level, block), level.bitmapSize), file.container === undefined ? 64 : 16);
    const ranges = new RangeSet();
    for (const block of blocks) {
      const bitmap = bitmaps.get(block);
      if (bitmap === undefined) continue;
      const start = block * blockSize;
      const length = Math.min(blockSize, level.size - start);
      for (const run of bitRuns(bitmap, Math.ceil(length / 512), 'msb')) {
        if (run.present) ranges.add(start + run.start * 512, Math.min(run.count * 512, length - run.start * 512));
      }
    }
    return ranges.ranges();
  } catch (error) {
    throw withPath(error, level.path);
  } finally {
    await file.close();
  }
}

async function openVhdx(file: ImageFile, read: (position: number, length: number) => Promise<Uint8Array>, link: ParentLink | undefined, context: OpenContext): Promise<OwnLayout> {
  if (link?.format === 'vhdx') {
    // vhdxfile.cpp (VHDXFile::readMeta): the parent's DataWriteGuid must equal parent_linkage;
    // checked on its headers, before its regions, metadata and BAT are read.
    const reader = new ContainerReader(read, file.size);
    const { header } = await readVhdxHeaders(reader, await reader.read(0, VHDX_FILE_ID_SIZE, 'file identifier'));
    if (!guidEquals(header.dataWriteGuid, link.linkage)) {
      throw fileError('E_CONTAINER', link.child, `wrong parent: ${file.path} has DataWriteGuid ${guidToString(header.dataWriteGuid, 'ms')}, the child links to ${link.linkageText}`);
    }
  }
  // urBackup's compressed container ends at its last write, maybe inside the last payload block.
  const parsed = await parseContainer(read, file.size, { endsAtLastWrite: file.container !== undefined });
  if (parsed.format !== 'vhdx') throw new SynthvhdError('E_CONTAINER', 'not a VHDX');
  // vhdxfile.cpp refuses a read-only open while the log holds entries: so do we (a log we
  // did not replay would mean serving stale blocks).
  if (!isZeroGuid(parsed.header.logGuid)) {
    throw new SynthvhdError('E_CONTAINER', 'VHDX has a non-empty log (LogGuid set): urBackup was interrupted while writing it');
  }
  const type = parsed.type === 'differencing' ? 'differencing' : 'dynamic';
  // The parent's size is learnt when it is opened: PARENT stands for all of this disk, and
  // resolving reads zeros past the parent's end (as for VHD).
  const parentLayout = type === 'differencing' ? new LayoutBuilder().file(PARENT, 0, parsed.metadata.virtualDiskSize, 'the parent image').build() : undefined;
  const own = await containerDiskLayout(parsed, file.path, read, parentLayout);
  // The parent last, so that nothing can fail while its handle is open.
  const next = type === 'differencing' ? await findVhdxParent(file.path, parsed, context.opener) : undefined;
  return { own, type, warnings: [], identity: parsed.header.dataWriteGuid, timeStamp: 0, next };
}

/**
 * vhdxfile.cpp (VHDXFile::readMeta): the parent is `absolute_win32_path` (a Linux path on a
 * Linux server), else `relative_path`; its DataWriteGuid must equal `parent_linkage`. We resolve
 * `relative_path` against the child's folder (urBackup uses its working directory), so a backup
 * root that was moved still finds its parents.
 */
async function findVhdxParent(childPath: string, parsed: ParsedVhdx, opener: SourceOpener): Promise<NextLevel> {
  const locator = parsed.parentLocator ?? new Map<string, string>();
  const linkageText = locator.get('parent_linkage') ?? '';
  const linkage = guidFromString(linkageText, 'ms');
  if (linkage === undefined || isZeroGuid(linkage)) throw new SynthvhdError('E_CONTAINER', `VHDX parent_linkage "${linkageText}" is not a GUID`);
  const candidates: string[] = [];
  const absolute = (locator.get('absolute_win32_path') ?? '').replace(/^\\\\\?\\/, '');
  if (absolute.startsWith('/')) candidates.push(absolute);
  else if (absolute.startsWith('\\') && !absolute.startsWith('\\\\')) candidates.push(absolute.replace(/\\/g, '/'));
  const relative = locator.get('relative_path') ?? '';
  if (relative !== '') candidates.push(resolve(dirname(childPath), relative.replace(/\\/g, '/')));
  const found = await firstThatOpens(candidates, opener);
  if (found === undefined) {
    throw new SynthvhdError('E_CONTAINER', `parent not found: tried ${candidates.length === 0 ? '(no usable path in the parent locator)' : candidates.join(', ')}`);
  }
  return { ...found, link: { format: 'vhdx', child: childPath, linkage, linkageText } };
}
