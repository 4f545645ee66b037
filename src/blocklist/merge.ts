// SPDX-License-Identifier: MIT
/**
 * `merge DIFF`: the Linux side of `Merge-VHD` in VhdBlockBackup's workflow (examples.txt: "Merge-VHD
 * C:\VM\disk0_diff.vhdx; move /y disk0_diff.vhdx.blocklist.bin disk0.vhdx.blocklist.bin").
 *
 * Unlike Merge-VHD this never modifies anything: the differencing disk's whole disk (read through
 * its chain by src/container/open-image.ts) is written as a NEW image, by default
 * `<parent name>.merged<parent extension>` beside the parent; `-o` chooses the name, whose
 * extension chooses .vhdx (dynamic, the parent's block size) or .vhd (fixed). The parent and the
 * diff stay as they are and remain a valid chain. The diff's blocklist describes the merged disk,
 * so it is copied to `<output>.blocklist.bin` (with an mtime not older than the output) - a copy
 * rather than a move, because the diff it also describes still exists.
 *
 * A merged .vhdx keeps the parent's Virtual Disk ID (Page 83 Data, MS-VHDX 2.6.2.3: it is the same
 * disk); its DataWriteGuid is new (MS-VHDX 2.2.2: the data changed), derived from the identities
 * of the diff and the parent so that the same merge always gives the same bytes.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { formatOfPath } from '../catalog/virtual-files.js';
import { deriveGuid } from '../container/guid.js';
import { type OpenedImage, chainPaths, imageIdentity, openDiskImage } from '../container/open-image.js';
import { buildVhdLayout } from '../container/vhd.js';
import { VHDX_DEFAULT_BLOCK_SIZE, buildVhdxLayout } from '../container/vhdx.js';
import type { DiskImage } from '../disk/disk-image.js';
import { fileError } from '../errors/synthvhd-error.js';
import { type WriteReport, refuseExisting, writeLayout } from '../materialize/write-layout.js';
import { blocklistPathOf, checkBlocklistLength } from './blocklist.js';
import { readListFile, writeListFile } from './list-file.js';

export interface MergeOptions {
  /** Output file (.vhdx or .vhd); default `<parent name>.merged<parent extension>` beside the parent. */
  readonly output?: string;
  /** Replace an existing output (never one of the chain's files). */
  readonly force?: boolean;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface MergeReport {
  readonly diff: string;
  readonly parent: string;
  readonly chain: readonly string[];
  readonly output: string;
  readonly format: 'vhdx' | 'vhd';
  readonly diskSize: number;
  /** `<output>.blocklist.bin`, when the diff had a usable list. */
  readonly list: string | undefined;
  /** Why no list was written, when none was. */
  readonly listNote: string | undefined;
  readonly write: WriteReport;
}

/** `<parent name>.merged<parent extension>` beside the parent. */
export function defaultMergeOutput(parentPath: string): string {
  const extension = extname(parentPath);
  return join(dirname(parentPath), `${basename(parentPath, extension)}.merged${extension === '' ? '.vhdx' : extension}`);
}

export async function mergeDiff(diffArgument: string, options: MergeOptions = {}): Promise<MergeReport> {
  const diff = await openDiskImage(diffArgument);
  const parent: OpenedImage | undefined = diff.parent;
  if (diff.type !== 'differencing' || parent === undefined || diff.parsed === undefined || parent.parsed === undefined) {
    throw fileError('E_USAGE', diff.path, `is a ${diff.type} ${diff.format === 'raw' ? 'raw image' : `.${diff.format}`}, not a differencing disk: nothing to merge`);
  }
  const output = resolve(options.output ?? defaultMergeOutput(parent.path));
  const format = formatOfPath(output);
  const chain = chainPaths(diff);
  if (chain.includes(output)) throw fileError('E_USAGE', output, 'is part of the chain being merged: merge writes a new file and never replaces the parent or the diff');
  await refuseExisting(output, options.force ?? false);

  const identity = new Uint8Array(
    createHash('sha256').update('synthvhd merge v1\u0000').update(imageIdentity(diff.parsed)).update(imageIdentity(parent.parsed)).digest(),
  );
  const disk: DiskImage = {
    layout: diff.layout,
    sectorSize: diff.sectorSize === 4096 ? 4096 : 512,
    identity,
    mtimeMs: diff.mtimeMs,
  };
  const parentVhdx = parent.parsed.format === 'vhdx' ? parent.parsed : undefined;
  const layout =
    format === 'vhd'
      ? buildVhdLayout(disk)
      : buildVhdxLayout(disk, {
          blockSize: parentVhdx?.geometry.blockSize ?? VHDX_DEFAULT_BLOCK_SIZE,
          ...(parentVhdx === undefined ? {} : { page83: parentVhdx.metadata.page83, dataWriteGuid: deriveGuid(identity, 'vhdx-merged-data-write-guid', 'ms') }),
        });
  const write = await writeLayout(layout, output, { force: options.force ?? false, ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }) });

  // The diff's list is the merged disk's list (examples.txt "move ... .blocklist.bin").
  const diffListPath = blocklistPathOf(diff.path);
  let list: string | undefined;
  let listNote: string | undefined;
  try {
    const diffList = await readListFile(diffListPath, diff.path);
    checkBlocklistLength(diffList.bytes, diff.layout.size, diffList.path, diff.path);
    if (diffList.mtimeMs < diff.mtimeMs) {
      listNote = `${diffListPath} is older than ${diff.path}: not copied; run \`synthvhd blocklist create ${output}\``;
    } else {
      list = blocklistPathOf(output);
      await writeListFile(list, diffList.bytes, (await stat(output)).mtimeMs);
    }
  } catch (error) {
    listNote = `${error instanceof Error ? error.message : String(error)}; the merged image has no list: run \`synthvhd blocklist create ${output}\``;
  }
  return { diff: diff.path, parent: parent.path, chain, output, format, diskSize: diff.layout.size, list, listNote, write };
}
