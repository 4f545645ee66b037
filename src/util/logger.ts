// SPDX-License-Identifier: MIT
/**
 * The one logger: diagnostics go to stderr as `synthvhd: <message>`, filtered by level. Reports
 * and listings are not logs: commands print those to stdout. `--quiet` keeps errors only,
 * `--verbose` adds debug lines; progress bars follow the same switch (none when quiet).
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

let threshold: LogLevel = 'info';
let sink: (line: string) => void = (line) => {
  process.stderr.write(`${line}\n`);
};

export function setLogLevel(level: LogLevel): void {
  threshold = level;
}

export function logLevel(): LogLevel {
  return threshold;
}

/** For tests: capture lines instead of writing them. Returns a function that restores stderr. */
export function setLogSink(write: (line: string) => void): () => void {
  const previous = sink;
  sink = write;
  return () => {
    sink = previous;
  };
}

function emit(level: LogLevel, message: string): void {
  if (RANK[level] > RANK[threshold]) return;
  sink(`synthvhd: ${level === 'info' ? '' : `${level}: `}${message.replace(/\n\s*/g, ' | ')}`);
}

export const logger = {
  error: (message: string): void => {
    emit('error', message);
  },
  warn: (message: string): void => {
    emit('warn', message);
  },
  info: (message: string): void => {
    emit('info', message);
  },
  debug: (message: string): void => {
    emit('debug', message);
  },
};
