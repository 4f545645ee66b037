// SPDX-License-Identifier: MIT
/**
 * Splits a `file` extent into what FICLONERANGE can share and what must be copied. The kernel
 * (fs/remap_range.c generic_remap_checks) needs the source offset, the destination offset and
 * the length aligned to the file system block; an unaligned tail could only be cloned at the
 * source's EOF onto the destination's EOF, which a pre-sized output never is. So: copy the
 * unaligned head, clone the aligned middle, copy the unaligned tail. When the two offsets are
 * not aligned alike (a volume at sector 63), nothing can be shared and it is all copied.
 */
export interface RangePiece {
  readonly action: 'clone' | 'copy';
  /** Offset in the output file. */
  readonly destination: number;
  /** Offset in the source file. */
  readonly source: number;
  readonly length: number;
}

export function planClone(destination: number, source: number, length: number, blockSize: number): RangePiece[] {
  if (destination % blockSize !== source % blockSize) return [{ action: 'copy', destination, source, length }];
  const head = Math.min(length, (blockSize - (destination % blockSize)) % blockSize);
  const middle = Math.floor((length - head) / blockSize) * blockSize;
  const tail = length - head - middle;
  const pieces: RangePiece[] = [];
  if (head > 0) pieces.push({ action: 'copy', destination, source, length: head });
  if (middle > 0) pieces.push({ action: 'clone', destination: destination + head, source: source + head, length: middle });
  if (tail > 0) pieces.push({ action: 'copy', destination: destination + head + middle, source: source + head + middle, length: tail });
  return pieces;
}
