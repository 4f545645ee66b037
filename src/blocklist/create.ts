// SPDX-License-Identifier: MIT
/**
 * `blocklist create`: VhdBlockBackup's `--createmeta` (Program.cs `CreateMeta`). The list of an
 * image goes beside it; the list of a urBackup backup's whole disk goes into the cache directory.
 */
import { stat } from 'node:fs/promises';
import { fileError } from '../errors/synthvhd-error.js';
import { computeCachedBlocklist } from './cache.js';
import { type HashOptions, type HashResult, hashDisk } from './hash.js';
import { writeListFile } from './list-file.js';
import { type ListSubject, openSubject } from './subject.js';

export interface CreateOptions extends HashOptions {
  readonly cacheDir?: string;
}

export interface CreateReport {
  readonly kind: ListSubject['kind'];
  readonly image: string;
  readonly list: string;
  readonly diskSize: number;
  readonly blocks: number;
  readonly zeroBlocks: number;
  readonly hashedBytes: number;
  readonly workers: number;
  readonly seconds: number;
}

function reportOf(subject: ListSubject, list: string, result: HashResult): CreateReport {
  return {
    kind: subject.kind,
    image: subject.label,
    list,
    diskSize: subject.layout.size,
    blocks: result.blocks,
    zeroBlocks: result.zeroBlocks,
    hashedBytes: result.hashedBytes,
    workers: result.workers,
    seconds: result.seconds,
  };
}

/** Hashes the disk of `subject` and writes its list; returns the hashes too (copy --createmeta). */
export async function createListFor(subject: ListSubject, options: HashOptions = {}): Promise<{ report: CreateReport; list: Uint8Array }> {
  if (subject.kind === 'backup') {
    const cached = await computeCachedBlocklist(subject.cacheDir, subject.anchor, subject.disk, options);
    return { report: reportOf(subject, cached.path, cached.result), list: cached.result.list };
  }
  const image = subject.image;
  const result = await hashDisk(subject.layout, options);
  // A list must describe the image as it is: refuse to write one for an image that changed
  // while it was being read (its list would look fresh and be wrong).
  const after = await stat(image.path);
  if (after.mtimeMs !== image.mtimeMs || after.size !== image.fileSize) {
    throw fileError('E_IO', image.path, 'changed while it was being hashed: no list written; run the command again when nothing writes to it');
  }
  await writeListFile(subject.listPath, result.list, image.mtimeMs);
  return { report: reportOf(subject, subject.listPath, result), list: result.list };
}

export async function createBlocklist(argument: string, options: CreateOptions = {}): Promise<CreateReport> {
  const subject = await openSubject(argument, options.cacheDir);
  return (await createListFor(subject, options)).report;
}
