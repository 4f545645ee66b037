// SPDX-License-Identifier: MIT
/**
 * The fixed VHD of synthetic disks (bytes + zero gaps + extents of a real source file), written
 * out through readAt and judged by independent readers: qemu-img (info: exact size, compare
 * against the raw disk) and libvhdi (vhdiinfo). Plus: the footer fields, CHS, the 2040 GiB and
 * 4Kn refusals, determinism, and inspectContainer on our files and qemu's.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guidToString } from '../src/container/guid.js';
import { type ContainerInfo, inspectContainer } from '../src/container/inspect.js';
import {
  VHD_FIXED_DATA_OFFSET,
  buildVhdLayout,
  chsGeometry,
  decodeVhdFooter,
  encodeVhdFooter,
  vhdLimitReason,
  vhdUniqueId,
} from '../src/container/vhd.js';
import type { DiskImage } from '../src/disk/disk-image.js';
import { isSynthvhdError } from '../src/errors/synthvhd-error.js';
import type { Layout } from '../src/extents/extent.js';
import { LayoutBuilder } from '../src/extents/layout-builder.js';
import { readAt } from '../src/extents/read-at.js';
import { SourceFiles } from '../src/extents/source-files.js';
import { run, runOk } from './helpers/run.js';
import { layoutReader as layoutReaderOf, makeSyntheticDisk, type Part, writeLayoutFile } from './helpers/synthetic-disk.js';

// ---- local helpers ----

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const MTIME_MS = Date.UTC(2024, 0, 1, 0, 0, 0) + 999; // 2024-01-01T00:00:00.999Z


let directory = '';
let sourcePath = '';
let source: Buffer = Buffer.alloc(0);
const sources = new SourceFiles();

/** A DiskImage from parts, and the raw disk written independently (straight from the parts). */
function makeDisk(
  name: string,
  parts: readonly Part[],
  options: { sectorSize?: 512 | 4096; identity?: Uint8Array } = {},
): Promise<{ disk: DiskImage; rawPath: string }> {
  return makeSyntheticDisk({ directory, sourcePath, source }, name, parts, {
    ...(options.sectorSize === undefined ? {} : { sectorSize: options.sectorSize }),
    identity: options.identity ?? new Uint8Array(32).fill(3),
    mtimeMs: MTIME_MS,
  });
}

function zeroDisk(size: number, sectorSize: 512 | 4096 = 512): DiskImage {
  return { layout: new LayoutBuilder().zero(size, 'zeros: disk').build(), sectorSize, identity: new Uint8Array(32), mtimeMs: MTIME_MS };
}

/** Writes a layout to a file with readAt, leaving `zero` extents as holes. */
function writeLayout(layout: Layout, path: string): Promise<void> {
  return writeLayoutFile(layout, path, sources);
}

/** The last 512 bytes of a layout: the footer. */
async function footerBytes(layout: Layout): Promise<Buffer> {
  const bytes = Buffer.alloc(512);
  await readAt(layout, sources, layout.size - 512, bytes);
  return bytes;
}

/** A read callback over a layout, with some bytes XORed (to damage checksummed structures). */
function layoutReader(layout: Layout, damage: ReadonlyMap<number, number> = new Map()): (position: number, length: number) => Promise<Uint8Array> {
  return layoutReaderOf(layout, sources, damage);
}

/** A read callback over a real file. */
async function inspectFile(path: string): Promise<ContainerInfo> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    return await inspectContainer(async (position, length) => {
      const bytes = Buffer.alloc(length);
      await handle.read(bytes, 0, length, position);
      return bytes;
    }, size);
  } finally {
    await handle.close();
  }
}

async function qemuVirtualSize(path: string): Promise<number> {
  const { stdout } = await runOk('qemu-img', ['info', '--output=json', '-f', 'vpc', path]);
  return (JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'];
}

async function expectQemuIdentical(path: string, rawPath: string): Promise<void> {
  const compare = await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', path, rawPath]);
  expect(compare.stdout + compare.stderr).toContain('Images are identical.');
  expect(compare.code).toBe(0);
}

function formatLimit(build: () => unknown): { code: string; message: string } {
  try {
    build();
  } catch (error) {
    if (isSynthvhdError(error)) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error('no error');
}

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'synthvhd-vhd-'));
  sourcePath = join(directory, 'source.bin');
  source = randomBytes(4 * MIB);
  await writeFile(sourcePath, source);
});

afterAll(async () => {
  await sources.close();
  await rm(directory, { recursive: true, force: true });
});

// ---- tests ----

describe('CHS geometry (VHD spec appendix)', () => {
  it('matches the spec examples and saturates above ~127 GiB', () => {
    expect(chsGeometry(10 * MIB)).toEqual({ cylinders: 301, heads: 4, sectorsPerTrack: 17 });
    expect(301 * 4 * 17 * 512).toBe(10_479_616); // smaller than 10 MiB: why the size must come from Current Size
    expect(chsGeometry(128 * GIB)).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
    expect(chsGeometry(2040 * GIB)).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
    expect(chsGeometry(65535 * 16 * 63 * 512)).toEqual({ cylinders: 16191, heads: 16, sectorsPerTrack: 255 });
    expect(chsGeometry(1 * GIB)).toEqual({ cylinders: 2080, heads: 16, sectorsPerTrack: 63 });
  });

  it('agrees with the geometry qemu-img writes (qemu calculate_geometry) in every branch', async () => {
    // qemu-img create rounds the size *up*: it calls calculate_geometry(total + i) for i = 0, 1, ...
    // until C*H*S >= total, and writes that geometry and C*H*S*512 as the size (vpc.c vpc_co_create).
    // Replaying that loop over chsGeometry must land on qemu's numbers: 17, 31, 63 and 255 sectors
    // per track are all exercised.
    for (const size of [3 * MIB, 10 * MIB, 100 * MIB, 1 * GIB, 4 * GIB, 40 * GIB, 127 * GIB]) {
      const path = join(directory, 'qemu-chs.vhd');
      await runOk('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', path, String(size)]);
      const handle = await open(path, 'r');
      try {
        const { size: fileSize } = await handle.stat();
        const footer = Buffer.alloc(512);
        await handle.read(footer, 0, 512, fileSize - 512);
        const qemu = {
          cylinders: footer.readUInt16BE(56),
          heads: footer[58],
          sectorsPerTrack: footer[59],
          currentSize: Number(footer.readBigUInt64BE(48)),
        };
        const total = size / 512;
        let geometry = chsGeometry(size);
        for (let extra = 1; geometry.cylinders * geometry.heads * geometry.sectorsPerTrack < total; extra++) {
          geometry = chsGeometry((total + extra) * 512);
        }
        const product = geometry.cylinders * geometry.heads * geometry.sectorsPerTrack * 512;
        expect({ size, ...geometry, currentSize: product }).toEqual({ size, ...qemu });
      } finally {
        await handle.close();
        await rm(path);
      }
    }
  });
});

describe('fixed VHD of a disk', () => {
  const parts: Part[] = [
    { kind: 'bytes', data: randomBytes(4096) },
    { kind: 'zero', length: 3 * MIB },
    { kind: 'file', offset: 777, length: 2 * MIB + 512 },
    { kind: 'zero', length: 10 * MIB - (4096 + 3 * MIB + 2 * MIB + 512) - 1024 },
    { kind: 'bytes', data: randomBytes(1024) },
  ];

  it('is the disk then a 512-byte footer, read at the exact size by qemu-img and vhdiinfo', async () => {
    const { disk, rawPath } = await makeDisk('ten', parts);
    expect(disk.layout.size).toBe(10 * MIB);
    const layout = buildVhdLayout(disk);
    expect(layout.size).toBe(10 * MIB + 512);
    // The disk's extents are the container's (the file extent is not copied).
    expect(layout.extents.slice(0, -1)).toEqual(disk.layout.extents);
    expect(layout.extents.at(-1)).toMatchObject({ kind: 'bytes', start: 10 * MIB, length: 512 });

    const footer = await footerBytes(layout);
    expect(footer.subarray(0, 8).toString('latin1')).toBe('conectix');
    expect(footer.readUInt32BE(8)).toBe(2); // features
    expect(footer.readUInt32BE(12)).toBe(0x00010000);
    expect(footer.readBigUInt64BE(16)).toBe(0xffffffffffffffffn);
    expect(footer.readUInt32BE(24)).toBe(Math.floor(MTIME_MS / 1000) - 946_684_800); // 757382400
    expect(footer.readUInt32BE(24)).toBe(757_382_400);
    expect(footer.subarray(28, 32).toString('latin1')).toBe('win ');
    expect(footer.readUInt32BE(32)).toBe(0x000a0000);
    expect(footer.subarray(36, 40).toString('latin1')).toBe('Wi2k');
    expect(Number(footer.readBigUInt64BE(40))).toBe(10 * MIB);
    expect(Number(footer.readBigUInt64BE(48))).toBe(10 * MIB);
    expect([footer.readUInt16BE(56), footer[58], footer[59]]).toEqual([301, 4, 17]);
    expect(footer.readUInt32BE(60)).toBe(2);
    let sum = 0;
    for (let index = 0; index < 512; index++) if (index < 64 || index >= 68) sum += footer[index] ?? 0;
    expect(footer.readUInt32BE(64)).toBe(~sum >>> 0);
    expect(footer.subarray(68, 84)).toEqual(Buffer.from(vhdUniqueId(disk)));
    expect(footer.subarray(84).every((byte) => byte === 0)).toBe(true);

    const path = join(directory, 'ten.vhd');
    await writeLayout(layout, path);
    expect(await qemuVirtualSize(path)).toBe(10 * MIB); // not the CHS size 10,479,616
    await expectQemuIdentical(path, rawPath);
    const text = (await runOk('vhdiinfo', [path])).stdout;
    expect(text).toContain('Disk type\t\t: Fixed');
    expect(text).toContain(`(${10 * MIB} bytes)`);
    // libvhdi reads the Unique Id as an RFC 4122 (big-endian) UUID: our byte order agrees.
    expect(text).toContain(`Identifier\t\t: ${guidToString(vhdUniqueId(disk), 'rfc')}`);
  });

  it('keeps a size CHS cannot express exactly (10 MiB + 1536)', async () => {
    const { disk, rawPath } = await makeDisk('odd', [...parts, { kind: 'bytes', data: randomBytes(1536) }]);
    const size = 10 * MIB + 1536;
    const path = join(directory, 'odd.vhd');
    await writeLayout(buildVhdLayout(disk), path);
    expect(await qemuVirtualSize(path)).toBe(size);
    await expectQemuIdentical(path, rawPath);
    expect((await runOk('vhdiinfo', [path])).stdout).toContain(`(${size} bytes)`);
  });

  it('is byte-identical for equal disks and follows the identity', async () => {
    const a = await makeDisk('det-a', parts);
    const b = await makeDisk('det-b', parts.map((part) => (part.kind === 'bytes' ? { ...part, data: Buffer.from(part.data) } : part)));
    const footerA = await footerBytes(buildVhdLayout(a.disk));
    expect(footerA.equals(await footerBytes(buildVhdLayout(b.disk)))).toBe(true);
    expect(footerA.equals(await footerBytes(buildVhdLayout(a.disk)))).toBe(true);
    const c = await makeDisk('det-c', parts, { identity: new Uint8Array(32).fill(4) });
    const footerC = await footerBytes(buildVhdLayout(c.disk));
    expect(footerC.subarray(68, 84).equals(footerA.subarray(68, 84))).toBe(false);
    expect(footerC.subarray(0, 64).equals(footerA.subarray(0, 64))).toBe(true);
  });

  it('footer encode/decode round-trips and decode rejects a wrong checksum', async () => {
    const { disk } = await makeDisk('codec', parts);
    const footer = await footerBytes(buildVhdLayout(disk));
    const decoded = decodeVhdFooter(footer);
    expect(decoded).toMatchObject({
      dataOffset: VHD_FIXED_DATA_OFFSET,
      creatorApplication: 'win ',
      creatorHostOs: 'Wi2k',
      currentSize: 10 * MIB,
      originalSize: 10 * MIB,
      diskType: 2,
      geometry: { cylinders: 301, heads: 4, sectorsPerTrack: 17 },
    });
    expect(Buffer.from(encodeVhdFooter(decoded)).equals(footer)).toBe(true);
    const damaged = Buffer.from(footer);
    damaged[300] = 1; // reserved byte
    expect(() => decodeVhdFooter(damaged)).toThrow(/^VHD footer: checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)$/);
  });
});

describe('VHD limits', () => {
  it('serves exactly 2040 GiB (qemu-img and vhdiinfo agree) and refuses one sector more', async () => {
    const size = 2040 * GIB;
    const disk = zeroDisk(size);
    expect(vhdLimitReason(disk)).toBeUndefined();
    const layout = buildVhdLayout(disk);
    const footer = decodeVhdFooter(await footerBytes(layout));
    expect(footer.geometry).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
    const path = join(directory, 'limit.vhd');
    await writeLayout(layout, path); // sparse: only the footer is written
    expect(await qemuVirtualSize(path)).toBe(size);
    expect((await runOk('vhdiinfo', [path])).stdout).toContain(`(${size} bytes)`);
    expect(await inspectFile(path)).toMatchObject({ format: 'vhd', type: 'fixed', virtualSize: size });
    await rm(path);

    const over = zeroDisk(size + 512);
    const message = `disk is ${size + 512} bytes (2040 GiB + 512 bytes): VHD is limited to 2040 GiB; use the .vhdx`;
    expect(vhdLimitReason(over)).toBe(message);
    expect(formatLimit(() => buildVhdLayout(over))).toEqual({ code: 'E_FORMAT_LIMIT', message });
    expect(vhdLimitReason(zeroDisk(3 * 1024 * GIB))).toBe(
      `disk is ${3 * 1024 * GIB} bytes (3072 GiB): VHD is limited to 2040 GiB; use the .vhdx`,
    );
  });

  it('refuses a 4Kn disk', () => {
    const message = 'a VHD always has 512-byte sectors; this 4Kn disk can only be served as .vhdx';
    expect(vhdLimitReason(zeroDisk(10 * MIB, 4096))).toBe(message);
    expect(formatLimit(() => buildVhdLayout(zeroDisk(10 * MIB, 4096)))).toEqual({ code: 'E_FORMAT_LIMIT', message });
  });
});

describe('inspectContainer on VHDs', () => {
  it('round-trips our fixed VHD and rejects a damaged footer checksum', async () => {
    const { disk } = await makeDisk('inspect', [{ kind: 'file', offset: 0, length: 3 * MIB }]);
    const layout = buildVhdLayout(disk);
    // The unique id as libvhdi reads it, and as the footer's bytes say (VHD spec: Unique Id, 16
    // bytes at footer offset 68, big-endian); never from the function that wrote it.
    const path = join(directory, 'inspect.vhd');
    await writeLayout(layout, path);
    const identifier = /Identifier\s*:\s*(\S+)/.exec((await runOk('vhdiinfo', [path])).stdout)?.[1];
    const hex = (await footerBytes(layout)).subarray(68, 84).toString('hex');
    expect(identifier).toBe(`${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`);
    expect(await inspectContainer(layoutReader(layout), layout.size)).toEqual({
      format: 'vhd',
      type: 'fixed',
      virtualSize: 3 * MIB,
      logicalSectorSize: 512,
      uniqueId: identifier,
      creator: 'win 10.0 on Wi2k',
    });
    const error: unknown = await inspectContainer(layoutReader(layout, new Map([[layout.size - 100, 0x40]])), layout.size).catch(
      (caught: unknown) => caught,
    );
    expect(isSynthvhdError(error) && error.code).toBe('E_CONTAINER');
    expect((error as Error).message).toMatch(/^VHD footer \(offset 3145728\): checksum mismatch/);
    const notVhd: unknown = await inspectContainer((_position, length) => Promise.resolve(new Uint8Array(length)), 4096).catch(
      (caught: unknown) => caught,
    );
    expect(isSynthvhdError(notVhd) && notVhd.message).toMatch(/^not a VHD or VHDX file/);
  });

  it('reads the dynamic VHD qemu-img creates', async () => {
    const path = join(directory, 'qemu-dynamic.vhd');
    await runOk('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', path, '64M']);
    const info = await inspectFile(path);
    expect(info).toMatchObject({ format: 'vhd', type: 'dynamic', blockSize: 2 * MIB, logicalSectorSize: 512 });
    expect(info.virtualSize).toBe(await qemuVirtualSize(path));
    expect(info.creator).toMatch(/^qemu /);
    expect((await runOk('vhdiinfo', [path])).stdout).toContain(`Identifier\t\t: ${info.uniqueId ?? 'none'}`);
  });
});
