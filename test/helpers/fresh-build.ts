// SPDX-License-Identifier: MIT
/**
 * The suite tests two builds of the same code: in-process tests import `src/` (vitest compiles
 * it on the fly), tests that spawn the CLI or a helper child run `dist/` (helpers/run.ts `CLI`).
 * A plain `vitest run` after an edit would test the new source in-process and the old CLI. So
 * the global setup calls `ensureFreshBuild()` first: when any TypeScript source is newer than
 * its compiled `.js` under `dist/` (or has none), it runs `tsc -p tsconfig.json` and checks
 * again; when everything is up to date it only stats the files (well under a second).
 *
 * The native addon takes a C++ toolchain and half a minute to build, and a half-built addon
 * under a running suite would crash it: it is not built here; a source newer than the addon
 * stops the run with the command to run instead.
 */
import { execFile } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { REPO_ROOT } from './run.js';

/** The folders tsconfig.json compiles (its `include`). */
const TS_ROOTS = ['src', 'fixtures', 'test', 'bench'];
const ADDONS = ['synthvhd_native.node', 'synthvhd_fuse.node'];

async function filesUnder(directory: string, keep: (name: string) => boolean): Promise<string[]> {
  const found: string[] = [];
  let entries;
  try {
    entries = await readdir(directory, { withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return found;
    throw error;
  }
  for (const entry of entries) {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) found.push(...(await filesUnder(path, keep)));
    else if (entry.isFile() && keep(entry.name)) found.push(path);
  }
  return found;
}

async function mtimeOrUndefined(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return undefined;
  }
}

/** TypeScript sources whose `dist/` output is missing or older than they are (relative paths). */
export async function staleOutputs(root = REPO_ROOT): Promise<string[]> {
  const sources = (await Promise.all(TS_ROOTS.map((folder) => filesUnder(join(root, folder), (name) => name.endsWith('.ts') && !name.endsWith('.d.ts'))))).flat();
  const config = (await mtimeOrUndefined(join(root, 'tsconfig.json'))) ?? 0;
  const stale: string[] = [];
  await Promise.all(
    sources.map(async (source) => {
      const rel = relative(root, source);
      const output = await mtimeOrUndefined(join(root, 'dist', rel.replace(/\.ts$/, '.js')));
      const sourceTime = (await mtimeOrUndefined(source)) ?? 0;
      if (output === undefined || output < Math.max(sourceTime, config)) stale.push(rel);
    }),
  );
  return stale.sort();
}

function runTsc(root: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    execFile(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json')], { cwd: root, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error === null) resolvePromise();
      else reject(new Error(`tsc -p tsconfig.json failed (the CLI under dist/ would be stale):\n${stdout}${stderr}`));
    });
  });
}

/** Native sources newer than the oldest built addon (relative paths). */
export async function staleNative(root = REPO_ROOT): Promise<string[]> {
  const built = await Promise.all(ADDONS.map((name) => mtimeOrUndefined(join(root, 'native', 'build', 'Release', name))));
  const oldest = built.some((time) => time === undefined) ? -1 : Math.min(...(built as number[]));
  const sources = [...(await filesUnder(join(root, 'native', 'src'), () => true)), join(root, 'native', 'binding.gyp')];
  const stale: string[] = [];
  for (const source of sources) if (((await mtimeOrUndefined(source)) ?? 0) > oldest) stale.push(relative(root, source));
  return stale;
}

/** Builds `dist/` when it is older than the TypeScript sources; refuses to run on a stale native addon. */
export async function ensureFreshBuild(root = REPO_ROOT): Promise<void> {
  const native = await staleNative(root);
  if (native.length > 0) {
    throw new Error(`the native addon is older than ${native.join(', ')} (or missing): run \`npm run build:native\` before the tests`);
  }
  if ((await staleOutputs(root)).length === 0) return;
  await runTsc(root);
  const still = await staleOutputs(root);
  if (still.length > 0) throw new Error(`tsc ran but these have no up-to-date output under dist/: ${still.join(', ')}`);
}
