// SPDX-License-Identifier: MIT
/**
 * The I/O edge of the container parsers for one file given by the user: opens it read-only,
 * hands ./inspect.ts a read callback, and names the file in every error (the parsers are pure
 * and do not know it).
 */
import { open } from 'node:fs/promises';
import { fileError, SynthvhdError } from '../errors/synthvhd-error.js';
import { parseContainer, type ParsedContainer } from './inspect.js';

/** Parses the .vhd/.vhdx at `path` (absolute); `size` is the file's size. */
export async function parseContainerFile(path: string): Promise<{ parsed: ParsedContainer; size: number }> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw fileError('E_USAGE', path, `cannot open: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, error);
  }
  try {
    const { size } = await handle.stat();
    const read = async (position: number, length: number): Promise<Uint8Array> => {
      const buffer = new Uint8Array(length);
      const { bytesRead } = await handle.read(buffer, 0, length, position);
      return buffer.subarray(0, bytesRead);
    };
    try {
      return { parsed: await parseContainer(read, size), size };
    } catch (error) {
      if (error instanceof SynthvhdError && error.path === undefined) throw fileError(error.code, path, error.message, error);
      throw error;
    }
  } finally {
    await handle.close();
  }
}
