// SPDX-License-Identifier: MIT
/**
 * Opens one urBackup image backup file (`Image_<L>_<ts>.vhd|.vhdz|.vhdx|.vhdxz`) with its
 * parent chain, as urBackup's own reader would, and returns the image's disk (synthetic MBR +
 * volume) and the volume as extents (./image-extent.ts): `file` extents where a plain file
 * holds the bytes, `compressed` extents where a compressed one does, `zero` where nothing does.
 * Chains are resolved here, once, down to the files that hold each byte.
 * docs/urbackup-image-formats.md tells the formats; the rules are cited where applied.
 */
import { dirname, resolve } from 'node:path';
import { SynthvhdError, fileError, isSynthvhdError } from '../../errors/synthvhd-error.js';
import { containerDiskLayout } from '../../container/disk-layout.js';
import { guidEquals, guidFromString, guidToString } from '../../container/guid.js';
import { type ParsedVhdx, parseContainer } from '../../container/inspect.js';
import { isZeroGuid } from '../../container/guid.js';
import type { Layout } from '../../extents/extent.js';
import { LayoutBuilder } from '../../extents/layout-builder.js';
import { mapLogicalRange } from './compressed-file.js';
import { ImageFile, type SourceOpener } from './image-file.js';
import { type ImageLayout, ImageLayoutBuilder, sliceImageLayout } from './image-extent.js';
import { allocatedBlocks, bitmapOffset, parseUrbackupVhd, urbackupVhdLayout, urbackupVhdParentCandidates } from './urbackup-vhd.js';

/** A file of the chain, child first. */
export interface ChainFile {
  readonly path: string;
  readonly format: 'vhd' | 'vhdx';
  readonly compressed: boolean;
  readonly fileSize: number;
  readonly mtimeMs: number;
}

export interface OpenedImageDisk {
  readonly path: string;
  readonly format: 'vhd' | 'vhdx';
  readonly compressed: boolean;
  readonly type: 'dynamic' | 'differencing';
  /** The disk urBackup stored (synthetic MBR in sector 0, the volume from its partition). */
  readonly disk: ImageLayout;
  /** Disk ranges this file itself holds (its BAT and sector bitmaps): what this backup run wrote. */
  readonly ownRanges: readonly (readonly [start: number, length: number])[];
  readonly chain: readonly ChainFile[];
  /** Things urBackup only warns about (a parent timestamp that changed). */
  readonly warnings: readonly string[];
  /** What a child links to: the VHD footer Unique Id ('rfc'), the VHDX DataWriteGuid ('ms'). */
  readonly identity: Uint8Array;
  /** VHD footer Time Stamp (0 for VHDX). */
  readonly timeStamp: number;
  /** The opened parent of a differencing image. */
  readonly parent: OpenedImageDisk | undefined;
}

export interface OpenImageOptions {
  /**
   * A summary for `ls`/`doctor`: sector bitmaps are read only for blocks that start before this
   * disk byte; later allocated blocks count as wholly present. Every check still runs (headers,
   * index, BAT, parents and their ids, unfinished files), and the bytes before the limit (the
   * synthetic MBR, the boot sector) are right, but the layout past it is NOT the disk: it must
   * never be served. Without it, a full .vhdz's open decodes most of the file.
   */
  readonly summaryBytes?: number | undefined;
}

interface OpenContext {
  readonly summaryBytes: number | undefined;
}

/** Deeper than this is a broken tree (urBackup's own chains are far shorter). */
const MAX_CHAIN_DEPTH = 1024;
/** Stands for "the parent's disk" in a child's layout before the parent's extents replace it. */
const PARENT = '\u0000parent';

/**
 * Opens `path` (and its parents) as the disk urBackup stored; see the file comment. The sector
 * bitmaps of a .vhdz live inside its compressed blocks, so building the layout of a full image
 * decodes most of the file: that runs on the libuv pool (the native record codec,
 * src/extents/compressed-record.ts), so a mount's thread keeps answering while a large backup is
 * opened.
 */
export async function openImageDisk(path: string, opener: SourceOpener, options: OpenImageOptions = {}): Promise<OpenedImageDisk> {
  return openAt(resolve(path), opener, new Set<string>(), { summaryBytes: options.summaryBytes });
}

function withPath(error: unknown, path: string): unknown {
  if (isSynthvhdError(error) && error.path === undefined) return fileError(error.code, path, error.message, error);
  return error;
}

async function openAt(path: string, opener: SourceOpener, seen: Set<string>, context: OpenContext): Promise<OpenedImageDisk> {
  if (seen.has(path)) throw fileError('E_CONTAINER', path, 'the differencing chain loops back to this file');
  if (seen.size >= MAX_CHAIN_DEPTH) throw fileError('E_CONTAINER', path, `differencing chain deeper than ${MAX_CHAIN_DEPTH} files`);
  const file = await ImageFile.open(path, opener, 'urBackup image');
  try {
    const read = (position: number, length: number): Promise<Uint8Array> => file.read(position, length);
    const head = await file.read(0, 8);
    const isVhdx = new TextDecoder('latin1').decode(head) === 'vhdxfile';
    const self: ChainFile = { path, format: isVhdx ? 'vhdx' : 'vhd', compressed: file.container !== undefined, fileSize: file.fileSize, mtimeMs: file.mtimeMs };
    const opened = isVhdx ? await openVhdx(file, read, opener, seen, context) : await openVhd(file, read, opener, seen, context);
    const { own, parent, type, warnings, identity, timeStamp } = opened;
    // Resolve: own bytes through the container, the parent's disk from its layout.
    const builder = new ImageLayoutBuilder();
    const ownRanges: [number, number][] = [];
    for (const extent of own.extents) {
      if (extent.kind === 'file' && extent.path === PARENT) {
        if (parent === undefined) throw new SynthvhdError('E_INTERNAL', 'internal error (please report): parent extent without a parent');
        const inside = Math.max(0, Math.min(extent.length, parent.disk.size - extent.offset));
        for (const piece of sliceImageLayout(parent.disk, extent.offset, inside, 0)) builder.append(piece);
        builder.zero(extent.length - inside, 'zeros: past the end of the parent image');
        continue;
      }
      if (extent.kind === 'file' && extent.path === path) {
        const last = ownRanges.at(-1);
        if (last !== undefined && last[0] + last[1] === extent.start) last[1] += extent.length;
        else ownRanges.push([extent.start, extent.length]);
        if (file.container === undefined) builder.file(path, extent.offset, extent.length, extent.what);
        else mapLogicalRange(file.container, extent.offset, extent.length, builder, extent.what);
        continue;
      }
      builder.append(extent);
    }
    return {
      path,
      format: self.format,
      compressed: self.compressed,
      type,
      disk: builder.build(own.size),
      ownRanges,
      chain: [self, ...(parent?.chain ?? [])],
      warnings: [...warnings, ...(parent?.warnings ?? [])],
      identity,
      timeStamp,
      parent,
    };
  } catch (error) {
    throw withPath(error, path);
  } finally {
    await file.close();
  }
}

interface OwnLayout {
  /** Extents of `path` (offsets in the VHD/VHDX bytes), PARENT (disk offsets) or zeros. */
  readonly own: Layout;
  readonly parent: OpenedImageDisk | undefined;
  readonly type: 'dynamic' | 'differencing';
  readonly warnings: string[];
  readonly identity: Uint8Array;
  readonly timeStamp: number;
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

async function openVhd(
  file: ImageFile,
  read: (position: number, length: number) => Promise<Uint8Array>,
  opener: SourceOpener,
  seen: Set<string>,
  context: OpenContext,
): Promise<OwnLayout> {
  const vhd = await parseUrbackupVhd(read, file.size);
  const limit = context.summaryBytes;
  const allocated = allocatedBlocks(vhd);
  const blocks = limit === undefined ? allocated : allocated.filter((block) => block * vhd.blockSize < limit);
  // Bitmaps of a compressed file live inside its blocks: read them in order, 16 at a time (about
  // four 2 MiB blocks in flight: ImageFile keeps the last 8 decoded, so each is decoded once).
  // 4 at a time left one block in flight: 2.1 s to open a 512 MiB .vhdz, now 1.4 s.
  const bitmaps = await readEach(blocks, (block) => read(bitmapOffset(vhd, block), vhd.bitmapSize), file.container === undefined ? 64 : 16);
  // Summary: blocks past the limit count as wholly present (see OpenImageOptions).
  if (limit !== undefined) for (const block of allocated) if (!bitmaps.has(block)) bitmaps.set(block, new Uint8Array(vhd.bitmapSize).fill(0xff));
  const warnings: string[] = [];
  let parent: OpenedImageDisk | undefined;
  if (vhd.type === 'differencing') {
    parent = await openVhdParent(file.path, vhd.parentUnicodeName, vhd.header.parentUniqueId, opener, seen, context);
    if (parent.timeStamp !== vhd.header.parentTimeStamp) {
      // VHDFile::read_dynamicheader only logs this ("Continuing anyways").
      warnings.push(`${file.path}: the parent's timestamp differs from the one recorded (urBackup continues too)`);
    }
  }
  const own = urbackupVhdLayout(vhd, bitmaps, file.path, parent === undefined ? undefined : PARENT);
  return { own, parent, type: vhd.type, warnings, identity: vhd.footer.uniqueId, timeStamp: vhd.footer.timeStamp };
}

async function exists(path: string, opener: SourceOpener): Promise<boolean> {
  try {
    await (await opener(path, 'urBackup image')).close();
    return true;
  } catch {
    return false;
  }
}

/** VHDFile::read_dynamicheader: find the parent by parent_unicodename, check its Unique Id. */
async function openVhdParent(
  childPath: string,
  unicodeName: string,
  parentUniqueId: Uint8Array,
  opener: SourceOpener,
  seen: Set<string>,
  context: OpenContext,
): Promise<OpenedImageDisk> {
  const candidates = urbackupVhdParentCandidates(childPath, unicodeName);
  if (candidates.length === 0) throw fileError('E_CONTAINER', childPath, 'differencing VHD without a parent name (parent_unicodename is empty)');
  for (const candidate of candidates) {
    if (!(await exists(candidate, opener))) continue;
    const parent = await openAt(candidate, opener, new Set([...seen, childPath]), context);
    if (parent.format !== 'vhd') throw fileError('E_CONTAINER', childPath, `wrong parent: ${candidate} is not a VHD`);
    const uniqueId = parent.identity;
    if (!guidEquals(uniqueId, parentUniqueId)) {
      throw fileError(
        'E_CONTAINER',
        childPath,
        `wrong parent: ${candidate} has Unique Id ${guidToString(uniqueId, 'rfc')}, the child was made from ${guidToString(parentUniqueId, 'rfc')} (urBackup refuses it too: "Parent uid wrong")`,
      );
    }
    return parent;
  }
  throw fileError('E_CONTAINER', childPath, `parent not found: parent_unicodename "${unicodeName}", tried ${candidates.join(', ')}`);
}

async function openVhdx(
  file: ImageFile,
  read: (position: number, length: number) => Promise<Uint8Array>,
  opener: SourceOpener,
  seen: Set<string>,
  context: OpenContext,
): Promise<OwnLayout> {
  const parsed = await parseContainer(read, file.size);
  if (parsed.format !== 'vhdx') throw new SynthvhdError('E_CONTAINER', 'not a VHDX');
  // vhdxfile.cpp refuses a read-only open while the log holds entries: so do we (a log we
  // did not replay would mean serving stale blocks).
  if (!isZeroGuid(parsed.header.logGuid)) {
    throw new SynthvhdError('E_CONTAINER', 'VHDX has a non-empty log (LogGuid set): urBackup was interrupted while writing it');
  }
  const type = parsed.type === 'differencing' ? 'differencing' : 'dynamic';
  let parent: OpenedImageDisk | undefined;
  let parentLayout: Layout | undefined;
  if (parsed.type === 'differencing') {
    parent = await openVhdxParent(file.path, parsed, opener, seen, context);
    parentLayout = new LayoutBuilder().file(PARENT, 0, parent.disk.size, 'the parent image').build();
  }
  const own = await containerDiskLayout(parsed, file.path, read, parentLayout);
  return { own, parent, type, warnings: [], identity: parsed.header.dataWriteGuid, timeStamp: 0 };
}

/**
 * vhdxfile.cpp (VHDXFile::readMeta): the parent is `absolute_win32_path` (a Linux path on a
 * Linux server), else `relative_path`; its DataWriteGuid must equal `parent_linkage`. We resolve
 * `relative_path` against the child's folder (urBackup uses its working directory), so a backup
 * root that was moved still finds its parents.
 */
async function openVhdxParent(childPath: string, parsed: ParsedVhdx, opener: SourceOpener, seen: Set<string>, context: OpenContext): Promise<OpenedImageDisk> {
  const locator = parsed.parentLocator ?? new Map<string, string>();
  const linkageText = locator.get('parent_linkage') ?? '';
  const linkage = guidFromString(linkageText, 'ms');
  if (linkage === undefined || isZeroGuid(linkage)) throw fileError('E_CONTAINER', childPath, `VHDX parent_linkage "${linkageText}" is not a GUID`);
  const candidates: string[] = [];
  const absolute = (locator.get('absolute_win32_path') ?? '').replace(/^\\\\\?\\/, '');
  if (absolute.startsWith('/')) candidates.push(absolute);
  else if (absolute.startsWith('\\') && !absolute.startsWith('\\\\')) candidates.push(absolute.replace(/\\/g, '/'));
  const relative = locator.get('relative_path') ?? '';
  if (relative !== '') candidates.push(resolve(dirname(childPath), relative.replace(/\\/g, '/')));
  for (const candidate of candidates) {
    if (!(await exists(candidate, opener))) continue;
    const parent = await openAt(candidate, opener, new Set([...seen, childPath]), context);
    if (parent.format !== 'vhdx') throw fileError('E_CONTAINER', childPath, `wrong parent: ${candidate} is not a VHDX`);
    const dataWriteGuid = parent.identity;
    if (!guidEquals(dataWriteGuid, linkage)) {
      throw fileError('E_CONTAINER', childPath, `wrong parent: ${candidate} has DataWriteGuid ${guidToString(dataWriteGuid, 'ms')}, the child links to ${linkageText}`);
    }
    return parent;
  }
  throw fileError('E_CONTAINER', childPath, `parent not found: tried ${candidates.length === 0 ? '(no usable path in the parent locator)' : candidates.join(', ')}`);
}
