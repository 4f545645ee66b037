// SPDX-License-Identifier: MIT
/** `synthvhd inspect FILE`: what a .vhd/.vhdx says about itself; `--map` is ./inspect-map.ts. */
import { resolve } from 'node:path';
import { describeContainer } from '../../container/inspect.js';
import { parseContainerFile } from '../../container/read-container-file.js';
import { fileError } from '../../errors/synthvhd-error.js';

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
  const { parsed, size } = await parseContainerFile(path);
  const info = describeContainer(parsed);
  if (options.json === true) {
    process.stdout.write(`${JSON.stringify({ path, fileSize: size, ...info }, null, 2)}\n`);
  } else {
    const lines: string[] = [`file: ${path}`, `fileSize: ${size}`];
    flatten(info, '', lines);
    process.stdout.write(`${lines.join('\n')}\n`);
  }
}
