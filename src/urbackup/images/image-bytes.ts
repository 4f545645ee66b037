// SPDX-License-Identifier: MIT
/**
 * Reads bytes of an ImageLayout (./image-extent.ts): `file` by positional read, `zero` by fill,
 * `bytes` by copy, `compressed` by decoding the block once into a bytes-bounded LRU
 * (lru-cache `maxSize`) shared by every layout read through this object. Used to read a served
 * image's first sectors (the synthetic MBR, the volume's boot sector) and by tests; records are
 * decoded by the native codec on the libuv pool (src/extents/compressed-record.ts). A block is
 * named by file, record and the length it must decode to (src/extents/decoded-blocks.ts says why).
 */
import type { FileHandle } from 'node:fs/promises';
import { bitmapReaderOf, resolveChainExtent } from '../../extents/vhd-chain.js';
import { LRUCache } from 'lru-cache';
import { SynthvhdError, fileError } from '../../errors/synthvhd-error.js';
import { readCompressedRecord } from '../../extents/compressed-record.js';
import { blockKey } from '../../extents/decoded-blocks.js';
import type { SourceOpener } from './image-file.js';
import { type ImageLayout, findImageExtentIndex } from './image-extent.js';

/** Decoded blocks kept by default: 32 MiB (16 urBackup blocks). */
export const DEFAULT_DECODED_CACHE_BYTES = 32 * 1024 * 1024;

export class ImageBytes {
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private readonly blocks: LRUCache<string, Uint8Array>;
  private readonly pending = new Map<string, Promise<Uint8Array>>();

  constructor(
    private readonly opener: SourceOpener,
    cacheBytes = DEFAULT_DECODED_CACHE_BYTES,
  ) {
    this.blocks = new LRUCache<string, Uint8Array>({ maxSize: cacheBytes, sizeCalculation: (block) => Math.max(1, block.length) });
  }

  private handle(path: string): Promise<FileHandle> {
    let handle = this.handles.get(path);
    if (handle === undefined) {
      handle = this.opener(path, 'urBackup image');
      handle.catch(() => this.handles.delete(path));
      this.handles.set(path, handle);
    }
    return handle;
  }

  /** The decoded block of record `record` of `path`, exactly `blockLength` bytes (decoded once while cached). */
  async block(path: string, record: number, blockLength: number): Promise<Uint8Array> {
    const key = blockKey({ path, record, blockLength });
    const cached = this.blocks.get(key);
    if (cached !== undefined) return cached;
    let pending = this.pending.get(key);
    if (pending === undefined) {
      // The codec bounds the record's stored size and refuses one that runs past the file's end.
      pending = (async () => readCompressedRecord(await this.handle(path), path, record, blockLength))();
      this.pending.set(key, pending);
    }
    try {
      const block = await pending;
      this.blocks.set(key, block);
      return block;
    } finally {
      this.pending.delete(key);
    }
  }

  /** Bytes [position, position + length) of `layout` (short only at its end). */
  async read(layout: ImageLayout, position: number, length: number): Promise<Uint8Array> {
    const total = Math.max(0, Math.min(length, layout.size - position));
    const out = new Uint8Array(total);
    let done = 0;
    for (let index = total === 0 ? layout.extents.length : findImageExtentIndex(layout, position); done < total; index++) {
      const extent = layout.extents[index];
      if (extent === undefined) throw new SynthvhdError('E_INTERNAL', 'internal error (please report): layout ends early');
      const at = position + done;
      const skip = at - extent.start;
      const count = Math.min(total - done, extent.start + extent.length - at);
      switch (extent.kind) {
        case 'zero':
          break;
        case 'bytes':
          out.set(extent.data.subarray(skip, skip + count), done);
          break;
        case 'file': {
          const handle = await this.handle(extent.path);
          let got = 0;
          while (got < count) {
            const { bytesRead } = await handle.read(out, done + got, count - got, extent.offset + skip + got);
            if (bytesRead === 0) throw new SynthvhdError('E_IO', `${extent.path}: unexpected end of file at ${extent.offset + skip + got}`);
            got += bytesRead;
          }
          break;
        }
        case 'compressed': {
          const block = await this.block(extent.path, extent.record, extent.blockLength);
          const from = extent.skip + skip;
          // Never copy short: a piece outside the block is an error, not fewer bytes.
          if (block.length !== extent.blockLength || from + count > block.length) {
            throw fileError('E_IO', extent.path, `block record at ${extent.record}: bytes ${from}..${from + count} are outside its ${block.length}-byte block`);
          }
          out.set(block.subarray(from, from + count), done);
          break;
        }
        case 'chain': {
          // Its sector bitmaps say which file holds each sector (src/extents/vhd-chain.ts).
          const bitmaps = bitmapReaderOf(extent.chain, (bitmap) => this.read(bitmap, 0, bitmap.size));
          const resolved = await resolveChainExtent(extent, skip, count, bitmaps);
          out.set(await this.read(resolved, 0, count), done);
          break;
        }
      }
      done += count;
    }
    return out;
  }

  async close(): Promise<void> {
    // A decode in flight holds its handle's fd: let it settle before closing.
    await Promise.allSettled([...this.pending.values()]);
    const all = [...this.handles.values()];
    this.handles.clear();
    this.blocks.clear();
    await Promise.allSettled(all.map(async (handle) => (await handle).close()));
  }
}
