// SPDX-License-Identifier: MIT
/** A one-line progress bar on a terminal's stderr; nothing at all on a pipe or file, or with --quiet. */
import { logLevel } from '../util/logger.js';

export interface Progress {
  update(done: number, total: number): void;
  finish(): void;
}

const silent: Progress = { update: () => undefined, finish: () => undefined };

export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY || logLevel() === 'error') return silent;
  let lastDrawn = 0;
  return {
    update(done, total) {
      const now = Date.now();
      if (now - lastDrawn < 100 && done < total) return;
      lastDrawn = now;
      const fraction = total === 0 ? 1 : done / total;
      const width = 30;
      const filled = Math.round(fraction * width);
      stream.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(1)}%`);
    },
    finish() {
      stream.write('\r\x1b[K');
    },
  };
}
