// SPDX-License-Identifier: MIT
/** An ImageFile over bytes in memory (property tests open thousands of mutated files). */
import type { FileHandle } from 'node:fs/promises';
import { ImageFile } from '../../src/urbackup/images/image-file.js';

/** The part of FileHandle that ImageFile uses, over `bytes`. */
function memoryHandle(bytes: Uint8Array): FileHandle {
  const handle = {
    read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number; buffer: Uint8Array }> {
      const piece = bytes.subarray(position, Math.min(bytes.length, position + length));
      buffer.set(piece, offset);
      return Promise.resolve({ bytesRead: piece.length, buffer });
    },
    stat(): Promise<{ size: number; mtimeMs: number; dev: bigint; ino: bigint }> {
      return Promise.resolve({ size: bytes.length, mtimeMs: 0, dev: 0n, ino: 0n });
    },
    close(): Promise<void> {
      return Promise.resolve();
    },
  };
  return handle as unknown as FileHandle;
}

export function memoryImageFile(bytes: Uint8Array): Promise<ImageFile> {
  return ImageFile.open('/memory/image.vhdz', () => Promise.resolve(memoryHandle(bytes)), 'urBackup image');
}
