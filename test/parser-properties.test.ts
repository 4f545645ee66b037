// SPDX-License-Identifier: MIT
/**
 * Property tests of the TypeScript parsers of backup files (issue 19, done-item 5): on any bytes,
 * and on valid files written as urBackup writes them (fixtures/urbackup-images.ts) then
 * truncated or with fields overwritten (checksums recomputed or not), every parser returns a
 * value or throws a SynthvhdError with a code, never another exception; it reads no more than
 * the file holds at once, and what it keeps is bounded by the file's size (the bounds stated in
 * the parsers). Seeded, bounded runs.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isSynthvhdError } from '../src/errors/synthvhd-error.js';
import { parseContainer } from '../src/container/inspect.js';
import { VHD_FOOTER_SIZE, decodeVhdDynamicHeader, decodeVhdFooter, vhdChecksum } from '../src/container/vhd.js';
import { writeVhdxChecksum } from '../src/container/vhdx/checksum.js';
import { decodeVhdxHeader } from '../src/container/vhdx/header.js';
import { decodeVhdxMetadataTable } from '../src/container/vhdx/metadata.js';
import { decodeVhdxParentLocator } from '../src/container/vhdx/parent-locator.js';
import { decodeVhdxRegionTable } from '../src/container/vhdx/region-table.js';
import { parseMbrFile } from '../src/urbackup/mbr-data.js';
import { COMPRESSED_HEADER_READ, indexLength, parseCompressedHeader, parseCompressedIndex } from '../src/urbackup/images/compressed-file.js';
import { MAX_VHD_BAT_ENTRIES, parseUrbackupVhd } from '../src/urbackup/images/urbackup-vhd.js';
import { seededRandom, writeUrbackupImage, writeUrbackupVhdxImage } from '../fixtures/urbackup-images.js';
import { memoryImageFile } from './helpers/memory-file.js';

const SEED = 1919;
const KIB = 1024;
const MIB = 1024 * KIB;

/** The outcome of one parse: a value, or a SynthvhdError with a code; anything else fails. */
async function outcome(run: () => unknown): Promise<string> {
  try {
    await run();
    return 'value';
  } catch (error) {
    if (!isSynthvhdError(error) || typeof error.code !== 'string' || !error.code.startsWith('E_')) {
      throw new Error(`not a SynthvhdError: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    }
    return error.code;
  }
}

/** A read callback over `bytes` that remembers its largest request. */
function tracked(bytes: Uint8Array): { read: (position: number, length: number) => Promise<Uint8Array>; largest: () => number } {
  let largest = 0;
  return {
    read: (position, length) => {
      largest = Math.max(largest, length);
      return Promise.resolve(bytes.subarray(position, position + length));
    },
    largest: () => largest,
  };
}

/** Field values that break size arithmetic. */
const NASTY = [0, 1, 0x7f, 0x80, 0xff, 0x1ff, 0x200, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

interface Mutation {
  readonly truncateTo: number | undefined;
  readonly edits: readonly (readonly [at: number, value: number, width: 1 | 2 | 4 | 8, littleEndian: boolean])[];
  readonly fixChecksums: boolean;
}

/** Mutations that land in `regions` (where the structures are). */
function mutations(regions: readonly (readonly [number, number])[]): fc.Arbitrary<Mutation> {
  const total = regions.reduce((sum, [, length]) => sum + length, 0);
  const position = fc.nat({ max: total - 1 }).map((offset) => {
    let left = offset;
    for (const [start, length] of regions) {
      if (left < length) return start + left;
      left -= length;
    }
    return 0;
  });
  return fc.record({
    truncateTo: fc.option(fc.nat(), { nil: undefined }),
    edits: fc.array(fc.tuple(position, fc.oneof(fc.constantFrom(...NASTY), fc.nat()), fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const), fc.boolean()), {
      minLength: 1,
      maxLength: 4,
    }),
    fixChecksums: fc.boolean(),
  });
}

function applyMutation(base: Uint8Array, mutation: Mutation, fix: (bytes: Uint8Array) => void): Uint8Array {
  const bytes = base.slice();
  const view = new DataView(bytes.buffer);
  for (const [at, value, width, littleEndian] of mutation.edits) {
    if (at + width > bytes.length) continue;
    if (width === 1) view.setUint8(at, value & 0xff);
    else if (width === 2) view.setUint16(at, value & 0xffff, littleEndian);
    else if (width === 4) view.setUint32(at, value >>> 0, littleEndian);
    else view.setBigUint64(at, BigInt(value) * (value % 3 === 0 ? 0x100000000n : 1n), littleEndian);
  }
  if (mutation.fixChecksums) fix(bytes);
  return mutation.truncateTo === undefined ? bytes : bytes.subarray(0, mutation.truncateTo % (bytes.length + 1));
}

function fixVhdChecksums(bytes: Uint8Array): void {
  const put = (at: number, length: number, field: number): void => {
    if (at < 0 || at + length > bytes.length) return;
    const part = bytes.subarray(at, at + length);
    new DataView(part.buffer, part.byteOffset, length).setUint32(field, vhdChecksum(part, field), false);
  };
  put(0, VHD_FOOTER_SIZE, 64);
  put(bytes.length - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, 64);
  put(512, 1024, 36);
}

function fixVhdxChecksums(bytes: Uint8Array): void {
  // MS-VHDX 2.2.2 headers (4 KiB at 64 and 128 KiB) and 2.2.3 region tables (64 KiB at 192 and 256 KiB).
  for (const [at, length] of [[64 * KIB, 4 * KIB], [128 * KIB, 4 * KIB], [192 * KIB, 64 * KIB], [256 * KIB, 64 * KIB]] as const) {
    if (at + length <= bytes.length) writeVhdxChecksum(bytes.subarray(at, at + length), 4);
  }
}

const random = seededRandom(SEED);
const volume = new Uint8Array(256 * KIB).map((_, index) => (index % 4096 < 2048 ? (index * 7) & 0xff : 0));
const used = [0, 1, 5, 20, 63];
let vhd: Uint8Array;
let vhdz: Uint8Array;
let vhdx: Uint8Array;

beforeAll(() => {
  vhd = writeUrbackupImage(volume, used, { random }).bytes;
  vhdz = writeUrbackupImage(volume, used, { random, compressed: { codec: 'zlib' } }).bytes;
  vhdx = writeUrbackupVhdxImage(volume, used, { random }).bytes;
});

/** What a parsed urBackup VHD keeps, against the file: the BAT within the file and the stated cap. */
function checkVhdBounds(bat: Uint32Array, fileSize: number): void {
  expect(bat.length).toBeLessThanOrEqual(MAX_VHD_BAT_ENTRIES);
  expect(bat.length * 4).toBeLessThanOrEqual(fileSize);
}

describe('VHD (urBackup reader and inspect)', () => {
  it('arbitrary bytes and mutated files: a value or a SynthvhdError; reads and the BAT bounded by the file', async () => {
    const regions = (bytes: Uint8Array): [number, number][] => [[0, 2048], [bytes.length - 512, 512]];
    const property = async (bytes: Uint8Array): Promise<void> => {
      const urbackup = tracked(bytes);
      await outcome(async () => {
        const parsed = await parseUrbackupVhd(urbackup.read, bytes.length);
        checkVhdBounds(parsed.bat, bytes.length);
      });
      expect(urbackup.largest()).toBeLessThanOrEqual(bytes.length);
      const generic = tracked(bytes);
      await outcome(async () => {
        const parsed = await parseContainer(generic.read, bytes.length);
        expect(parsed.format === 'vhd' ? parsed.bat.length : 0).toBeLessThanOrEqual(bytes.length);
      });
      expect(generic.largest()).toBeLessThanOrEqual(bytes.length);
    };
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), property), { seed: SEED, numRuns: 150 });
    await fc.assert(
      fc.asyncProperty(mutations(regions(vhd)), (mutation) => property(applyMutation(vhd, mutation, fixVhdChecksums))),
      { seed: SEED, numRuns: 300 },
    );
  });

  it('footer and dynamic header decoders on any 512/1024 bytes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 1100 }), async (bytes) => {
        await outcome(() => decodeVhdFooter(bytes));
        await outcome(() => decodeVhdDynamicHeader(bytes));
      }),
      { seed: SEED, numRuns: 300 },
    );
  });
});

describe("urBackup's compressed container (.vhdz) and the VHD inside", () => {
  it('header and index on arbitrary bytes: the index is inside the file', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), fc.nat(), async (bytes, extra) => {
        const magic = new TextEncoder().encode(`URBACKUP COMPRESSED FILE#1.${extra % 2}\u0000`);
        const file = extra % 3 === 0 ? bytes : new Uint8Array([...magic, ...bytes]);
        await outcome(() => {
          const header = parseCompressedHeader(file.subarray(0, COMPRESSED_HEADER_READ), file.length);
          expect(header.indexOffset + indexLength(header)).toBeLessThanOrEqual(file.length);
          const offsets = parseCompressedIndex(file.subarray(header.indexOffset, header.indexOffset + indexLength(header)), header);
          expect(offsets.length * 8).toBeLessThanOrEqual(file.length);
        });
      }),
      { seed: SEED, numRuns: 400 },
    );
  });

  it('mutated .vhdz files opened and parsed as the reader does: a value or a SynthvhdError, bounded', async () => {
    const indexAt = Number(new DataView(vhdz.buffer).getBigInt64(29, true));
    const regions: [number, number][] = [[0, 64], [indexAt, vhdz.length - indexAt], [64, 256]];
    await fc.assert(
      fc.asyncProperty(mutations(regions), async (mutation) => {
        const bytes = applyMutation(vhdz, mutation, () => undefined);
        await outcome(async () => {
          const file = await memoryImageFile(bytes);
          try {
            const inner = tracked(new Uint8Array(0));
            const parsed = await parseUrbackupVhd(async (position, length) => {
              await inner.read(position, length);
              return file.read(position, length);
            }, file.size);
            // The stated bounds: at most 16 MiB of BAT, reads of at most the BAT's size.
            expect(parsed.bat.length).toBeLessThanOrEqual(MAX_VHD_BAT_ENTRIES);
            expect(inner.largest()).toBeLessThanOrEqual(Math.max(MAX_VHD_BAT_ENTRIES * 4, 1024));
          } finally {
            await file.close();
          }
        });
      }),
      { seed: SEED, numRuns: 150 },
    );
  });
});

describe('VHDX', () => {
  it('mutated files: a value or a SynthvhdError; reads and the BAT bounded by the file', async () => {
    // The headers and region tables, the metadata table and items (2 MiB), the BAT (3 MiB).
    const regions: [number, number][] = [[0, 320 * KIB], [2 * MIB, 64 * KIB + 1024], [3 * MIB, 4096]];
    await fc.assert(
      fc.asyncProperty(mutations(regions), async (mutation) => {
        const bytes = applyMutation(vhdx, mutation, fixVhdxChecksums);
        const reader = tracked(bytes);
        await outcome(async () => {
          const parsed = await parseContainer(reader.read, bytes.length);
          if (parsed.format === 'vhdx') expect(parsed.bat.length).toBeLessThanOrEqual(bytes.length);
        });
        expect(reader.largest()).toBeLessThanOrEqual(bytes.length);
      }),
      { seed: SEED, numRuns: 150 },
    );
  });

  it('header, region table, metadata table and parent locator decoders on any bytes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 70 * KIB }), fc.nat(), async (bytes, regionLength) => {
        await outcome(() => decodeVhdxHeader(bytes));
        await outcome(() => decodeVhdxRegionTable(bytes));
        await outcome(() => decodeVhdxMetadataTable(bytes, regionLength));
        await outcome(() => decodeVhdxParentLocator(bytes));
      }),
      { seed: SEED, numRuns: 150 },
    );
    // A parent locator with plausible structure: header, entries, then the strings.
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.nat({ max: 300 }), fc.nat({ max: 40 }), fc.nat({ max: 300 }), fc.nat({ max: 40 })), { maxLength: 6 }), fc.uint8Array({ maxLength: 200 }), async (entries, tail) => {
        const bytes = new Uint8Array(20 + entries.length * 12 + tail.length);
        const view = new DataView(bytes.buffer);
        bytes.set([0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13]);
        view.setUint16(18, entries.length, true);
        entries.forEach(([keyOffset, keyLength, valueOffset, valueLength], index) => {
          view.setUint32(20 + index * 12, keyOffset, true);
          view.setUint32(24 + index * 12, valueOffset, true);
          view.setUint16(28 + index * 12, keyLength, true);
          view.setUint16(30 + index * 12, valueLength, true);
        });
        bytes.set(tail, 20 + entries.length * 12);
        await outcome(() => decodeVhdxParentLocator(bytes));
      }),
      { seed: SEED, numRuns: 200 },
    );
  });
});

describe('.raw.mbr', () => {
  /** common/data.cpp: u32 LE length + bytes. */
  const string = (bytes: Uint8Array): Uint8Array => new Uint8Array([...new Uint8Array(new Uint32Array([bytes.length]).buffer), ...bytes]);
  const int32 = (value: number): Uint8Array => new Uint8Array(new Int32Array([value]).buffer);
  const valid = (version: number): Uint8Array => {
    const parts = [new Uint8Array([1, version]), int32(0), int32(1), string(new Uint8Array([65])), string(new Uint8Array([66])), string(new Uint8Array([78])), string(new Uint8Array(512))];
    if (version === 1) for (let field = 0; field < 4; field++) parts.push(new Uint8Array(8), string(new Uint8Array(field % 2 === 0 ? 92 : 16384)));
    parts.push(string(new Uint8Array(0)));
    const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  };

  it('arbitrary and mutated files: a value or a SynthvhdError; what is kept is within the file', async () => {
    const property = async (bytes: Uint8Array): Promise<void> => {
      const code = await outcome(() => {
        const parsed = parseMbrFile(bytes, '/x.raw.mbr');
        if (parsed.kind === 'volume') {
          const { gpt } = parsed.data;
          const kept = parsed.data.mbr.length + (gpt === undefined ? 0 : gpt.header.length + gpt.table.length + gpt.backupHeader.length + gpt.backupTable.length);
          expect(kept).toBeLessThanOrEqual(bytes.length);
        }
      });
      if (code !== 'value') expect(code).toBe('E_MBRDATA');
    };
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), property), { seed: SEED, numRuns: 300 });
    for (const version of [0, 1]) {
      const base = valid(version);
      expect(parseMbrFile(base, '/x.raw.mbr').kind).toBe('volume');
      await fc.assert(
        fc.asyncProperty(mutations([[0, Math.min(base.length, 700)]]), (mutation) => property(applyMutation(base, mutation, () => undefined))),
        { seed: SEED, numRuns: 300 },
      );
    }
  });
});
