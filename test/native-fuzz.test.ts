// SPDX-License-Identifier: MIT
/**
 * The native read core under AddressSanitizer and UBSan (native/fuzz/): its unit tests, then each
 * libFuzzer target for a fixed, deterministic budget (-runs, -seed=1) from its committed seed
 * corpus (real records and extent tables of fixture images: fixtures/fuzz-seeds.ts). Any crash, any
 * sanitizer report and any broken invariant makes the binary exit non-zero: the test fails with its
 * report. A longer session: README, "Fuzzing the native read core".
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, run } from './helpers/run.js';

const FUZZ = join(REPO_ROOT, 'native', 'fuzz');
const BUILD = join(FUZZ, 'build');
// Runs per target: about 10 s of CPU in all (the codec decodes 2 MiB blocks, the others are cheap).
const TARGETS: readonly (readonly [string, number])[] = [
  ['fuzz_read_walk', 10_000],
  ['fuzz_extent_table', 20_000],
  ['fuzz_record_codec', 1_500],
  ['fuzz_chain_read', 5_000],
];

const clang = spawnSync('clang++-14', ['--version']).status === 0;
const libfuzzer = existsSync('/usr/lib/llvm-14/lib/libFuzzer.a') || existsSync('/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a');
const skip = !clang || !libfuzzer ? 'needs clang-14, libfuzzer-14-dev and libclang-rt-14-dev (scripts/setup.sh)' : undefined;

let work: string;

/** What a sanitizer or a FUZZ_CHECK prints when something is wrong. */
const REPORT = /ERROR: AddressSanitizer|ERROR: libFuzzer|runtime error:|invariant broken|SUMMARY: /;

describe.skipIf(skip !== undefined)(`the native read core under sanitizers${skip === undefined ? '' : ` (skipped: ${skip})`}`, () => {
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'synthvhd-fuzz-'));
    const built = await run('make', ['-C', FUZZ, '-j2', 'all']);
    if (built.code !== 0) throw new Error(`make -C native/fuzz failed\n${built.stdout}\n${built.stderr}`);
  }, 900_000);

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('passes its unit tests (the read walk, the block cache, the codec, a record shared by two block lengths, VHD chains)', async () => {
    const result = await run(join(BUILD, 'unit_tests'), []);
    expect(result.stderr).not.toMatch(REPORT);
    expect(result.stdout).toMatch(/^ok a record shared by a full and a short block: EIO, no over-read$/m);
    expect(result.stdout).not.toMatch(/^FAIL/m);
    expect(result.stdout).toMatch(/^ok VHD chains: reads equal urBackup's sector rule; a damaged bitmap is EIO naming the block$/m);
    expect(result.stdout).toMatch(/^all passed$/m);
    expect(result.code).toBe(0);
  }, 300_000);

  it.each(TARGETS)('%s survives %i deterministic runs from its seed corpus', async (target, runs) => {
    const corpus = join(FUZZ, 'corpus', target);
    expect(existsSync(corpus)).toBe(true);
    const scratch = join(work, target);
    await run('mkdir', ['-p', scratch]);
    // New inputs go to the scratch directory (the first); the committed seeds are only read.
    const result = await run(join(BUILD, target), [`-runs=${runs}`, '-seed=1', '-timeout=60', '-rss_limit_mb=2048', `-artifact_prefix=${scratch}/`, scratch, corpus]);
    expect(result.stderr).not.toMatch(REPORT);
    expect(result.stderr).toMatch(new RegExp(`^Done ${runs} runs in \\d+ second`, 'm'));
    expect(result.code).toBe(0);
  }, 600_000);
});
