// SPDX-License-Identifier: MIT
/**
 * Serves bytes of a Layout: find the first extent by binary search, then clamp-and-loop over
 * extents, filling the caller's buffer directly (`bytes` copy, `file` positional read, `zero`
 * fill, `compressed` a copy out of the decoded block, ./source-files.ts). No intermediate buffers
 * beyond the decoded-block cache.
 */
import { type ChainExtent, type Layout, extentEnd, findExtentIndex } from './extent.js';
import { type BitmapReader, type VhdChain, bitmapReaderOf, resolveChainExtent } from './vhd-chain.js';
import type { SourceFiles } from './source-files.js';
import { internalError } from '../errors/synthvhd-error.js';

/**
 * Reads up to `length` bytes at `position` into `into[intoOffset...]`; returns the number of
 * bytes read (short only at the end of the layout). Independent `file` pieces are read
 * concurrently. When one fails, it still waits for every other piece before rejecting: the
 * FUSE layer hands `into` back to libfuse (which reuses it) as soon as this settles, so no read
 * may still be writing into it then.
 */
export async function readAt(
  layout: Layout,
  sources: SourceFiles,
  position: number,
  into: Uint8Array,
  length = into.length,
  intoOffset = 0,
): Promise<number> {
  const total = Math.max(0, Math.min(length, layout.size - position));
  if (total === 0) return 0;
  const pending: Promise<void>[] = [];
  let done = 0;
  for (let index = findExtentIndex(layout, position); done < total; index++) {
    const extent = layout.extents[index];
    if (extent === undefined) throw internalError(`layout ends before ${position + done}`);
    const at = position + done;
    const skip = at - extent.start;
    const count = Math.min(total - done, extentEnd(extent) - at);
    const target = intoOffset + done;
    switch (extent.kind) {
      case 'bytes':
        into.set(extent.data.subarray(skip, skip + count), target);
        break;
      case 'zero':
        into.fill(0, target, target + count);
        break;
      case 'file':
        pending.push(sources.readFully(extent.path, extent.offset + skip, into, target, count));
        break;
      case 'compressed':
        pending.push(sources.readCompressed(extent, skip, into, target, count));
        break;
      case 'chain':
        pending.push(readChain(extent, skip, sources, into, target, count));
        break;
    }
    done += count;
  }
  if (pending.length === 1) {
    await pending[0];
  } else if (pending.length > 1) {
    const failed = (await Promise.allSettled(pending)).find((result) => result.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }
  return total;
}

/** Reads a chain's sector bitmaps through `sources` (./vhd-chain.ts). */
export function chainBitmaps(chain: VhdChain, sources: SourceFiles): BitmapReader {
  return bitmapReaderOf(chain, async (layout) => {
    const bytes = new Uint8Array(layout.size);
    await readAt(layout, sources, 0, bytes);
    return bytes;
  });
}

/** A chain extent's bytes: its sector bitmaps say which file holds each sector (./vhd-chain.ts). */
async function readChain(extent: ChainExtent, skip: number, sources: SourceFiles, into: Uint8Array, intoOffset: number, length: number): Promise<void> {
  const resolved = await resolveChainExtent(extent, skip, length, chainBitmaps(extent.chain, sources));
  await readAt(resolved, sources, 0, into, length, intoOffset);
}
