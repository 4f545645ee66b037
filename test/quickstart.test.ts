// SPDX-License-Identifier: MIT
/**
 * The README's Quick start, as a newcomer meets it: a fresh `git clone` of this repository (so
 * only committed files travel), its first command `./scripts/quickstart.sh` (setup, fixture
 * backups, ls, materialize, qemu-img check) and then its test command, restricted to two fast
 * files (the whole suite from inside the suite would recurse). Needs the npm registry (npm ci).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { REPO_ROOT, runOk, type RunResult } from './helpers/run.js';

/** The environment a person's shell would have: none of this test run's own markers. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(VITEST|TEST$|NODE_ENV$|npm_lifecycle_|npm_package_|npm_command$|INIT_CWD$)/.test(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

function runIn(cwd: string, command: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    execFile(command, [...args], { cwd, env, maxBuffer: 64 * 1024 * 1024, timeout: 540_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolvePromise({ code, stdout, stderr });
    });
  });
}

it('a fresh clone runs the Quick start: quickstart.sh ends with qemu-img finding no errors, then npm test passes', { timeout: 600_000 }, async () => {
  const readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
  const quickStart = /## Quick start\n[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  const commands = quickStart.split('\n').map((line) => line.replace(/#.*$/, '').trim()).filter((line) => line !== '');
  expect(commands).toEqual(['./scripts/quickstart.sh', 'npm test']);

  const work = await mkdtemp(join(tmpdir(), 'synthvhd-quickstart-'));
  try {
    const clone = join(work, 'synthvhd');
    const demo = join(work, 'demo');
    await runOk('git', ['clone', '--quiet', REPO_ROOT, clone]);
    const env = cleanEnv({ SYNTHVHD_DEMO_DIR: demo });

    const quickstart = await runIn(clone, './scripts/quickstart.sh', [], env);
    expect(quickstart.code, `${quickstart.stdout}\n${quickstart.stderr}`).toBe(0);
    expect(quickstart.stdout).toContain('No errors were found');
    expect(quickstart.stdout).toContain(`== synthvhd ls ${demo}/backups`);

    const tests = await runIn(clone, 'npm', ['test', '--', 'test/extents.test.ts', 'test/mbr-data.test.ts'], env);
    expect(tests.code, `${tests.stdout}\n${tests.stderr}`).toBe(0);
    const ansi = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');
    expect(tests.stdout.replace(ansi, '')).toMatch(/Test Files +2 passed/);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});
