// SPDX-License-Identifier: MIT
/**
 * The native addon against real kernels and file systems: SEEK_DATA/SEEK_HOLE and copy_file_range
 * on the root file system, FICLONERANGE on btrfs and XFS images mounted through loop devices.
 * Needs root, btrfs-progs and xfsprogs; a missing tool fails the test with its name, nothing is
 * skipped. Every mount and loop device is undone in afterAll (and on a failed setup at once).
 *
 * The addon must be built (`npm run build:native`, which `npm ci` runs).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statfsSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { release, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cloneRange, copyFileRange, dataRanges, fsBlockSize, seekData, seekHole } from '../src/native/native.js';
import { isNativeError, NativeError } from '../src/native/native-error.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** The full path of `tool`, or a clear failure naming the package that provides it. */
function requireTool(tool: string, pkg: string): string {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const dir of dirs) {
    if (dir !== '' && existsSync(join(dir, tool))) return join(dir, tool);
  }
  throw new Error(`native.test: '${tool}' is not installed; install ${pkg} (the reflink tests need it)`);
}

function run(tool: string, args: readonly string[]): string {
  return execFileSync(tool, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Resolves to the NativeError `promise` rejects with (fails the test when it resolves). */
async function nativeRejection(promise: Promise<unknown>): Promise<NativeError> {
  const error: unknown = await promise.then(
    () => new Error('expected a rejection, the call succeeded'),
    (reason: unknown) => reason,
  );
  if (!(error instanceof NativeError)) throw error;
  return error;
}

/** Runs `body` with the fds of `paths` opened with `flags`, closing them afterwards. */
async function withFds<T>(opens: readonly (readonly [string, string])[], body: (...fds: number[]) => Promise<T>): Promise<T> {
  const fds: number[] = [];
  try {
    for (const [path, flags] of opens) fds.push(openSync(path, flags));
    return await body(...fds);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/** Bytes of `file` the kernel reports as shared with another file (fiemap flag 0x2000, FIEMAP_EXTENT_SHARED). */
function sharedBytes(file: string): number {
  const xfsIo = requireTool('xfs_io', 'xfsprogs');
  run('sync', ['-f', file]); // btrfs computes the shared flag from committed back references
  const out = run(xfsIo, ['-r', '-c', 'fiemap -v', file]);
  let shared = 0;
  // "   1: [2048..18431]:   133120..149503   16384 0x2001" (ranges and totals in 512-byte units)
  for (const match of out.matchAll(/^\s*\d+: \[\d+\.\.\d+\]:\s+\d+\.\.\d+\s+(\d+)\s+0x([0-9a-f]+)\s*$/gm)) {
    if ((parseInt(match[2] ?? '0', 16) & 0x2000) !== 0) shared += Number(match[1]) * 512;
  }
  return shared;
}

interface LoopFs {
  readonly mountDir: string;
  /** Unmounts, detaches the loop device, removes the temp dirs. */
  cleanup(): void;
}

/**
 * A fresh `kind` file system on a sparse image of `sizeMiB`, attached to a free loop device and
 * mounted on a temp dir. The image and the mount point live in separate temp dirs, and the mount
 * point is removed with rmdir only, so a failed umount can never make cleanup delete inside a mount.
 */
function mountLoopFs(kind: 'btrfs' | 'xfs', sizeMiB: number): LoopFs {
  const mkfs = kind === 'btrfs' ? requireTool('mkfs.btrfs', 'btrfs-progs') : requireTool('mkfs.xfs', 'xfsprogs');
  const losetup = requireTool('losetup', 'mount (util-linux)');
  const mount = requireTool('mount', 'mount (util-linux)');
  const umount = requireTool('umount', 'mount (util-linux)');
  const undo: (() => void)[] = [];
  const cleanup = (): void => {
    // In reverse; stop at the first failure, since later steps assume the earlier ones worked.
    for (let step = undo.pop(); step !== undefined; step = undo.pop()) step();
  };
  try {
    const imageDir = mkdtempSync(join(tmpdir(), `synthvhd-native-${kind}-img-`));
    undo.push(() => {
      rmSync(imageDir, { recursive: true, force: true });
    });
    const mountDir = mkdtempSync(join(tmpdir(), `synthvhd-native-${kind}-mnt-`));
    undo.push(() => {
      rmdirSync(mountDir);
    });
    const image = join(imageDir, `${kind}.img`);
    writeFileSync(image, '');
    truncateSync(image, sizeMiB * MiB);
    run(mkfs, kind === 'btrfs' ? ['-q', image] : ['-q', '-m', 'reflink=1', image]);
    const device = run(losetup, ['--find', '--show', image]).trim();
    undo.push(() => run(losetup, ['-d', device]));
    run(mount, [device, mountDir]);
    undo.push(() => run(umount, [mountDir]));
    return { mountDir, cleanup };
  } catch (error) {
    cleanup();
    throw error;
  }
}

/** Kernel >= 5.19 refuses copy_file_range between file systems of different types (EXDEV). */
function kernelAtLeast(major: number, minor: number): boolean {
  const [kernelMajor = 0, kernelMinor = 0] = release().split('.').map((part) => parseInt(part, 10));
  return kernelMajor > major || (kernelMajor === major && kernelMinor >= minor);
}

describe('native addon on the root file system', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'synthvhd-native-'));
  });
  afterAll(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  // A 16 MiB sparse file: data at [1 MiB, 1 MiB + 8 KiB), [4 MiB, 6 MiB) and [15 MiB, 16 MiB - 100).
  const SPARSE_SIZE = 16 * MiB - 100;
  const DATA: readonly (readonly [number, number])[] = [
    [1 * MiB, 8 * KiB],
    [4 * MiB, 2 * MiB],
    [15 * MiB, 1 * MiB - 100],
  ];
  function makeSparse(): string {
    const path = join(dir, 'sparse.bin');
    const fd = openSync(path, 'w');
    try {
      for (const [offset, length] of DATA) writeSync(fd, randomBytes(length), 0, length, offset);
      expect(fstatSync(fd).size).toBe(SPARSE_SIZE);
    } finally {
      closeSync(fd);
    }
    return path;
  }

  it('finds data and holes with seekData / seekHole / dataRanges', async () => {
    const path = makeSparse();
    await withFds([[path, 'r']], async (fd) => {
      // A file system without hole tracking reports everything as data: say so instead of failing below.
      if ((await seekHole(fd, 0)) === SPARSE_SIZE) {
        throw new Error(`${dir}: this file system (statfs type 0x${statfsSync(dir).type.toString(16)}) has no SEEK_HOLE`);
      }
      expect(await dataRanges(fd, 0, SPARSE_SIZE)).toEqual(DATA);
      expect(await dataRanges(fd)).toEqual(DATA); // end defaults to EOF
      // The window clips the ranges it cuts through.
      expect(await dataRanges(fd, 1 * MiB + 4 * KiB, 5 * MiB)).toEqual([
        [1 * MiB + 4 * KiB, 4 * KiB],
        [4 * MiB, 1 * MiB],
      ]);
      expect(await dataRanges(fd, 2 * MiB, 4 * MiB)).toEqual([]);
      expect(await dataRanges(fd, SPARSE_SIZE, SPARSE_SIZE + MiB)).toEqual([]);

      expect(await seekData(fd, 0)).toBe(1 * MiB);
      expect(await seekData(fd, 1 * MiB + 100)).toBe(1 * MiB + 100);
      expect(await seekHole(fd, 1 * MiB)).toBe(1 * MiB + 8 * KiB);
      expect(await seekData(fd, 6 * MiB)).toBe(15 * MiB);
      expect(await seekHole(fd, 15 * MiB)).toBe(SPARSE_SIZE); // EOF counts as a hole
      expect(await seekData(fd, SPARSE_SIZE)).toBe(-1); // ENXIO: no more data
      expect(await seekData(fd, 100 * MiB)).toBe(-1);

      const pastEof = await nativeRejection(seekHole(fd, SPARSE_SIZE));
      expect(pastEof.errno).toBe('ENXIO');
      expect(pastEof.syscall).toBe('lseek SEEK_HOLE');
      expect(pastEof.code).toBe('E_IO');
    });
  });

  it('rejects a bad fd with EBADF and bad arguments as internal errors', async () => {
    const badFd = await nativeRejection(seekData(1_000_000, 0));
    expect(badFd.errno).toBe('EBADF');
    expect(isNativeError(badFd, 'EBADF')).toBe(true);
    expect(isNativeError(badFd, 'EXDEV')).toBe(false);
    expect(badFd.message).toMatch(/^seekData\(fd 1000000 @ 0\): EBADF: /);
    await expect(seekData(3, -1)).rejects.toMatchObject({ code: 'E_INTERNAL' });
    await expect(seekData(3, 2 ** 53)).rejects.toMatchObject({ code: 'E_INTERNAL' });
    await expect(cloneRange(3, 0, 4, 0, 0)).rejects.toMatchObject({ code: 'E_INTERNAL' });
    await expect(dataRanges(3, 10, 5)).rejects.toMatchObject({ code: 'E_INTERNAL' });
  });

  it('copies byte ranges with copyFileRange, and reports an early EOF', async () => {
    const src = join(dir, 'copy-src.bin');
    const dst = join(dir, 'copy-dst.bin');
    const bytes = randomBytes(5 * MiB + 123);
    writeFileSync(src, bytes);
    await withFds(
      [
        [src, 'r'],
        [dst, 'w+'],
      ],
      async (srcFd, dstFd) => {
        // Unaligned on both sides, and two ranges, the second after a gap.
        expect(await copyFileRange(srcFd, 777, dstFd, 3, 3 * MiB)).toBe(3 * MiB);
        expect(await copyFileRange(srcFd, 3 * MiB, dstFd, 4 * MiB + 1, 2 * MiB + 123)).toBe(2 * MiB + 123);
        const out = readFileSync(dst);
        expect(out.length).toBe(6 * MiB + 124);
        expect(out.subarray(3, 3 + 3 * MiB).equals(bytes.subarray(777, 777 + 3 * MiB))).toBe(true);
        expect(out.subarray(4 * MiB + 1).equals(bytes.subarray(3 * MiB))).toBe(true);
        expect(out.subarray(0, 3).equals(Buffer.alloc(3))).toBe(true);

        const early = await nativeRejection(copyFileRange(srcFd, 5 * MiB, dstFd, 0, 1 * MiB));
        expect(early.errno).toBe('EOF');
        expect(early.syscall).toBe('copy_file_range');
        expect(early.bytesCopied).toBe(123);
      },
    );
  });

  it('reports the block size of the file system a file is on', async () => {
    const path = join(dir, 'block-size.bin');
    writeFileSync(path, randomBytes(64 * KiB));
    await withFds([[path, 'r']], async (fd) => {
      expect(await fsBlockSize(fd)).toBe(statfsSync(dir).bsize);
    });
  });

  it('reports EOPNOTSUPP for a clone on a file system without reflink (a tmpfs of its own)', async () => {
    // Not the temp dir's file system, which may be anything (ext4, overlayfs over XFS that can
    // clone): a tmpfs mounted here, which cannot share blocks on any kernel.
    const tmpfs = mkdtempSync(join(tmpdir(), 'synthvhd-native-tmpfs-'));
    let mounted = false;
    try {
      run(requireTool('mount', 'util-linux'), ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', tmpfs]);
      mounted = true;
      expect(statfsSync(tmpfs).type).toBe(0x01021994); // TMPFS_MAGIC
      const path = join(tmpfs, 'clone-here.bin');
      writeFileSync(path, randomBytes(64 * KiB));
      await withFds(
        [
          [path, 'r'],
          [join(tmpfs, 'clone-there.bin'), 'w+'],
        ],
        async (srcFd, dstFd) => {
          const error = await nativeRejection(cloneRange(srcFd, 0, dstFd, 0, 64 * KiB));
          expect(error.errno).toBe('EOPNOTSUPP');
          expect(error.syscall).toBe('FICLONERANGE');
        },
      );
    } finally {
      if (mounted) run(requireTool('umount', 'util-linux'), [tmpfs]);
      rmdirSync(tmpfs);
    }
  });
});

/** The same reflink checks on btrfs and XFS. */
describe.each([
  { kind: 'btrfs' as const, sizeMiB: 512 },
  { kind: 'xfs' as const, sizeMiB: 320 }, // mkfs.xfs refuses file systems under 300 MB
])('cloneRange on $kind (loop device)', ({ kind, sizeMiB }) => {
  let fsys: LoopFs | undefined;
  let otherDir = '';
  beforeAll(() => {
    otherDir = mkdtempSync(join(tmpdir(), 'synthvhd-native-other-'));
    fsys = mountLoopFs(kind, sizeMiB);
  });
  afterAll(() => {
    try {
      fsys?.cleanup();
    } finally {
      if (otherDir !== '') rmSync(otherDir, { recursive: true, force: true });
    }
  });
  function mnt(name: string): string {
    if (fsys === undefined) throw new Error('the loop file system is not mounted');
    return join(fsys.mountDir, name);
  }

  it('shares 8 MiB of a 16 MiB file: same bytes, blocks marked shared, leading hole kept', async () => {
    const bytes = randomBytes(16 * MiB);
    writeFileSync(mnt('src.bin'), bytes);
    await withFds(
      [
        [mnt('src.bin'), 'r'],
        [mnt('dst.bin'), 'w+'],
      ],
      async (srcFd, dstFd) => {
        expect(await fsBlockSize(dstFd)).toBe(4096);
        await cloneRange(srcFd, 4 * MiB, dstFd, 1 * MiB, 8 * MiB);
        expect(fstatSync(dstFd).size).toBe(9 * MiB); // cloning past EOF extends the file
        expect(await dataRanges(dstFd)).toEqual([[1 * MiB, 8 * MiB]]);
      },
    );
    const out = readFileSync(mnt('dst.bin'));
    expect(out.subarray(1 * MiB).equals(bytes.subarray(4 * MiB, 12 * MiB))).toBe(true);
    expect(out.subarray(0, 1 * MiB).equals(Buffer.alloc(1 * MiB))).toBe(true);
    expect(sharedBytes(mnt('dst.bin'))).toBe(8 * MiB);
    expect(readFileSync(mnt('src.bin')).equals(bytes)).toBe(true);
  });

  it('rejects unaligned offsets and lengths with EINVAL', async () => {
    writeFileSync(mnt('align-src.bin'), randomBytes(1 * MiB));
    await withFds(
      [
        [mnt('align-src.bin'), 'r'],
        [mnt('align-dst.bin'), 'w+'],
      ],
      async (srcFd, dstFd) => {
        const cases = [
          [512, 0, 64 * KiB], // source offset
          [0, 512, 64 * KiB], // destination offset
          [0, 0, 64 * KiB + 100], // length, not ending at the source's EOF
          [0, 0, 2 * MiB], // past the source's EOF: the kernel would clone less, so it refuses
        ] as const;
        for (const [srcOffset, dstOffset, length] of cases) {
          const error = await nativeRejection(cloneRange(srcFd, srcOffset, dstFd, dstOffset, length));
          expect({ srcOffset, dstOffset, length, errno: error.errno }).toEqual({ srcOffset, dstOffset, length, errno: 'EINVAL' });
        }
        expect(fstatSync(dstFd).size).toBe(0);
      },
    );
  });

  it('clones an unaligned tail only at the source EOF onto or past the destination EOF', async () => {
    const bytes = randomBytes(12 * KiB + 100);
    writeFileSync(mnt('tail-src.bin'), bytes);
    await withFds(
      [
        [mnt('tail-src.bin'), 'r'],
        [mnt('tail-dst.bin'), 'w+'],
      ],
      async (srcFd, dstFd) => {
        await cloneRange(srcFd, 0, dstFd, 0, bytes.length); // whole file, onto an empty one
        expect(readFileSync(mnt('tail-dst.bin')).equals(bytes)).toBe(true);
        // The same tail into the middle of the destination (it is now 12 KiB + 100 long) is refused.
        const inside = await nativeRejection(cloneRange(srcFd, 8 * KiB, dstFd, 0, 4 * KiB + 100));
        expect(inside.errno).toBe('EINVAL');
        // At or past the destination's EOF it is fine, even though the tail's block is partial.
        await cloneRange(srcFd, 8 * KiB, dstFd, 64 * KiB, 4 * KiB + 100);
        const out = readFileSync(mnt('tail-dst.bin'));
        expect(out.length).toBe(68 * KiB + 100);
        expect(out.subarray(64 * KiB).equals(bytes.subarray(8 * KiB))).toBe(true);
      },
    );
  });

  it('rejects a clone to another file system with EXDEV', async () => {
    writeFileSync(mnt('cross-src.bin'), randomBytes(64 * KiB));
    await withFds(
      [
        [mnt('cross-src.bin'), 'r'],
        [join(otherDir, 'cross-dst.bin'), 'w+'],
      ],
      async (srcFd, dstFd) => {
        const clone = await nativeRejection(cloneRange(srcFd, 0, dstFd, 0, 64 * KiB));
        expect(clone.errno).toBe('EXDEV');
        expect(clone.syscall).toBe('FICLONERANGE');
      },
    );
  });

  it('rejects a copy_file_range to another file system type with EXDEV', async (ctx) => {
    // Kernels 5.3 to 5.18 copied across file system types; since 5.19 only within one type.
    ctx.skip(!kernelAtLeast(5, 19), `kernel ${release()} (< 5.19) copies across file system types`);
    writeFileSync(mnt('cross-copy-src.bin'), randomBytes(64 * KiB));
    await withFds(
      [
        [mnt('cross-copy-src.bin'), 'r'],
        [join(otherDir, 'cross-copy-dst.bin'), 'w+'],
      ],
      async (srcFd, dstFd) => {
        const copy = await nativeRejection(copyFileRange(srcFd, 0, dstFd, 0, 64 * KiB));
        expect(copy.errno).toBe('EXDEV');
        expect(copy.bytesCopied).toBe(0);
      },
    );
  });
});
