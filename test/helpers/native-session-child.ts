// SPDX-License-Identifier: MIT
/**
 * A tiny synthetic tree served by NativeFuseSession, in a CHILD process (a test must never read
 * a mount its own main thread serves): `node dist/test/helpers/native-session-child.js SPEC.json
 * MOUNTPOINT`. SPEC.json (written by test/native-session.test.ts) names a source directory and the
 * virtual files' layouts (bytes as base64). Served:
 *
 *   /<name>             each virtual file of the spec (0444)
 *   /real/<file>        every regular file of the source directory, passed through (0444)
 *   /real/link          a symlink to `data.bin`
 *
 * Prints "ready" once mounted. SIGUSR1 prints the handles JS holds open ("open handles 1,2" or
 * "open handles none"); SIGUSR2 invalidates every open handle (later reads: EIO); SIGTERM
 * unmounts lazily, waits (at most 5 s) for the kernel to let go, prints "closed <code>" and exits 0.
 * Handler log lines go to stderr.
 */
import { constants } from 'node:fs';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { NativeFuseSession, packLayout, type DirEntryInfo, type NativeExtent, type NativeLayout, type NodeStat, type OpenAnswer } from '../../src/fuse/native-session.js';

/** One extent of a served file, as the test writes it into the spec (JSON). */
export interface SpecExtent {
  readonly kind: 'zero' | 'bytes' | 'file' | 'compressed';
  readonly length: number;
  readonly data?: string;
  readonly path?: string;
  readonly offset?: number;
  readonly record?: number;
  readonly blockLength?: number;
  readonly skip?: number;
}

interface Spec {
  readonly sourceDir: string;
  readonly files: Record<string, readonly SpecExtent[]>;
}

const [specPath, mountpoint] = process.argv.slice(2);
if (specPath === undefined || mountpoint === undefined) {
  process.stderr.write('usage: native-session-child SPEC.json MOUNTPOINT\n');
  process.exit(2);
}
const spec = JSON.parse(await readFile(specPath, 'utf8')) as Spec;

function toLayout(extents: readonly SpecExtent[]): NativeLayout {
  let start = 0;
  const result: NativeExtent[] = [];
  for (const extent of extents) {
    const path = join(spec.sourceDir, extent.path ?? '');
    switch (extent.kind) {
      case 'zero':
        result.push({ kind: 'zero', start, length: extent.length, what: 'zeros: spec' });
        break;
      case 'bytes':
        result.push({ kind: 'bytes', start, length: extent.length, data: Buffer.from(extent.data ?? '', 'base64'), what: 'spec bytes' });
        break;
      case 'file':
        result.push({ kind: 'file', start, length: extent.length, path, offset: extent.offset ?? 0, what: 'spec file' });
        break;
      case 'compressed':
        result.push({ kind: 'compressed', start, length: extent.length, path, record: extent.record ?? 0, blockLength: extent.blockLength ?? 0, skip: extent.skip ?? 0, what: 'spec block' });
        break;
    }
    start += extent.length;
  }
  return { size: start, extents: result };
}

const layouts = new Map(Object.entries(spec.files).map(([name, extents]) => [`/${name}`, toLayout(extents)]));
const started = Date.now();
const open_ = new Set<number>();
const errno = osConstants.errno;

function systemError(code: string): Error {
  return Object.assign(new Error(code), { code });
}

function fileStat(ino: number, mode: number, size: number, mtime = started): NodeStat {
  return { mode, uid: 0, gid: 0, size, nlink: 1, ino, blksize: 4096, blocks: Math.ceil(size / 512), atime: mtime, mtime, ctime: mtime };
}

async function getattr(path: string): Promise<NodeStat> {
  if (path === '/') return fileStat(1, constants.S_IFDIR | 0o555, 4096);
  if (path === '/real') return fileStat(2, constants.S_IFDIR | 0o555, 4096);
  if (path === '/real/link') return fileStat(3, constants.S_IFLNK | 0o777, 'data.bin'.length);
  const layout = layouts.get(path);
  if (layout !== undefined) return fileStat(1000 + [...layouts.keys()].indexOf(path), constants.S_IFREG | 0o444, layout.size);
  if (path.startsWith('/real/')) {
    const info = await stat(join(spec.sourceDir, path.slice('/real/'.length)));
    if (!info.isFile()) throw systemError('ENOENT');
    return { ...fileStat(10_000 + info.ino, constants.S_IFREG | 0o444, info.size, info.mtimeMs) };
  }
  throw systemError('ENOENT');
}

/** Entries with getattr's inode numbers and modes (readdir's d_ino and d_type); `.` and `..` bare. */
async function readdirOf(path: string): Promise<readonly (string | DirEntryInfo)[]> {
  const entry = async (name: string): Promise<DirEntryInfo> => {
    const info = await getattr(`${path === '/' ? '' : path}/${name}`);
    return { name, ino: info.ino, mode: info.mode };
  };
  if (path === '/') return ['.', '..', ...(await Promise.all(['real', ...[...layouts.keys()].map((name) => name.slice(1))].map(entry)))];
  if (path === '/real') return ['.', '..', ...(await Promise.all(['link', ...(await readdir(spec.sourceDir))].map(entry)))];
  throw systemError('ENOTDIR');
}

async function openOf(path: string): Promise<OpenAnswer> {
  const onOpen = (fh: number): void => {
    open_.add(fh);
  };
  const layout = layouts.get(path);
  if (layout !== undefined) {
    const packed = packLayout(layout);
    const handles = await Promise.all(packed.paths.map((source) => open(source, 'r')));
    return {
      file: { kind: 'layout', layout: packed, fds: new Map(packed.paths.map((source, index) => [source, handles[index]?.fd ?? -1])) },
      onOpen,
      dispose: async () => {
        await Promise.all(handles.map((handle) => handle.close()));
      },
    };
  }
  if (path.startsWith('/real/')) {
    const handle = await open(join(spec.sourceDir, path.slice('/real/'.length)), constants.O_RDONLY | constants.O_NOFOLLOW);
    return { file: { kind: 'fd', fd: handle.fd }, onOpen, dispose: () => handle.close() };
  }
  throw systemError('ENOENT');
}

const session = await NativeFuseSession.mount(
  mountpoint,
  {
    getattr,
    readdir: readdirOf,
    open: openOf,
    readlink: (path) => (path === '/real/link' ? Promise.resolve('data.bin') : Promise.reject(systemError('EINVAL'))),
    statfs: () => Promise.resolve({ bsize: 4096, frsize: 4096, blocks: 1000, bfree: 0, bavail: 0, files: 10, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 }),
    release: (fh) => {
      open_.delete(fh);
    },
    errno: (error) => {
      const code = typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : 'EIO';
      return (errno as Record<string, number | undefined>)[code] ?? errno.EIO;
    },
    log: (line) => {
      process.stderr.write(`${line}\n`);
    },
  },
  { allowOther: true, touchIntervalMs: 0, cacheBytes: 1024 * 1024 },
);

process.on('SIGUSR1', () => {
  process.stdout.write(`open handles ${[...open_].join(',') || 'none'}\n`);
});
process.on('SIGUSR2', () => {
  for (const fh of open_) session.invalidate(fh);
  process.stdout.write(`invalidated ${open_.size}\n`);
});
let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  void (async () => {
    await session.unmount();
    const code = await Promise.race([session.closed, new Promise<string>((resolvePromise) => setTimeout(() => { resolvePromise('timeout'); }, 5000))]);
    process.stdout.write(`closed ${code}\n`);
    process.exit(0);
  })();
});
process.stdout.write('ready\n');
