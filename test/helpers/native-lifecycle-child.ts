// SPDX-License-Identifier: MIT
/**
 * The native FUSE session's lifecycle edges, in a CHILD process (a test must never read a mount
 * its own main thread serves): `node dist/test/helpers/native-lifecycle-child.js SCENARIO
 * MOUNTPOINT [SOURCE]`. Prints one line per step on stdout.
 *
 *   throw     the raw addon with a dispatch that throws on the lookup of /boom (a JS bug); other
 *             lookups answer ENOENT. Prints "ready"; SIGTERM unmounts and exits.
 *   remount   mounts, unmounts, waits for the end, then mounts the same session again: prints
 *             "remount refused: <message>" or "remount accepted".
 *   teardown  a worker thread serves /file.img (the bytes of SOURCE); the main thread opens and
 *             reads it, terminates the worker while the file is open and the loop runs, reads
 *             again ("read after teardown ok" or "... mismatch"/"... error <code>"), closes it and
 *             waits for the mount to leave ("unmounted" or "still mounted").
 */
import { constants } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { fuseMountOptions, loadFuseAddon, NativeFuseSession, packLayout, type NodeStat } from '../../src/fuse/native-session.js';

const print = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

function dirStat(ino: number): number[] {
  return [constants.S_IFDIR | 0o555, 0, 0, 4096, 2, ino, 4096, 8, 0, 0, 0];
}

async function isMounted(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => line.split(' ')[4] === path);
}

const ENOENT = 2;
const ENOSYS = 38;

/** The addon's session with a minimal dispatch: / is an empty directory; lookups go to onLookup, then ENOENT. */
function rawSession(mountpoint: string, onLookup: (path: string) => void, onClosed: () => void): { session: InstanceType<ReturnType<typeof loadFuseAddon>['FuseSession']>; mount: () => void } {
  const fuse = loadFuseAddon();
  const session = new fuse.FuseSession((op, id, path) => {
    switch (op) {
      case 'init':
        print('ready');
        return;
      case 'closed':
        onClosed();
        return;
      case 'getattr':
        if (path === '/') session.replyAttr(id, dirStat(1));
        else session.replyErr(id, ENOENT);
        return;
      case 'lookup':
        onLookup(path);
        session.replyErr(id, ENOENT);
        return;
      default:
        if (id > 0) session.replyErr(id, ENOSYS);
    }
  });
  const mount = (): void => {
    session.mount(mountpoint, ['-o', fuseMountOptions(fuse.maxRead, false).join(',')], { maxRead: fuse.maxRead, touchIntervalMs: 0 });
  };
  return { session, mount };
}

const [scenario = '', mountpoint = '', source = ''] = process.argv.slice(2);

if (!isMainThread) {
  // teardown's worker: serves /file.img from the source file.
  const { mountpoint: where, source: from } = workerData as { mountpoint: string; source: string };
  const data = await readFile(from);
  const layout = packLayout({ size: data.length, extents: [{ kind: 'file', start: 0, length: data.length, path: from, offset: 0, what: 'source' }] });
  const stat = (ino: number, mode: number, size: number): NodeStat => ({ mode, uid: 0, gid: 0, size, nlink: 1, ino, blksize: 4096, blocks: Math.ceil(size / 512), atime: 0, mtime: 0, ctime: 0 });
  await NativeFuseSession.mount(where, {
    getattr: (path) => {
      if (path === '/') return Promise.resolve(stat(1, constants.S_IFDIR | 0o555, 4096));
      if (path === '/file.img') return Promise.resolve(stat(2, constants.S_IFREG | 0o444, data.length));
      return Promise.reject(Object.assign(new Error('ENOENT'), { code: 'ENOENT' }));
    },
    readdir: () => Promise.resolve(['.', '..', 'file.img']),
    open: async () => {
      const handle = await open(from, 'r');
      return { file: { kind: 'layout', layout, fds: new Map([[from, handle.fd]]) }, dispose: () => handle.close() };
    },
    readlink: () => Promise.reject(Object.assign(new Error('EINVAL'), { code: 'EINVAL' })),
    statfs: () => Promise.resolve({ bsize: 4096, frsize: 4096, blocks: 1, bfree: 0, bavail: 0, files: 1, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 }),
    errno: () => ENOENT,
    log: (line) => {
      process.stderr.write(`${line}\n`);
    },
  }, { touchIntervalMs: 0 });
  parentPort?.postMessage('mounted');
} else if (scenario === 'throw') {
  process.on('uncaughtException', (error) => {
    print(`uncaught ${error.message}`);
  });
  let closed = (): void => undefined;
  const { session, mount } = rawSession(mountpoint, (path) => {
    if (path === '/boom') throw new Error('a bug in dispatch');
  }, () => {
    closed();
  });
  mount();
  process.on('SIGTERM', () => {
    void (async () => {
      const done = new Promise<void>((resolvePromise) => {
        closed = resolvePromise;
      });
      await session.detach();
      await Promise.race([done, new Promise((resolvePromise) => setTimeout(resolvePromise, 5000))]);
      process.exit(0);
    })();
  });
} else if (scenario === 'remount') {
  let closed = (): void => undefined;
  const { session, mount } = rawSession(mountpoint, () => undefined, () => {
    closed();
  });
  const ended = (): Promise<void> => new Promise<void>((resolvePromise) => {
    closed = resolvePromise;
  });
  let done = ended();
  mount();
  await session.detach();
  await done;
  print('closed');
  done = ended();
  try {
    mount();
    print('remount accepted');
    await session.detach();
    await Promise.race([done, new Promise((resolvePromise) => setTimeout(resolvePromise, 5000))]);
  } catch (error) {
    print(`remount refused: ${error instanceof Error ? error.message : String(error)}`);
  }
  process.exit(0);
} else if (scenario === 'teardown') {
  const truth = await readFile(source);
  const worker = new Worker(new URL(import.meta.url), { workerData: { mountpoint, source }, argv: ['worker', mountpoint, source] });
  await new Promise<void>((resolvePromise, reject) => {
    worker.once('message', () => {
      resolvePromise();
    });
    worker.once('error', reject);
  });
  print('mounted');
  const handle = await open(join(mountpoint, 'file.img'), 'r');
  const before = Buffer.alloc(4096);
  await handle.read(before, 0, 4096, 0);
  print(before.equals(truth.subarray(0, 4096)) ? 'read before teardown ok' : 'read before teardown mismatch');
  await worker.terminate();
  print('terminated');
  // Pages never read before: this read reaches the session the worker left behind.
  const at = truth.length - 64 * 1024;
  const after = Buffer.alloc(4096);
  try {
    await handle.read(after, 0, 4096, at);
    print(after.equals(truth.subarray(at, at + 4096)) ? 'read after teardown ok' : 'read after teardown mismatch');
  } catch (error) {
    print(`read after teardown error ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  await handle.close();
  const deadline = Date.now() + 10_000;
  while ((await isMounted(mountpoint)) && Date.now() < deadline) await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
  print((await isMounted(mountpoint)) ? 'still mounted' : 'unmounted');
  process.exit(0);
} else {
  process.stderr.write('usage: native-lifecycle-child throw|remount|teardown MOUNTPOINT [SOURCE]\n');
  process.exit(2);
}
