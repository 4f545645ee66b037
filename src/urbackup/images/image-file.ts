// SPDX-License-Identifier: MIT
/**
 * One file of a urBackup image backup (`.vhd`, `.vhdz`, `.vhdx`, `.vhdxz`) opened read-only:
 * its bytes as urBackup's reader sees them. A compressed file (recognised by its magic, not its
 * name: `urbackupsrv decompress-file` leaves a plain VHD named `.vhdz`) is read through its
 * index, decoding blocks (the native record codec, src/extents/compressed-record.ts) into a small
 * cache; a plain file is read directly.
 * This is the I/O half of ./compressed-file.ts; used to parse headers, BATs and bitmaps, and by
 * tests to read extents. Serving reads goes through the extent readers, not through here.
 */
import type { FileHandle } from 'node:fs/promises';
import { SynthvhdError, fileError, isSynthvhdError } from '../../errors/synthvhd-error.js';
import { readCompressedRecord } from '../../extents/compressed-record.js';
import {
  COMPRESSED_HEADER_READ,
  type CompressedContainer,
  blockCount,
  indexLength,
  isCompressedFile,
  parseCompressedHeader,
  parseCompressedIndex,
} from './compressed-file.js';

/** Opens a source file read-only (the confined open of src/extents/confined-open.ts in production). */
export type SourceOpener = (path: string, role: string) => Promise<FileHandle>;

/** A file's identity on this machine: st_dev and st_ino (64-bit, hence bigint). */
export interface FileId {
  readonly dev: bigint;
  readonly ino: bigint;
}

async function preadExactly(handle: FileHandle, path: string, position: number, length: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(buffer, done, length - done, position + done));
    } catch (error) {
      throw fileError('E_IO', path, `read failed at ${position + done}: ${(error as Error).message}`, error);
    }
    if (bytesRead === 0) throw fileError('E_CONTAINER', path, `unexpected end of file at ${position + done} (truncated?)`);
    done += bytesRead;
  }
  return buffer;
}

/** Decoded blocks kept while parsing (headers, BAT, bitmaps are read in file order). */
const PARSE_CACHE_BLOCKS = 8;

/**
 * Decode buffers of closed files, reused by the next files opened (16 MiB at most). Opening a
 * .vhdz decodes at least its first and last 2 MiB blocks; a mount listing a client with 30
 * incrementals opened some 500 of them, and as fresh buffers each was external memory that made
 * V8 collect (35 % of the mount's time). Reuse cut that; parsing each file once
 * (open-image-backup.ts) did the rest.
 */
const spareBuffers: Uint8Array[] = [];
const MAX_SPARE_BUFFER_BYTES = 16 * 1024 * 1024;

function takeBuffer(length: number): Uint8Array {
  const index = spareBuffers.findIndex((buffer) => buffer.length === length);
  if (index < 0) return new Uint8Array(length);
  const [buffer] = spareBuffers.splice(index, 1);
  return buffer ?? new Uint8Array(length);
}

function giveBuffer(buffer: Uint8Array): void {
  const kept = spareBuffers.reduce((sum, each) => sum + each.length, 0);
  if (kept + buffer.length <= MAX_SPARE_BUFFER_BYTES) spareBuffers.push(buffer);
}

export class ImageFile {
  private readonly cache = new Map<number, Promise<Uint8Array>>();
  /** Decodes in flight: each holds the handle's fd (close waits for them). */
  private readonly decoding = new Set<Promise<Uint8Array>>();
  /**
   * The decode buffers this file took (takeBuffer): given back when it is closed. Nothing outside
   * the file holds them: read() copies out of its blocks.
   */
  private readonly buffers: Uint8Array[] = [];

  private constructor(
    readonly path: string,
    readonly handle: FileHandle,
    /** Size on disk. */
    readonly fileSize: number,
    readonly mtimeMs: number,
    /** The container, when the file is urBackup-compressed. */
    readonly container: CompressedContainer | undefined,
  ) {}

  /** The size of the VHD/VHDX (the logical size of a compressed file). */
  get size(): number {
    return this.container?.header.logicalSize ?? this.fileSize;
  }

  /**
   * Opens `path`. `identify` sees the file's (device, inode) before anything of it is read (a
   * chain's loop check: a path string cannot tell that `sub/../x`, a symlinked folder or a hard
   * link is a file already seen).
   */
  static async open(path: string, opener: SourceOpener, role: string, identify?: (id: FileId) => void): Promise<ImageFile> {
    const handle = await opener(path, role);
    try {
      if (identify !== undefined) {
        const { dev, ino } = await handle.stat({ bigint: true });
        identify({ dev, ino });
      }
      const info = await handle.stat();
      const head = info.size >= 25 ? await preadExactly(handle, path, 0, Math.min(COMPRESSED_HEADER_READ, info.size)) : new Uint8Array(0);
      if (!isCompressedFile(head)) return new ImageFile(path, handle, info.size, info.mtimeMs, undefined);
      try {
        const header = parseCompressedHeader(head, info.size);
        const offsets = parseCompressedIndex(await preadExactly(handle, path, header.indexOffset, indexLength(header)), header);
        const partial: CompressedContainer = { path, header, offsets, lastBlockLength: header.blockSize };
        const file = new ImageFile(path, handle, info.size, info.mtimeMs, partial);
        const last = blockCount(header) - 1;
        const lastRecord = offsets[last] ?? -1;
        if (lastRecord === -1) return file;
        // The last block decodes to what urBackup compressed (a whole block; fillCache accepts it
        // shorter, down to what the size needs): learn it.
        const needed = header.logicalSize - last * header.blockSize;
        const buffer = takeBuffer(header.blockSize);
        let decoded: Uint8Array;
        try {
          decoded = await readCompressedRecord(handle, path, lastRecord, header.blockSize, needed, buffer);
        } catch (error) {
          giveBuffer(buffer);
          throw error;
        }
        const container = { ...partial, lastBlockLength: decoded.length };
        const done = new ImageFile(path, handle, info.size, info.mtimeMs, container);
        done.buffers.push(buffer);
        done.cache.set(last, Promise.resolve(decoded));
        return done;
      } catch (error) {
        if (isSynthvhdError(error) && error.path === undefined) throw fileError(error.code, path, error.message, error);
        throw error;
      }
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /** Reads [position, position + length) of the VHD/VHDX; short only at its end. */
  async read(position: number, length: number): Promise<Uint8Array> {
    const count = Math.max(0, Math.min(length, this.size - position));
    const container = this.container;
    if (container === undefined) {
      return count === 0 ? new Uint8Array(0) : preadExactly(this.handle, this.path, position, count);
    }
    const out = new Uint8Array(count);
    const { blockSize } = container.header;
    let done = 0;
    while (done < count) {
      const at = position + done;
      const block = Math.floor(at / blockSize);
      const skip = at - block * blockSize;
      const piece = Math.min(count - done, blockSize - skip);
      const decoded = await this.block(block);
      out.set(decoded.subarray(skip, skip + piece), done);
      done += piece;
    }
    return out;
  }

  private block(block: number): Promise<Uint8Array> {
    const container = this.container;
    if (container === undefined) throw new SynthvhdError('E_INTERNAL', 'internal error (please report): block() of a plain file');
    const cached = this.cache.get(block);
    if (cached !== undefined) {
      this.cache.delete(block);
      this.cache.set(block, cached);
      return cached;
    }
    const record = container.offsets[block] ?? -1;
    const length = block === blockCount(container.header) - 1 ? container.lastBlockLength : container.header.blockSize;
    let decoded: Promise<Uint8Array>;
    if (record === -1) {
      decoded = Promise.resolve(new Uint8Array(length));
    } else {
      const buffer = takeBuffer(length);
      this.buffers.push(buffer);
      decoded = readCompressedRecord(this.handle, this.path, record, length, undefined, buffer);
    }
    decoded.catch(() => this.cache.delete(block));
    this.decoding.add(decoded);
    const settled = (): void => {
      this.decoding.delete(decoded);
    };
    decoded.then(settled, settled);
    this.cache.set(block, decoded);
    while (this.cache.size > PARSE_CACHE_BLOCKS) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
    }
    return decoded;
  }

  async close(): Promise<void> {
    // A decode in flight holds the handle's fd (and its buffer): let it settle before closing.
    this.cache.clear();
    await Promise.allSettled([...this.decoding]);
    for (const buffer of this.buffers.splice(0)) giveBuffer(buffer);
    await this.handle.close();
  }
}
