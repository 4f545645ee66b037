// SPDX-License-Identifier: MIT
import { afterEach, describe, expect, it } from 'vitest';
import { logger, setLogLevel, setLogSink } from '../src/util/logger.js';
import { synthvhd } from './helpers/run.js';

describe('logger', () => {
  let restore: () => void = () => undefined;
  afterEach(() => {
    restore();
    setLogLevel('info');
  });

  it('filters by level and keeps every message on one line', () => {
    const lines: string[] = [];
    restore = setLogSink((line) => lines.push(line));
    for (const level of ['error', 'info', 'debug'] as const) {
      setLogLevel(level);
      logger.error('e');
      logger.warn('w');
      logger.info('i');
      logger.debug('two\n   lines');
    }
    expect(lines).toEqual([
      'synthvhd: error: e',
      'synthvhd: error: e', 'synthvhd: warn: w', 'synthvhd: i',
      'synthvhd: error: e', 'synthvhd: warn: w', 'synthvhd: i', 'synthvhd: debug: two | lines',
    ]);
  });

  it('the CLI takes --quiet and --verbose before the command, and names a missing root', async () => {
    const result = await synthvhd(['--quiet', 'ls', '/nonexistent-synthvhd-root']);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('synthvhd: /nonexistent-synthvhd-root: does not exist\n');
    expect((await synthvhd(['--verbose', 'ls', '--help'])).code).toBe(0);
  });
});
