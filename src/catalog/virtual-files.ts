// SPDX-License-Identifier: MIT
/**
 * Which container files a composed disk is offered as, and their layouts. The FUSE mount and
 * `materialize` both call `containerLayout`, so a served file and a written one are the same
 * bytes.
 */
import type { DiskImage } from '../disk/disk-image.js';
import type { Layout } from '../extents/extent.js';
import { buildVhdLayout, vhdLimitReason } from '../container/vhd.js';
import { buildVhdxLayout } from '../container/vhdx.js';
import { fileError } from '../errors/synthvhd-error.js';
import type { ContainerFormat } from './catalog.js';

export interface ContainerOptions {
  /** VHDX payload block size in bytes (default 32 MiB). */
  readonly blockSize?: number;
}

export interface OfferedFile {
  readonly format: ContainerFormat;
  /** Why the format cannot hold this disk; undefined when it is offered. */
  readonly unavailable: string | undefined;
}

export function offeredFiles(disk: DiskImage): OfferedFile[] {
  return [
    { format: 'vhdx', unavailable: undefined },
    { format: 'vhd', unavailable: vhdLimitReason(disk) },
  ];
}

export function containerLayout(disk: DiskImage, format: ContainerFormat, options: ContainerOptions = {}): Layout {
  return format === 'vhd' ? buildVhdLayout(disk) : buildVhdxLayout(disk, options.blockSize === undefined ? {} : { blockSize: options.blockSize });
}

/** The container format an output path asks for, by its extension. */
export function formatOfPath(path: string): ContainerFormat {
  const lower = path.toLowerCase();
  if (lower.endsWith('.vhdx')) return 'vhdx';
  if (lower.endsWith('.vhd')) return 'vhd';
  throw fileError('E_USAGE', path, 'output name must end in .vhdx or .vhd');
}
