// SPDX-License-Identifier: MIT
/**
 * `npm run bench -- <name> [options]`: runs one benchmark (or all with no name). Each prints its
 * numbers and ratios against a baseline measured in the same run; none of them is a pass/fail
 * test. Options after the name go to that benchmark (`npm run bench -- fuse --quick`).
 */
type Bench = () => Promise<void>;

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
    await (await load())();
  }
}

await main();
