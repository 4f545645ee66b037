// SPDX-License-Identifier: MIT
/** What a parsed .vhd or .vhdx says about itself: the `inspect` command's answer. */
import { guidToString } from './guid.js';
import { stripTrailing } from './parse-vhd.js';
import type { ParsedContainer, ParsedVhd, ParsedVhdx } from './parsed-container.js';
import { VHD_SECTOR_SIZE, type VhdFooter } from './vhd.js';

export interface ContainerInfo {
  readonly format: 'vhd' | 'vhdx';
  readonly type: 'fixed' | 'dynamic' | 'differencing';
  /** Bytes of the virtual disk (VHD Current Size, VHDX VirtualDiskSize). */
  readonly virtualSize: number;
  /** Dynamic/differencing block size (VHD dynamic header, VHDX File Parameters). */
  readonly blockSize?: number;
  readonly logicalSectorSize: number;
  /** VHDX only (MS-VHDX 2.6.2.5). */
  readonly physicalSectorSize?: number;
  /** VHD footer Unique Id, lowercase, RFC 4122 order. */
  readonly uniqueId?: string;
  /** VHDX current header's DataWriteGuid (what differencing children link to), lowercase. */
  readonly dataWriteGuid?: string;
  readonly fileWriteGuid?: string;
  /** VHDX Page 83 Data (virtual disk id), lowercase. */
  readonly page83?: string;
  readonly parent?: {
    /** VHDX `parent_linkage` as stored; VHD: the parent's Unique Id, lowercase. */
    readonly linkage?: string;
    /** VHDX locator keys (`relative_path`, ...); VHD platform codes (`W2ru`, ...) and `ParentUnicodeName`. */
    readonly paths: Record<string, string>;
  };
  /** VHD: creator application, version and host; VHDX: the File Type Identifier's Creator. */
  readonly creator?: string;
}

export function describeContainer(parsed: ParsedContainer): ContainerInfo {
  return parsed.format === 'vhd' ? describeVhd(parsed) : describeVhdx(parsed);
}

function describeVhd(parsed: ParsedVhd): ContainerInfo {
  const { footer } = parsed;
  const common = {
    format: 'vhd' as const,
    virtualSize: footer.currentSize,
    logicalSectorSize: VHD_SECTOR_SIZE,
    uniqueId: guidToString(footer.uniqueId, 'rfc'),
    creator: vhdCreator(footer),
  };
  if (parsed.type === 'fixed' || parsed.dynamicHeader === undefined) return { ...common, type: 'fixed' };
  const blockSize = parsed.dynamicHeader.blockSize;
  if (parsed.type === 'dynamic') return { ...common, type: 'dynamic', blockSize };
  return {
    ...common,
    type: 'differencing',
    blockSize,
    parent: { linkage: guidToString(parsed.dynamicHeader.parentUniqueId, 'rfc'), paths: { ...parsed.parentPaths } },
  };
}

function vhdCreator(footer: VhdFooter): string {
  const application = stripTrailing(footer.creatorApplication, ' \u0000');
  const version = `${footer.creatorVersion >>> 16}.${footer.creatorVersion & 0xffff}`;
  return `${application} ${version} on ${stripTrailing(footer.creatorHostOs, ' \u0000')}`;
}

function describeVhdx(parsed: ParsedVhdx): ContainerInfo {
  const { header, metadata, creator } = parsed;
  const info: ContainerInfo = {
    format: 'vhdx',
    type: parsed.type,
    virtualSize: metadata.virtualDiskSize,
    blockSize: metadata.fileParameters.blockSize,
    logicalSectorSize: metadata.logicalSectorSize,
    physicalSectorSize: metadata.physicalSectorSize,
    dataWriteGuid: guidToString(header.dataWriteGuid, 'ms'),
    fileWriteGuid: guidToString(header.fileWriteGuid, 'ms'),
    page83: guidToString(metadata.page83, 'ms'),
    ...(creator === '' ? {} : { creator }),
  };
  const locator = parsed.parentLocator;
  if (locator === undefined) return info;
  const paths: Record<string, string> = {};
  for (const [key, value] of locator) if (!key.startsWith('parent_linkage')) paths[key] = value;
  const linkage = locator.get('parent_linkage');
  return { ...info, parent: linkage === undefined ? { paths } : { linkage, paths } };
}
