// SPDX-License-Identifier: MIT
/**
 * `npm run bench -- <name> [options]`: runs one benchmark (or all with no name). Each prints its
 * numbers and ratios against a baseline measured in the same run; none of them is a pass/fail
 * test. Options after the name go to that benchmark (`npm run bench -- fuse --quick`).
 */
import { loadavg } from 'node:os';

type Bench = () => Promise<void>;

/** Above this 1-minute load average, ratios against single-threaded peers are not a quiet machine's. */
const QUIET_LOAD = 1;
/** How long a benchmark waits for the machine to become quiet before it runs anyway, warned. */
const QUIET_WAIT_MS = 180_000;

/**
 * Prints the load average and, when it is above QUIET_LOAD, waits up to QUIET_WAIT_MS for it to
 * fall, then warns: a multi-threaded daemon looks far better against single-threaded peers on a
 * loaded machine (3.46x xmount measured at load 10 was 0.87x quiet), and an admin's backup
 * server is mostly quiet.
 */
async function awaitQuiet(name: string): Promise<void> {
  const started = Date.now();
  let load = loadavg()[0] ?? 0;
  if (load > QUIET_LOAD) process.stdout.write(`bench ${name}: load average ${load.toFixed(2)} > ${QUIET_LOAD}: waiting up to ${QUIET_WAIT_MS / 1000} s for a quiet machine\n`);
  while (load > QUIET_LOAD && Date.now() - started < QUIET_WAIT_MS) {
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 5_000));
    load = loadavg()[0] ?? 0;
  }
  process.stdout.write(`bench ${name}: load average (1 min) ${load.toFixed(2)} at the start\n`);
  if (load > QUIET_LOAD) {
    process.stdout.write(`WARNING: load average ${load.toFixed(2)} > ${QUIET_LOAD}: the ratios below are NOT a quiet machine's; do not quote them\n`);
  }
}

const BENCHES: Record<string, () => Promise<Bench>> = {
  materialize: async () => (await import('./materialize.js')).runMaterializeBench,
  fuse: async () => {
    const { runFuseBenchmark } = await import('./fuse.js');
    return () => runFuseBenchmark(process.argv.slice(3));
  },
  blocklist: async () => (await import('./blocklist.js')).runBlocklistBench,
  diff: async () => (await import('./diff.js')).runDiffBench,
  fixtures: async () => (await import('./fixture-build.js')).runFixturesBench,
  vhdz: async () => {
    const { runVhdzBench } = await import('./vhdz.js');
    return () => runVhdzBench(process.argv.slice(3));
  },
  'vhdz-scale': async () => {
    const { runVhdzScaleBench } = await import('./vhdz-scale.js');
    return () => runVhdzScaleBench(process.argv.slice(3));
  },
  catalog: async () => {
    const { runCatalogBench } = await import('./catalog.js');
    return () => runCatalogBench(process.argv.slice(3));
  },
};

async function main(): Promise<void> {
  const name = process.argv[2];
  const names = name === undefined ? Object.keys(BENCHES) : [name];
  for (const each of names) {
    const load = BENCHES[each];
    if (load === undefined) {
      process.stderr.write(`bench: unknown benchmark ${each} (known: ${Object.keys(BENCHES).join(', ')})\n`);
      process.exitCode = 2;
      return;
    }
    process.stdout.write(`== bench ${each}\n`);
    await awaitQuiet(each);
    await (await load())();
    process.stdout.write(`bench ${each}: load average (1 min) ${(loadavg()[0] ?? 0).toFixed(2)} at the end (the benchmark's own work included)\n`);
  }
}

await main();
