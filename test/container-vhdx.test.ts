// SPDX-License-Identifier: MIT
/**
 * The dynamic VHDX of synthetic disks (bytes + zero gaps + extents of a real source file),
 * written out through readAt and judged by independent readers: qemu-img (info, check, compare
 * against the raw disk) and libvhdi (vhdiinfo, and vhdimount for a 4Kn disk qemu refuses).
 * Plus: BAT contents, determinism, limits, inspectContainer on our files and qemu's, and
 * rejection of damaged checksums.
 */
import { crc32c } from '@node-rs/crc32';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ZERO_GUID, deriveGuid, guidFromString, guidToBracedLowercase, guidToString } from '../src/container/guid.js';
import { type ContainerInfo, inspectContainer } from '../src/container/inspect.js';
import { buildVhdxLayout, vhdxDataWriteGuid } from '../src/container/vhdx.js';
import { readVhdxBatEntry, vhdxBatGeometry } from '../src/container/vhdx/bat.js';
import { vhdxChecksum } from '../src/container/vhdx/checksum.js';
import {
  MIB,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_ZERO,
  TIB,
  VHDX_BAT_OFFSET,
  VHDX_BAT_REGION_GUID,
  VHDX_HEADER1_OFFSET,
  VHDX_HEADER2_OFFSET,
  VHDX_REGION_TABLE2_OFFSET,
} from '../src/container/vhdx/constants.js';
import { decodeVhdxHeader } from '../src/container/vhdx/header.js';
import { decodeVhdxParentLocator, encodeVhdxParentLocator } from '../src/container/vhdx/parent-locator.js';
import type { DiskImage } from '../src/disk/disk-image.js';
import { isSynthvhdError } from '../src/errors/synthvhd-error.js';
import type { Layout } from '../src/extents/extent.js';
import { LayoutBuilder } from '../src/extents/layout-builder.js';
import { readAt } from '../src/extents/read-at.js';
import { SourceFiles } from '../src/extents/source-files.js';
import { run, runOk } from './helpers/run.js';
import { layoutReader as layoutReaderOf, makeSyntheticDisk, type Part, writeLayoutFile } from './helpers/synthetic-disk.js';

// ---- local helpers ----


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
    identity: options.identity ?? new Uint8Array(32).fill(7),
    mtimeMs: Date.UTC(2024, 0, 2, 3, 4, 5),
  });
}

/** Writes a layout to a file with readAt, leaving `zero` extents as holes. */
function writeLayout(layout: Layout, path: string): Promise<void> {
  return writeLayoutFile(layout, path, sources);
}

/** All bytes of a (small) layout. */
async function layoutBytes(layout: Layout): Promise<Buffer> {
  const bytes = Buffer.alloc(layout.size);
  expect(await readAt(layout, sources, 0, bytes)).toBe(layout.size);
  return bytes;
}

/** A read callback over a layout, with some bytes XORed (to damage checksummed structures). */
function layoutReader(layout: Layout, damage: ReadonlyMap<number, number> = new Map()): (position: number, length: number) => Promise<Uint8Array> {
  return layoutReaderOf(layout, sources, damage);
}

/** A GUID as MS-VHDX stores it (MS-DTYP 2.3.4.2: Data1-3 little-endian, Data4 as is), as lowercase text. */
function msGuidText(bytes: Buffer, at: number): string {
  const hex = (from: number, to: number): string => bytes.subarray(at + from, at + to).toString('hex');
  const swapped = (from: number, to: number): string => Buffer.from(bytes.subarray(at + from, at + to)).reverse().toString('hex');
  return `${swapped(0, 4)}-${swapped(4, 6)}-${swapped(6, 8)}-${hex(8, 10)}-${hex(10, 16)}`;
}

/**
 * The GUIDs of a VHDX, parsed by hand from MS-VHDX v1.0: header 1 at 64 KiB (FileWriteGuid at
 * +16, DataWriteGuid at +32, §2.2.2); the region table at 192 KiB (entries of 32 bytes from +16:
 * GUID, file offset u64, §2.2.3) names the metadata region, whose table (entries of 32 bytes from
 * +32: item GUID, offset u32 from the region, §2.6.1) names the Page 83 item (§2.6.2.6).
 */
function handParsedVhdxGuids(bytes: Buffer): { fileWriteGuid: string; dataWriteGuid: string; page83: string } {
  const regionTable = 192 * 1024;
  let metadataOffset = -1;
  for (let entry = 0; entry < bytes.readUInt32LE(regionTable + 8); entry++) {
    const at = regionTable + 16 + entry * 32;
    if (msGuidText(bytes, at) === '8b7ca206-4790-4b9a-b8fe-575f050f886e') metadataOffset = Number(bytes.readBigUInt64LE(at + 16));
  }
  expect(bytes.subarray(metadataOffset, metadataOffset + 8).toString('latin1')).toBe('metadata');
  let page83 = '';
  for (let entry = 0; entry < bytes.readUInt16LE(metadataOffset + 10); entry++) {
    const at = metadataOffset + 32 + entry * 32;
    if (msGuidText(bytes, at) === 'beca12ab-b2e6-4523-93ef-c309e000c746') page83 = msGuidText(bytes, metadataOffset + bytes.readUInt32LE(at + 16));
  }
  return { fileWriteGuid: msGuidText(bytes, 64 * 1024 + 16), dataWriteGuid: msGuidText(bytes, 64 * 1024 + 32), page83 };
}

async function qemuInfo(path: string, format: string): Promise<{ 'virtual-size': number; format: string }> {
  const { stdout } = await runOk('qemu-img', ['info', '--output=json', '-f', format, path]);
  return JSON.parse(stdout) as { 'virtual-size': number; format: string };
}

async function expectQemuVhdxClean(path: string, rawPath: string): Promise<void> {
  const check = await run('qemu-img', ['check', '-f', 'vhdx', path]);
  expect(check.stdout + check.stderr).toContain('No errors were found on the image.');
  expect(check.code).toBe(0);
  const compare = await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', path, rawPath]);
  expect(compare.stdout + compare.stderr).toContain('Images are identical.');
  expect(compare.code).toBe(0);
}

async function vhdiinfo(path: string): Promise<string> {
  const { stdout } = await runOk('vhdiinfo', [path]);
  return stdout;
}

function batEntries(layout: Layout, count: number): { state: number; fileOffset: number }[] {
  const bat = layout.extents.find((extent) => extent.start === VHDX_BAT_OFFSET);
  if (bat?.kind !== 'bytes') throw new Error('no BAT bytes at 2 MiB');
  return Array.from({ length: count }, (_, index) => readVhdxBatEntry(bat.data, index));
}

function random(length: number): Buffer {
  return randomBytes(length);
}

async function expectContainerError(promise: Promise<ContainerInfo>, message: RegExp): Promise<void> {
  const error: unknown = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(isSynthvhdError(error) && error.code).toBe('E_CONTAINER');
  expect((error as Error).message).toMatch(message);
}

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'synthvhd-vhdx-'));
  sourcePath = join(directory, 'source.bin');
  source = random(8 * MIB);
  await writeFile(sourcePath, source);
});

afterAll(async () => {
  await sources.close();
  await rm(directory, { recursive: true, force: true });
});

// ---- tests ----

describe('CRC-32C and GUIDs', () => {
  it('uses the standard CRC-32C (check value) with the checksum field taken as zero', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    const bytes = random(4096);
    const zeroed = Buffer.from(bytes);
    zeroed.fill(0, 4, 8);
    expect(vhdxChecksum(bytes, 4)).toBe(crc32c(zeroed) >>> 0);
  });

  it('stores GUIDs mixed-endian as MS-VHDX does, and derives v4-looking GUIDs deterministically', () => {
    // The BAT region GUID's on-disk bytes, as qemu's MSGUID and libvhdi spell them.
    expect(Buffer.from(VHDX_BAT_REGION_GUID).toString('hex')).toBe('6677c22d23f600429d64115e9bfd4a08');
    expect(guidToString(VHDX_BAT_REGION_GUID, 'ms')).toBe('2dc27766-f623-4200-9d64-115e9bfd4a08');
    expect(guidToString(Buffer.from('2dc27766f62342009d64115e9bfd4a08', 'hex'), 'rfc')).toBe('2dc27766-f623-4200-9d64-115e9bfd4a08');
    expect(guidFromString('{2DC27766-F623-4200-9D64-115E9BFD4A08}', 'ms')).toEqual(VHDX_BAT_REGION_GUID);
    expect(guidFromString('2dc27766-f623-4200-9d64-115e9bfd4a08}')).toBeUndefined();
    const identity = new Uint8Array(32).fill(1);
    const guid = deriveGuid(identity, 'x', 'ms');
    expect(deriveGuid(identity, 'x', 'ms')).toEqual(guid);
    expect(deriveGuid(identity, 'y', 'ms')).not.toEqual(guid);
    const text = guidToString(guid, 'ms');
    expect(text).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(guidToString(deriveGuid(identity, 'x', 'rfc'), 'rfc')).toBe(text);
    expect(guidToBracedLowercase(guid)).toBe(`{${text}}`);
  });

  it('encodes the parent locator as UTF-16LE key/value pairs that decode back', () => {
    const linkage = guidToBracedLowercase(deriveGuid(new Uint8Array(32), 'parent', 'ms'));
    const entries = [
      ['parent_linkage', linkage],
      ['relative_path', '..\\parent dir\\disk.vhdx'],
    ] as const;
    const bytes = encodeVhdxParentLocator(entries);
    expect(Buffer.from(bytes.subarray(0, 16)).toString('hex')).toBe('b7ef4ab09ed1814ab78925b8e9445913');
    expect(new DataView(bytes.buffer).getUint16(18, true)).toBe(2);
    expect(Buffer.from(bytes).includes(Buffer.from('relative_path', 'utf16le'))).toBe(true);
    expect([...decodeVhdxParentLocator(bytes)]).toEqual(entries.map(([key, value]) => [key, value]));
  });
});

describe('dynamic VHDX of a 512-byte-sector disk', () => {
  // 8 blocks of 1 MiB: 0 bytes | 1 zero | 2-5 file (unaligned source offset) | 6 zero | 7 partial (1536 bytes)
  const parts: Part[] = [
    { kind: 'bytes', data: random(64 * 1024) },
    { kind: 'zero', length: 2 * MIB + 4096 - 64 * 1024 },
    { kind: 'file', offset: 12345, length: 3 * MIB },
    { kind: 'zero', length: 7 * MIB - (5 * MIB + 4096) },
    { kind: 'bytes', data: random(1536) },
  ];

  it('is read identically by qemu-img and vhdiinfo, with ZERO blocks taking no room', async () => {
    const { disk, rawPath } = await makeDisk('small', parts);
    const diskSize = 7 * MIB + 1536;
    expect(disk.layout.size).toBe(diskSize);
    const layout = buildVhdxLayout(disk, { blockSize: MIB });

    // BAT: 8 payload entries, no sector bitmap slot reached; ZERO blocks carry offset 0.
    const entries = batEntries(layout, 8);
    expect(entries.map((entry) => entry.state)).toEqual([6, 2, 6, 6, 6, 6, 2, 6]);
    expect(entries.map((entry) => entry.fileOffset)).toEqual([4, 0, 5, 6, 7, 8, 0, 9].map((mib) => mib * MIB));
    // 1 MiB headers + 1 MiB log + 1 MiB BAT + 1 MiB metadata + 6 present blocks.
    expect(layout.size).toBe(4 * MIB + 6 * MIB);
    // The source file's range is still a file extent of the container (no copy).
    const fileExtents = layout.extents.filter((extent) => extent.kind === 'file');
    expect(fileExtents.reduce((sum, extent) => sum + extent.length, 0)).toBe(3 * MIB);
    expect(fileExtents.every((extent) => extent.kind === 'file' && extent.path === sourcePath)).toBe(true);
    expect(fileExtents[0]).toMatchObject({ start: 5 * MIB + 4096, offset: 12345 });

    const path = join(directory, 'small.vhdx');
    await writeLayout(layout, path);
    const info = await qemuInfo(path, 'vhdx');
    expect(info.format).toBe('vhdx');
    expect(info['virtual-size']).toBe(diskSize);
    await expectQemuVhdxClean(path, rawPath);

    const text = await vhdiinfo(path);
    expect(text).toContain('Disk type\t\t: Dynamic');
    expect(text).toContain(`(${diskSize} bytes)`);
    expect(text).toContain('Bytes per sector\t: 512 bytes');
    // libvhdi's Identifier is the header DataWriteGuid read as an MS GUID: our byte order agrees.
    expect(text).toContain(`Identifier\t\t: ${guidToString(vhdxDataWriteGuid(disk), 'ms')}`);
  });

  it('is byte-identical for equal disks (determinism) and follows the identity', async () => {
    const first = await makeDisk('det-a', parts);
    const second = await makeDisk('det-b', parts.map((part) => (part.kind === 'bytes' ? { ...part, data: Buffer.from(part.data) } : part)));
    const a = await layoutBytes(buildVhdxLayout(first.disk, { blockSize: MIB }));
    const b = await layoutBytes(buildVhdxLayout(second.disk, { blockSize: MIB }));
    expect(a.equals(b)).toBe(true);

    const other = await makeDisk('det-c', parts, { identity: new Uint8Array(32).fill(8) });
    const c = await layoutBytes(buildVhdxLayout(other.disk, { blockSize: MIB }));
    expect(c.equals(a)).toBe(false);
    // Only the identity-derived GUIDs (headers, Page83 in the metadata at 3 MiB) differ; the BAT
    // at 2 MiB and the payload from 4 MiB are the same.
    expect(c.subarray(0, MIB).equals(a.subarray(0, MIB))).toBe(false);
    expect(c.subarray(2 * MIB, 3 * MIB).equals(a.subarray(2 * MIB, 3 * MIB))).toBe(true);
    expect(c.subarray(3 * MIB, 4 * MIB).equals(a.subarray(3 * MIB, 4 * MIB))).toBe(false);
    expect(c.subarray(4 * MIB).equals(a.subarray(4 * MIB))).toBe(true);
    const headerA = decodeVhdxHeader(a.subarray(VHDX_HEADER2_OFFSET));
    const headerC = decodeVhdxHeader(c.subarray(VHDX_HEADER2_OFFSET));
    expect(headerA.dataWriteGuid).toEqual(vhdxDataWriteGuid(first.disk));
    expect(headerA.dataWriteGuid).toEqual(vhdxDataWriteGuid(second.disk));
    expect(headerC.dataWriteGuid).not.toEqual(headerA.dataWriteGuid);
    // The data write GUID does not depend on the block size.
    const big = await layoutBytes(buildVhdxLayout(first.disk, { blockSize: 2 * MIB }));
    expect(decodeVhdxHeader(big.subarray(VHDX_HEADER2_OFFSET)).dataWriteGuid).toEqual(headerA.dataWriteGuid);
  });

  it('writes header 1 (seq 1) and header 2 (seq 2) with the same GUIDs, no log, and inspects back', async () => {
    const { disk } = await makeDisk('inspect', parts);
    const layout = buildVhdxLayout(disk, { blockSize: MIB });
    const bytes = await layoutBytes(layout);
    const header1 = decodeVhdxHeader(bytes.subarray(VHDX_HEADER1_OFFSET));
    const header2 = decodeVhdxHeader(bytes.subarray(VHDX_HEADER2_OFFSET));
    expect([header1.sequenceNumber, header2.sequenceNumber]).toEqual([1n, 2n]);
    expect(header1.fileWriteGuid).toEqual(header2.fileWriteGuid);
    expect(header1.dataWriteGuid).toEqual(header2.dataWriteGuid);
    expect(header1.logGuid).toEqual(ZERO_GUID);
    expect([header2.logOffset, header2.logLength, header2.logVersion, header2.version]).toEqual([MIB, MIB, 0, 1]);
    expect(bytes.subarray(MIB, 2 * MIB).every((byte) => byte === 0)).toBe(true);
    expect(bytes.subarray(8, 8 + 16).toString('utf16le')).toBe('synthvhd');

    // The GUIDs as libvhdi reads them (its Identifier is the DataWriteGuid) and as the bytes
    // say, parsed here by hand; never from the functions that wrote them.
    const path = join(directory, 'inspect.vhdx');
    await writeLayout(layout, path);
    const identifier = /Identifier\s*:\s*(\S+)/.exec(await vhdiinfo(path))?.[1];
    const hand = handParsedVhdxGuids(bytes);
    expect(hand.dataWriteGuid).toBe(identifier);
    const info = await inspectContainer(layoutReader(layout), layout.size);
    expect(info).toEqual({
      format: 'vhdx',
      type: 'dynamic',
      virtualSize: 7 * MIB + 1536,
      blockSize: MIB,
      logicalSectorSize: 512,
      physicalSectorSize: 4096,
      dataWriteGuid: hand.dataWriteGuid,
      fileWriteGuid: hand.fileWriteGuid,
      page83: hand.page83,
      creator: 'synthvhd',
    });
  });

  it('inspectContainer rejects a damaged header CRC, region table CRC and BAT state', async () => {
    const { disk } = await makeDisk('damaged', parts);
    const layout = buildVhdxLayout(disk, { blockSize: MIB });
    await expectContainerError(
      inspectContainer(layoutReader(layout, new Map([[VHDX_HEADER1_OFFSET + 200, 0x01]])), layout.size),
      /^VHDX header 1 \(offset 65536\): CRC-32C mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)$/,
    );
    await expectContainerError(
      inspectContainer(layoutReader(layout, new Map([[VHDX_HEADER2_OFFSET + 40, 0x80]])), layout.size),
      /^VHDX header 2 \(offset 131072\): CRC-32C mismatch/,
    );
    await expectContainerError(
      inspectContainer(layoutReader(layout, new Map([[VHDX_REGION_TABLE2_OFFSET + 60_000, 0x10]])), layout.size),
      /^VHDX region table 2 \(offset 262144\): CRC-32C mismatch/,
    );
    // Payload entry 1 (ZERO = 2) made 7 (PARTIALLY_PRESENT): only valid in a differencing VHDX.
    await expectContainerError(
      inspectContainer(layoutReader(layout, new Map([[VHDX_BAT_OFFSET + 8, 0x05]])), layout.size),
      /payload entry 1: state 7 is not valid in a dynamic VHDX/,
    );
    await expectContainerError(inspectContainer(layoutReader(layout), layout.size - MIB), /beyond the file|outside the file/);
  });
});

describe('dynamic VHDX block geometry', () => {
  it('uses 32 MiB blocks by default and pads a partial last block to a full block', async () => {
    const diskSize = 40 * MIB + 512;
    const { disk, rawPath } = await makeDisk('default-block', [
      { kind: 'file', offset: 0, length: 5 * MIB },
      { kind: 'zero', length: 35 * MIB - 512 },
      { kind: 'bytes', data: random(1024) },
    ]);
    expect(disk.layout.size).toBe(diskSize);
    const layout = buildVhdxLayout(disk);
    expect(batEntries(layout, 2)).toEqual([
      { state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset: 4 * MIB },
      { state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset: 36 * MIB },
    ]);
    expect(layout.size).toBe(4 * MIB + 2 * 32 * MIB);
    const path = join(directory, 'default-block.vhdx');
    await writeLayout(layout, path);
    expect((await qemuInfo(path, 'vhdx'))['virtual-size']).toBe(diskSize);
    await expectQemuVhdxClean(path, rawPath);
    expect(await vhdiinfo(path)).toContain(`(${diskSize} bytes)`);
    expect((await inspectContainer(layoutReader(layout), layout.size)).blockSize).toBe(32 * MIB);
  });

  it('leaves a sector bitmap BAT slot after every chunk of payload entries', async () => {
    // 1 MiB blocks, 512-byte sectors: chunk ratio 4096, so block 4096 sits at BAT index 4097.
    const diskSize = 4 * 1024 * MIB + 2 * MIB + 512;
    const { disk, rawPath } = await makeDisk('chunks', [
      { kind: 'zero', length: 4095 * MIB },
      { kind: 'file', offset: 100 * 1024, length: MIB + 4096 }, // blocks 4095 and 4096
      { kind: 'zero', length: 2 * MIB - 4096 },
      { kind: 'bytes', data: random(512) }, // block 4098, partial
    ]);
    expect(disk.layout.size).toBe(diskSize);
    const geometry = vhdxBatGeometry(diskSize, MIB, 512);
    expect(geometry).toMatchObject({ chunkRatio: 4096, dataBlockCount: 4099, entryCount: 4100, regionLength: MIB });
    const layout = buildVhdxLayout(disk, { blockSize: MIB });
    const entries = batEntries(layout, 4100);
    expect(entries[4094]).toEqual({ state: PAYLOAD_BLOCK_ZERO, fileOffset: 0 });
    expect(entries[4095]).toEqual({ state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset: 4 * MIB });
    expect(entries[4096]).toEqual({ state: 0, fileOffset: 0 }); // SB_BLOCK_NOT_PRESENT
    expect(entries[4097]).toEqual({ state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset: 5 * MIB });
    expect(entries[4098]).toEqual({ state: PAYLOAD_BLOCK_ZERO, fileOffset: 0 });
    expect(entries[4099]).toEqual({ state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset: 6 * MIB });
    expect(layout.size).toBe(7 * MIB);
    const path = join(directory, 'chunks.vhdx');
    await writeLayout(layout, path);
    expect((await qemuInfo(path, 'vhdx'))['virtual-size']).toBe(diskSize);
    await expectQemuVhdxClean(path, rawPath);
  });

  it('refuses bad block sizes with E_USAGE', async () => {
    const { disk } = await makeDisk('bad-block', [{ kind: 'bytes', data: random(4096) }]);
    for (const blockSize of [512 * 1024, 3 * MIB, 512 * MIB, 1.5 * MIB]) {
      expect(() => buildVhdxLayout(disk, { blockSize })).toThrow(/is not a power of two between 1 MiB and 256 MiB/);
    }
    expect(() => buildVhdxLayout(disk, { blockSize: 256 * MIB })).not.toThrow();
  });
});

describe('VHDX size limit', () => {
  it('serves a 64 TiB all-zero disk with only headers, BAT and metadata, and refuses 64 TiB + 512', async () => {
    const size = 64 * TIB;
    const zeroDisk = (length: number): DiskImage => ({
      layout: new LayoutBuilder().zero(length, 'zeros: disk').build(),
      sectorSize: 512,
      identity: new Uint8Array(32),
      mtimeMs: 0,
    });
    const layout = buildVhdxLayout(zeroDisk(size));
    // 2^21 payload entries + 2^14 sector bitmap slots (chunk ratio 128), rounded up to 17 MiB.
    expect(vhdxBatGeometry(size, 32 * MIB, 512)).toMatchObject({ entryCount: 2 ** 21 + 2 ** 14 - 1, regionLength: 17 * MIB });
    // 1 MiB header section + 1 MiB log + 17 MiB BAT + 1 MiB metadata; every block is ZERO.
    expect(layout.size).toBe(MIB + MIB + 17 * MIB + MIB);
    const path = join(directory, 'limit.vhdx');
    await writeLayout(layout, path);
    expect((await qemuInfo(path, 'vhdx'))['virtual-size']).toBe(size);
    const check = await run('qemu-img', ['check', '-f', 'vhdx', path]);
    expect(check.stdout).toContain('No errors were found on the image.');
    expect(await vhdiinfo(path)).toContain(`(${size} bytes)`);
    await rm(path);

    expect(() => buildVhdxLayout(zeroDisk(size + 512))).toThrow(
      expect.objectContaining({ code: 'E_FORMAT_LIMIT', message: `disk is ${size + 512} bytes (64 TiB + 512 bytes): VHDX is limited to 64 TiB` }),
    );
  });
});

describe('dynamic VHDX of a 4Kn disk', () => {
  it('has 4096-byte logical sectors: vhdiinfo and vhdimount read it, qemu refuses it', async () => {
    const diskSize = 3 * MIB + 3 * 4096;
    const { disk, rawPath } = await makeDisk(
      'fourk',
      [
        { kind: 'bytes', data: random(8192) },
        { kind: 'zero', length: MIB },
        { kind: 'file', offset: 4096, length: MIB + 4096 },
        { kind: 'zero', length: diskSize - (8192 + MIB + MIB + 4096) - 4096 },
        { kind: 'bytes', data: random(4096) },
      ],
      { sectorSize: 4096 },
    );
    expect(disk.layout.size).toBe(diskSize);
    const layout = buildVhdxLayout(disk, { blockSize: MIB });
    const path = join(directory, 'fourk.vhdx');
    await writeLayout(layout, path);

    const text = await vhdiinfo(path);
    expect(text).toContain('Bytes per sector\t: 4096 bytes');
    expect(text).toContain(`(${diskSize} bytes)`);
    expect(await inspectContainer(layoutReader(layout), layout.size)).toMatchObject({ logicalSectorSize: 4096, physicalSectorSize: 4096 });

    // qemu 7.2's vhdx driver only supports 512-byte logical sectors (docs/containers.md §3.5).
    const qemu = await run('qemu-img', ['info', '-f', 'vhdx', path]);
    expect(qemu.code).not.toBe(0);
    expect(qemu.stderr).toContain('Operation not supported');

    const mountPoint = join(directory, 'mnt');
    await mkdir(mountPoint);
    await runOk('vhdimount', [path, mountPoint]);
    try {
      const served = await readFile(join(mountPoint, 'vhdi1'));
      const raw = await readFile(rawPath);
      expect(served.length).toBe(diskSize);
      expect(served.equals(raw)).toBe(true);
    } finally {
      await runOk('fusermount', ['-u', mountPoint]);
    }
  });
});

describe('inspectContainer on a VHDX qemu made', () => {
  it('reports qemu-img create -f vhdx as a dynamic VHDX of the right size', async () => {
    const path = join(directory, 'qemu.vhdx');
    await runOk('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=8M', path, '100M']);
    const handle = await open(path, 'r');
    try {
      const { size } = await handle.stat();
      const info = await inspectContainer(async (position, length) => {
        const bytes = Buffer.alloc(length);
        await handle.read(bytes, 0, length, position);
        return bytes;
      }, size);
      expect(info).toMatchObject({ format: 'vhdx', type: 'dynamic', virtualSize: 100 * MIB, blockSize: 8 * MIB, logicalSectorSize: 512 });
      expect(info.creator).toMatch(/^QEMU v/);
      expect(await vhdiinfo(path)).toContain(`Identifier\t\t: ${info.dataWriteGuid ?? 'none'}`);
    } finally {
      await handle.close();
    }
  });
});
