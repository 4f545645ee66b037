// SPDX-License-Identifier: MIT
/**
 * Opens a disk image file as the disk it holds: a `.vhd` (fixed, dynamic, differencing), a `.vhdx`
 * (fixed, dynamic, differencing, any block order) or a raw image becomes the disk's Layout, with
 * differencing chains resolved down to the real files and the holes of every file turned into
 * `zero` extents. This is the I/O half of the container readers: ./inspect.ts parses and
 * ./disk-layout.ts maps, both pure; here files are opened (read-only, never written) and parents
 * are found and checked.
 *
 * Finding a parent, in this order (first existing file wins; each candidate is tried once):
 * - VHDX (MS-VHDX 2.6.2.6.3): `relative_path` against the child's folder; then for
 *   `absolute_win32_path` and `volume_path`: the path itself when it is a Linux path written with
 *   backslashes (what synthvhd writes, after an optional `\\?\` prefix), then its file name in the
 *   child's folder (a chain copied from Windows keeps working when its files stay together).
 * - VHD ("Dynamic Disk Header Format", Parent Locator Entries): `W2ru` (relative), then `W2ku`
 *   (absolute) the same way, then the Parent Unicode Name's file name in the child's folder.
 * The parent must then prove it is the one the child was made from: VHDX `parent_linkage` (or
 * `parent_linkage2`) = the parent's current DataWriteGuid (MS-VHDX 2.6.2.6.3: "the implementation
 * MUST verify"); VHD Parent Unique ID = the parent footer's Unique Id.
 */
import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { SynthvhdError, fileError, isSynthvhdError } from '../errors/synthvhd-error.js';
import type { Layout } from '../extents/extent.js';
import { punchHoles } from '../extents/holes.js';
import { LayoutBuilder } from '../extents/layout-builder.js';
import { dataRanges } from '../native/native.js';
import { containerDiskLayout, containerSectorSize } from './disk-layout.js';
import { guidEquals, guidFromString, guidToBracedLowercase, guidToString } from './guid.js';
import { type ParsedContainer, parseContainer } from './inspect.js';
import { VHD_FOOTER_SIZE, isVhdFooter } from './vhd.js';
import { isVhdxFileIdentifier } from './vhdx/file-identifier.js';

export type ImageFormat = 'raw' | 'vhd' | 'vhdx';

export interface OpenedImage {
  /** Absolute path of the file. */
  readonly path: string;
  readonly format: ImageFormat;
  readonly type: 'raw' | 'fixed' | 'dynamic' | 'differencing';
  /** The virtual disk: extents over this file and its parents' files, holes as `zero`. */
  readonly layout: Layout;
  /** Logical sector size of the disk (512 for raw and VHD). */
  readonly sectorSize: number;
  readonly fileSize: number;
  readonly mtimeMs: number;
  /** undefined for a raw image. */
  readonly parsed: ParsedContainer | undefined;
  /** The opened parent of a differencing image. */
  readonly parent: OpenedImage | undefined;
}

/** A differencing chain deeper than this is refused (a loop of copies, or a broken tree). */
const MAX_CHAIN_DEPTH = 64;

/** Opens `path` as a disk image; see the file comment. Errors name the file they are about. */
export async function openDiskImage(path: string): Promise<OpenedImage> {
  return openAt(resolve(path), new Set<string>());
}

/** True when `path` looks like a container by name (then it must parse as one). */
function hasContainerExtension(path: string): boolean {
  return /\.(vhdx?|avhdx?)$/i.test(path);
}

async function openAt(path: string, chain: Set<string>): Promise<OpenedImage> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw fileError('E_USAGE', path, `cannot open: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, error);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw fileError('E_USAGE', path, 'is not a regular file');
    const real = await realpath(path);
    if (chain.has(real)) throw fileError('E_CONTAINER', path, 'the differencing chain loops back to this file');
    if (chain.size >= MAX_CHAIN_DEPTH) throw fileError('E_CONTAINER', path, `differencing chain deeper than ${MAX_CHAIN_DEPTH} files`);
    const read = async (position: number, length: number): Promise<Uint8Array> => {
      const buffer = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buffer.subarray(0, done);
    };
    const base = { path, fileSize: info.size, mtimeMs: info.mtimeMs };
    let parsed: ParsedContainer | undefined;
    let parent: OpenedImage | undefined;
    let layout: Layout;
    try {
      if (!hasContainerExtension(path) && !(await looksLikeContainer(read, info.size))) {
        // A raw image: the file is the disk.
        const holes = await dataRanges(handle.fd, 0, info.size);
        layout = punchHoles(new LayoutBuilder().file(path, 0, info.size, `${basename(path)} (raw image)`).build(), path, holes);
        return { ...base, format: 'raw', type: 'raw', layout, sectorSize: 512, parsed: undefined, parent: undefined };
      }
      parsed = await parseContainer(read, info.size);
    } catch (error) {
      throw withPath(error, path);
    }
    if (parsed.type === 'differencing') parent = await openParent(path, parsed, new Set([...chain, real]));
    try {
      layout = await containerDiskLayout(parsed, path, read, parent?.layout);
      layout = punchHoles(layout, path, await dataRanges(handle.fd, 0, info.size));
    } catch (error) {
      throw withPath(error, path);
    }
    return { ...base, format: parsed.format, type: parsed.type, layout, sectorSize: containerSectorSize(parsed), parsed, parent };
  } finally {
    await handle.close();
  }
}

/** A VHDX signature at offset 0 or a VHD footer at the end. */
async function looksLikeContainer(read: (position: number, length: number) => Promise<Uint8Array>, size: number): Promise<boolean> {
  if (size >= 8 && isVhdxFileIdentifier(await read(0, 8))) return true;
  return size >= VHD_FOOTER_SIZE && isVhdFooter(await read(size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE));
}

/** Errors of the pure parsers carry no file name: add it ("<path>: <problem>"). */
function withPath(error: unknown, path: string): unknown {
  if (isSynthvhdError(error) && error.path === undefined) return fileError(error.code, path, error.message, error);
  return error;
}

/** How a child names its parent: where to look, and which identity to expect. */
interface ParentLink {
  /** [locator key, candidate path] in the order they are tried. */
  readonly candidates: readonly (readonly [key: string, path: string])[];
  /** Identities the parent may have (VHDX: DataWriteGuid, 'ms' order; VHD: Unique Id, 'rfc' order). */
  readonly identities: readonly Uint8Array[];
  readonly identityText: string;
}

/** `\\?\` (MS-VHDX 2.6.2.6.3: absolute_win32_path "MUST begin with \\?\"), removed. */
function stripExtendedPrefix(path: string): string {
  return path.startsWith('\\\\?\\') ? path.slice(4) : path;
}

/** The file name of a Windows or Linux path (after the last `\` or `/`). */
function fileNameOf(path: string): string {
  return path.slice(Math.max(path.lastIndexOf('\\'), path.lastIndexOf('/')) + 1);
}

/** Candidate Linux paths for one locator value. */
function candidatesFor(key: string, value: string, childDir: string, relative: boolean): [string, string][] {
  if (value === '') return [];
  if (relative) return [[key, resolve(childDir, value.replace(/\\/g, '/'))]];
  const out: [string, string][] = [];
  const bare = stripExtendedPrefix(value);
  // A Linux absolute path written with backslashes ("\srv\disks\a.vhdx"): what synthvhd writes.
  if (bare.startsWith('\\') && !bare.startsWith('\\\\')) out.push([key, bare.replace(/\\/g, '/')]);
  else if (isAbsolute(bare) && bare.startsWith('/')) out.push([key, bare]);
  const name = fileNameOf(bare);
  if (name !== '') out.push([`${key} file name`, join(childDir, name)]);
  return out;
}

function parentLinkOf(childPath: string, parsed: ParsedContainer): ParentLink {
  const childDir = dirname(childPath);
  const candidates: [string, string][] = [];
  if (parsed.format === 'vhdx') {
    const locator = parsed.parentLocator ?? new Map<string, string>();
    candidates.push(...candidatesFor('relative_path', locator.get('relative_path') ?? '', childDir, true));
    candidates.push(...candidatesFor('absolute_win32_path', locator.get('absolute_win32_path') ?? '', childDir, false));
    candidates.push(...candidatesFor('volume_path', locator.get('volume_path') ?? '', childDir, false));
    const identities: Uint8Array[] = [];
    const texts: string[] = [];
    for (const key of ['parent_linkage', 'parent_linkage2']) {
      const text = locator.get(key);
      if (text === undefined) continue;
      const guid = guidFromString(text, 'ms');
      if (guid === undefined) throw new SynthvhdError('E_CONTAINER', `VHDX parent locator: ${key} "${text}" is not a GUID`);
      identities.push(guid);
      texts.push(guidToBracedLowercase(guid, 'ms'));
    }
    return { candidates: dedupe(candidates), identities, identityText: texts.join(' or ') };
  }
  const paths = parsed.parentPaths;
  candidates.push(...candidatesFor('W2ru', paths.W2ru ?? '', childDir, true));
  candidates.push(...candidatesFor('W2ku', paths.W2ku ?? '', childDir, false));
  const name = fileNameOf(paths.ParentUnicodeName ?? '');
  if (name !== '') candidates.push(['Parent Unicode Name', join(childDir, name)]);
  const uniqueId = parsed.dynamicHeader?.parentUniqueId ?? new Uint8Array(16);
  return { candidates: dedupe(candidates), identities: [uniqueId], identityText: guidToString(uniqueId, 'rfc') };
}

/** Each path once, at its first place. */
function dedupe(candidates: readonly [string, string][]): [string, string][] {
  const seen = new Set<string>();
  const out: [string, string][] = [];
  for (const candidate of candidates) {
    if (seen.has(candidate[1])) continue;
    seen.add(candidate[1]);
    out.push(candidate);
  }
  return out;
}

/** The identity a child links to: VHDX DataWriteGuid ('ms'), VHD Unique Id ('rfc'). */
export function imageIdentity(parsed: ParsedContainer): Uint8Array {
  return parsed.format === 'vhdx' ? parsed.header.dataWriteGuid : parsed.footer.uniqueId;
}

function identityText(parsed: ParsedContainer): string {
  return parsed.format === 'vhdx' ? guidToBracedLowercase(parsed.header.dataWriteGuid, 'ms') : guidToString(parsed.footer.uniqueId, 'rfc');
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function openParent(childPath: string, child: ParsedContainer, chain: Set<string>): Promise<OpenedImage> {
  let link: ParentLink;
  try {
    link = parentLinkOf(childPath, child);
  } catch (error) {
    throw withPath(error, childPath);
  }
  if (link.candidates.length === 0) throw fileError('E_CONTAINER', childPath, 'differencing disk without any parent path in its locator');
  const mismatches: string[] = [];
  for (const [key, candidate] of link.candidates) {
    if (!(await exists(candidate))) continue;
    const parent = await openAt(candidate, chain);
    const parsed = parent.parsed;
    if (parsed?.format !== child.format) {
      mismatches.push(`${candidate} is ${parsed === undefined ? 'a raw image' : `a .${parsed.format}`}, not a .${child.format}`);
      continue;
    }
    if (!link.identities.some((identity) => guidEquals(identity, imageIdentity(parsed)))) {
      const name = parsed.format === 'vhdx' ? 'DataWriteGuid' : 'Unique Id';
      mismatches.push(`${candidate} (found by ${key}) has ${name} ${identityText(parsed)}, the child links to ${link.identityText}: the parent was changed or replaced after the child was made`);
      continue;
    }
    if (containerSectorSize(parsed) !== containerSectorSize(child)) {
      // MS-VHDX 2.6.2.4: "the logical sector size for the parent and child MUST be the same".
      mismatches.push(`${candidate} has ${containerSectorSize(parsed)}-byte sectors, the child ${containerSectorSize(child)}-byte`);
      continue;
    }
    return parent;
  }
  if (mismatches.length > 0) throw fileError('E_CONTAINER', childPath, `wrong parent: ${mismatches.join('; ')}`);
  const tried = link.candidates.map(([key, path]) => `${path} (${key})`).join(', ');
  throw fileError('E_CONTAINER', childPath, `parent not found: tried ${tried}`);
}

/** The files of a chain, child first (for reports). */
export function chainPaths(image: OpenedImage): string[] {
  const paths: string[] = [];
  for (let at: OpenedImage | undefined = image; at !== undefined; at = at.parent) paths.push(at.path);
  return paths;
}
