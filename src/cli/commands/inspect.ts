// SPDX-License-Identifier: MIT
/** `synthvhd inspect FILE`: what a .vhd/.vhdx says about itself; `--map` is ./inspect-map.ts. */
import { open } from 'node:fs/promises';
import { resolve } from 'node:path';
import { inspectContainer } from '../../container/inspect.js';
import { fileError, SynthvhdError } from '../../errors/synthvhd-error.js';

export interface InspectOptions {
  readonly json?: boolean;
  readonly map?: boolean;
  readonly offset?: string;
}

function flatten(value: unknown, prefix: string, lines: string[]): void {
  if (value === undefined) return;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix === '' ? key : `${prefix}.${key}`, lines);
    return;
  }
  lines.push(`${prefix}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
}

export async function inspectCommand(file: string, options: InspectOptions): Promise<void> {
  if (options.map === true) {
    const { inspectMapCommand } = await import('./inspect-map.js');
    await inspectMapCommand(file, options);
    return;
  }
  if (options.offset !== undefined) throw fileError('E_USAGE', '--offset', 'only goes with --map');
  const path = resolve(file);
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
    let info;
    try {
      info = await inspectContainer(read, size);
    } catch (error) {
      if (error instanceof SynthvhdError && error.path === undefined) throw fileError(error.code, path, error.message, error);
      throw error;
    }
    if (options.json === true) {
      process.stdout.write(`${JSON.stringify({ path, fileSize: size, ...info }, null, 2)}\n`);
    } else {
      const lines: string[] = [`file: ${path}`, `fileSize: ${size}`];
      flatten(info, '', lines);
      process.stdout.write(`${lines.join('\n')}\n`);
    }
  } finally {
    await handle.close();
  }
}
