// SPDX-License-Identifier: MIT
/**
 * A `.disk_diff.vhdx` whose plan must read both volumes (no `.raw.hash`: nothing decides the
 * chunks without reading) is built in the background: the lookup that starts it answers at once
 * with ENOENT, while the mount reads the volumes (the kernel's count for the mount process says
 * so), and the diff is listed and found once built. The build is held by a test hook until the
 * lookup was answered, so the order does not depend on the machine's speed. Works on copies of
 * the UEFI fixture's two runs.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { fixtureDisk } from './helpers/fixture-disk.js';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { processIo } from './helpers/io-witness.js';

const execFileAsync = promisify(execFile);
const fixtures = inject('fixtures');
let base: string;

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'synthvhd-diff-bg-'));
  const client = join(base, 'backups', 'pc');
  await mkdir(client, { recursive: true });
  for (const name of ['uefi-gpt-run1', 'uefi-gpt-run2']) {
    for (const volume of fixtureDisk(fixtures, name).volumes) {
      await execFileAsync('cp', ['-a', '--sparse=always', volume.backupDir, client]);
      await unlink(join(client, basename(volume.backupDir), `${basename(volume.rawPath)}.hash`));
    }
  }
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

describe('a diff that must read both volumes', () => {
  it('is planned in the background: the first lookup answers ENOENT at once, the diff appears when built', async () => {
    const run2 = fixtureDisk(fixtures, 'uefi-gpt-run2');
    const root = join(base, 'backups');
    const mountpoint = await tempMountpoint();
    let mount: MountedChild | undefined;
    try {
      // The build waits for `gate` (the SYNTHVHD_TEST_HOLD_BACKGROUND test hook,
      // src/util/test-hold.ts), so the lookup below is surely answered while it is pending.
      const gate = join(base, 'gate');
      mount = await startMount(root, mountpoint.path, [], 30_000, { SYNTHVHD_TEST_HOLD_BACKGROUND: gate });
      const folder = join(mountpoint.path, 'pc', basename(run2.anchor.backupDir));
      const diffName = `Image_C_${run2.anchor.timestamp}.disk_diff.vhdx`;
      const pid = mount.child.pid ?? -1;
      // The lookup starts the plan and does not wait for it.
      await expect(stat(join(folder, diffName))).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await readdir(folder)).not.toContain(diffName);
      const before = await processIo(pid);
      await writeFile(gate, '');
      for (let attempt = 0; !(await readdir(folder)).includes(diffName); attempt++) {
        if (attempt === 600) throw new Error(`no diff listed after 60 s\n${mount.stderr()}`);
        await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
      }
      // Built by reading both C: volumes (their allocated bytes), not from hashes.
      const allocated = (await Promise.all(['uefi-gpt-run1', 'uefi-gpt-run2'].map(async (name) => (await stat(fixtureDisk(fixtures, name).anchor.rawPath)).blocks * 512))).reduce((a, b) => a + b, 0);
      expect((await processIo(pid)).rchar - before.rchar).toBeGreaterThanOrEqual(allocated * 0.9);
      const info = await stat(join(folder, diffName));
      expect(info.size).toBeGreaterThan(0);
      expect(info.size).toBeLessThan((await stat(join(folder, `Image_C_${run2.anchor.timestamp}.disk.vhdx`))).size);
      expect(mount.stderr()).toBe('');
    } finally {
      await mount?.stop();
      await mountpoint.cleanup();
    }
  });
});
