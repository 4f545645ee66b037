// SPDX-License-Identifier: MIT
/**
 * The one urBackup record codec (native/src/record_codec.cc) through the addon's decodeRecord:
 * records made by independent encoders (node:zlib, the zstd CLI, as urBackup's miniz and
 * ZSTD_compress make them) decode to the bytes that were encoded; damaged ones, an oversized
 * stored size and a wrong expected length are refused with one line. The bounds TypeScript uses
 * are the addon's. And a decoded block never serves an extent that needs another length (issue
 * 19, finding 1): one record named by a whole block and by the file's short last block.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync, inflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSynthvhdError } from '../src/errors/synthvhd-error.js';
import { MAX_DECODED_BYTES, RECORD_HEADER_SIZE, maxStoredBytes, readCompressedRecord } from '../src/extents/compressed-record.js';
import { readAt } from '../src/extents/read-at.js';
import { SourceFiles } from '../src/extents/source-files.js';
import { isNativeError } from '../src/native/native-error.js';
import { decodeRecord, decodeRecordUpTo, nativeRecordLimits } from '../src/native/native.js';
import { ImageBytes } from '../src/urbackup/images/image-bytes.js';
import { openImageDisk } from '../src/urbackup/images/open-image-backup.js';
import { seededRandom, writeUrbackupVhdxImage } from '../fixtures/urbackup-images.js';

const MIB = 1024 * 1024;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'synthvhd-record-codec-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `zstd -7` (urBackup: ZSTD_compress level 7), one frame with its content size. */
function zstdCli(bytes: Uint8Array): Uint8Array {
  const result = spawnSync('zstd', ['-7', '-c', '-q'], { input: bytes, maxBuffer: 256 * MIB });
  if (result.status !== 0) throw new Error(`zstd failed: ${result.stderr.toString()}`);
  return new Uint8Array(result.stdout);
}

function record(mode: number, payload: Uint8Array, storedSize = payload.length): Uint8Array {
  const bytes = new Uint8Array(RECORD_HEADER_SIZE + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, storedSize, true);
  view.setUint32(4, mode, true);
  bytes.set(payload, RECORD_HEADER_SIZE);
  return bytes;
}

/** Writes `records` after a 100-byte lead-in; returns the file and each record's offset. */
async function recordFile(name: string, records: readonly Uint8Array[]): Promise<{ path: string; offsets: number[] }> {
  const offsets: number[] = [];
  const parts: Uint8Array[] = [new Uint8Array(100).fill(0xab)];
  let at = 100;
  for (const one of records) {
    offsets.push(at);
    parts.push(one);
    at += one.length;
  }
  const path = join(dir, name);
  await writeFile(path, Buffer.concat(parts));
  return { path, offsets };
}

/** 2 MiB of half text, half noise: both codecs have work to do. */
function sampleBlock(seed: number, length = 2 * MIB): Uint8Array {
  const random = seededRandom(seed);
  const block = new Uint8Array(length);
  for (let at = 0; at < length; at++) block[at] = (at >> 12) % 2 === 0 ? 0x61 + (at % 7) : Math.floor(random() * 256);
  return block;
}

async function refusal(promise: Promise<unknown>): Promise<{ errno: string; reason: string }> {
  try {
    await promise;
  } catch (error) {
    if (isNativeError(error)) return { errno: error.errno, reason: error.reason ?? '' };
    throw error;
  }
  throw new Error('expected decodeRecord to refuse the record');
}

describe('decodeRecord (native/src/record_codec.cc through the addon)', () => {
  it('decodes zlib, zstd and stored records made by independent encoders to the bytes they encoded', async () => {
    const block = sampleBlock(1);
    const small = sampleBlock(2, 4096 + 512);
    const records = [record(1, deflateSync(block)), record(2, zstdCli(block)), record(0, block), record(2, zstdCli(small)), record(1, deflateSync(small, { level: 1 }))];
    const { path, offsets } = await recordFile('good.bin', records);
    const handle = await open(path, 'r');
    try {
      const expected = [block, block, block, small, small];
      for (const [index, truth] of expected.entries()) {
        const into = Buffer.alloc(truth.length + 16, 0xee);
        await decodeRecord(handle.fd, offsets[index] ?? -1, truth.length, into);
        expect(Buffer.compare(into.subarray(0, truth.length), truth), `record ${index}`).toBe(0);
        // Nothing written past the expected length.
        expect(into.subarray(truth.length).every((byte) => byte === 0xee)).toBe(true);
      }
      // The last block of a file may be short: learned with a range, then exact.
      const into = Buffer.alloc(2 * MIB);
      expect(await decodeRecordUpTo(handle.fd, offsets[3] ?? -1, 4096, 2 * MIB, into)).toBe(small.length);
      expect(Buffer.compare(into.subarray(0, small.length), small)).toBe(0);
      expect(await refusal(decodeRecordUpTo(handle.fd, offsets[3] ?? -1, small.length + 1, 2 * MIB, into))).toEqual({
        errno: 'EIO',
        reason: `zstd: decodes to ${small.length} bytes, expected ${small.length + 1}..${2 * MIB}`,
      });
    } finally {
      await handle.close();
    }
  });

  it('refuses damaged records, a wrong expected length and an unknown mode with one line each', async () => {
    const block = sampleBlock(3);
    const zstd = zstdCli(block);
    const zlib = new Uint8Array(deflateSync(block));
    const flippedZstd = zstd.slice();
    flippedZstd.fill(0x5a, 200, 400);
    const flippedZlib = zlib.slice();
    flippedZlib.fill(0x5a, 200, 400);
    const records = [record(2, flippedZstd), record(1, flippedZlib), record(1, zlib), record(2, zstd), record(7, zlib), record(0, block.subarray(0, 1000)), record(1, zlib.subarray(0, zlib.length / 2))];
    const { path, offsets } = await recordFile('bad.bin', records);
    const handle = await open(path, 'r');
    const at = (index: number): number => offsets[index] ?? -1;
    try {
      const into = Buffer.alloc(4 * MIB);
      const zstdDamage = await refusal(decodeRecord(handle.fd, at(0), 2 * MIB, into));
      expect(zstdDamage.errno).toBe('EIO');
      expect(zstdDamage.reason).toMatch(/^zstd: \S/);
      const zlibDamage = await refusal(decodeRecord(handle.fd, at(1), 2 * MIB, into));
      expect(zlibDamage.errno).toBe('EIO');
      expect(zlibDamage.reason).toMatch(/^zlib: \S/);
      // A good record asked for the wrong length: too short a block, too long a block.
      expect(await refusal(decodeRecord(handle.fd, at(2), MIB, into))).toEqual({ errno: 'EIO', reason: `zlib: decodes to more than ${MIB} bytes` });
      expect(await refusal(decodeRecord(handle.fd, at(2), 3 * MIB, into))).toEqual({ errno: 'EIO', reason: `zlib: decodes to ${2 * MIB} bytes, expected ${3 * MIB}` });
      expect(await refusal(decodeRecord(handle.fd, at(3), MIB, into))).toEqual({ errno: 'EIO', reason: `zstd: decodes to more than ${MIB} bytes` });
      expect(await refusal(decodeRecord(handle.fd, at(4), 2 * MIB, into))).toEqual({ errno: 'EIO', reason: 'unknown mode 7 (0 stored, 1 zlib, 2 zstd)' });
      expect(await refusal(decodeRecord(handle.fd, at(5), 2 * MIB, into))).toEqual({ errno: 'EIO', reason: `stored block of 1000 bytes, expected ${2 * MIB}` });
      expect((await refusal(decodeRecord(handle.fd, at(6), 2 * MIB, into))).reason).toMatch(/^zlib: the stream is cut short after \d+ bytes$/);
    } finally {
      await handle.close();
    }
  });

  it('refuses a stored size above the bound before reading it, and a record cut by the end of the file', async () => {
    const block = sampleBlock(4);
    const zstd = zstdCli(block);
    // A corrupt uint32: 4 GiB - 16 bytes of payload claimed in a file of a few MiB.
    const huge = record(2, zstd, 0xffff_fff0);
    const { path, offsets } = await recordFile('huge.bin', [huge, record(2, zstd, zstd.length + 10)]);
    const handle = await open(path, 'r');
    try {
      const into = Buffer.alloc(2 * MIB);
      // The bound's reason, not "the file ends": refused before any read of the payload.
      expect(await refusal(decodeRecord(handle.fd, offsets[0] ?? -1, 2 * MIB, into))).toEqual({
        errno: 'EIO',
        reason: `stored size 4294967280 is larger than the ${maxStoredBytes(2 * MIB)} bytes a block of ${2 * MIB} can compress to`,
      });
      const cut = await refusal(decodeRecord(handle.fd, offsets[1] ?? -1, 2 * MIB, into));
      expect(cut.reason).toMatch(/^the file ends inside the compressed payload \(at \d+\)$/);
      // Through the TypeScript edge: a typed error naming the file and the record.
      await expect(readCompressedRecord(handle, path, offsets[0] ?? -1, 2 * MIB)).rejects.toMatchObject({
        code: 'E_IO',
        path,
        message: expect.stringMatching(new RegExp(`^${path}: block record at 100: corrupt compressed block: stored size 4294967280 is larger than`)) as unknown,
      });
      // A block size above the one bound is refused before anything is allocated or read.
      await expect(readCompressedRecord(handle, path, 100, MAX_DECODED_BYTES + 512)).rejects.toMatchObject({ code: 'E_IO', path });
    } finally {
      await handle.close();
    }
  });
});

describe('one record bound', () => {
  it('TypeScript uses the codec’s numbers', () => {
    for (const length of [0, 1, 100, 4095, 128 * 1024 - 1, 128 * 1024, 31 * 1024 * 7, 2 * MIB, 2 * MIB + 512, 64 * MIB, 123_456_789]) {
      const native = nativeRecordLimits(length);
      expect(maxStoredBytes(length), `maxStoredBytes(${length})`).toBe(native.maxStoredBytes);
      expect(MAX_DECODED_BYTES).toBe(native.maxDecodedBytes);
      expect(RECORD_HEADER_SIZE).toBe(native.headerBytes);
    }
  });

  it('covers what the writer’s codecs make of incompressible blocks (zstd -7, zlib)', () => {
    for (const length of [512, 64 * 1024, 2 * MIB]) {
      const noise = randomBytes(length);
      expect(zstdCli(noise).length).toBeLessThanOrEqual(maxStoredBytes(length));
      expect(deflateSync(noise).length).toBeLessThanOrEqual(maxStoredBytes(length));
    }
  });
});

describe('a decoded block serves only extents of its own length (issue 19, finding 1)', () => {
  /**
   * A VHDXZ (FULLY_PRESENT blocks: opening it decodes only its headers, metadata, BAT and last
   * block) whose index maps container block `aliased` and the last block to one record that
   * decodes to exactly what the last block needs, less than a whole block.
   */
  async function aliasedImage(): Promise<{ path: string; record: number; lastLength: number; aliased: number }> {
    const volumeBytes = 8 * MIB;
    const volume = sampleBlock(5, volumeBytes);
    const used = Array.from({ length: volumeBytes / 4096 }, (_, block) => block);
    const image = writeUrbackupVhdxImage(volume, used, { random: seededRandom(6), compressed: { codec: 'zlib' } });
    const bytes = image.bytes;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const indexOffset = Number(view.getBigInt64(29, true));
    const logicalSize = Number(view.getBigInt64(37, true));
    const blockSize = view.getUint32(45, true);
    const count = Math.ceil(logicalSize / blockSize);
    const last = count - 1;
    const needed = logicalSize - last * blockSize;
    expect(needed).toBeLessThan(blockSize); // the last block can be short
    const lastRecord = Number(view.getBigInt64(indexOffset + last * 8, true));
    const lastPayload = bytes.subarray(lastRecord + 8, lastRecord + 8 + view.getUint32(lastRecord, true));
    const short = record(1, deflateSync(inflateSync(lastPayload).subarray(0, needed)));
    const index = new Uint8Array(bytes.subarray(indexOffset, indexOffset + count * 8));
    const indexView = new DataView(index.buffer);
    const aliased = last - 2;
    indexView.setBigInt64(last * 8, BigInt(indexOffset), true);
    indexView.setBigInt64(aliased * 8, BigInt(indexOffset), true);
    const out = Buffer.concat([bytes.subarray(0, indexOffset), short, index]);
    out.writeBigInt64LE(BigInt(indexOffset + short.length), 29);
    const path = join(dir, 'Image_C_260601-0100.vhdxz');
    await writeFile(path, out);
    return { path, record: indexOffset, lastLength: needed, aliased };
  }

  it('read the short last block first, then the whole block on the same record: a typed error naming the file, never wrong bytes', async () => {
    const { path, record: shared, lastLength } = await aliasedImage();
    const opened = await openImageDisk(path, (file) => open(file, 'r'));
    const onShared = opened.disk.extents.filter((extent) => extent.kind === 'compressed' && extent.record === shared);
    const lastPiece = onShared.find((extent) => extent.kind === 'compressed' && extent.blockLength === lastLength);
    const wholePiece = onShared.find((extent) => extent.kind === 'compressed' && extent.blockLength === 2 * MIB && extent.skip + extent.length > lastLength);
    if (lastPiece?.kind !== 'compressed' || wholePiece?.kind !== 'compressed') throw new Error('the fixture does not alias the record');
    const sources = new SourceFiles(8);
    const reader = new ImageBytes((file) => open(file, 'r'));
    try {
      const out = new Uint8Array(4096);
      await readAt(opened.disk, sources, lastPiece.start, out, Math.min(4096, lastPiece.length), 0);
      await reader.read(opened.disk, lastPiece.start, Math.min(4096, lastPiece.length));
      // Past the short block's end, inside the whole one.
      const inside = wholePiece.start + Math.max(0, lastLength - wholePiece.skip);
      for (const attempt of [
        (): Promise<unknown> => readAt(opened.disk, sources, inside, out, 4096, 0),
        (): Promise<unknown> => reader.read(opened.disk, inside, 4096),
      ]) {
        let failure: unknown;
        try {
          await attempt();
        } catch (error) {
          failure = error;
        }
        expect(isSynthvhdError(failure), String(failure)).toBe(true);
        if (!isSynthvhdError(failure)) continue;
        expect(failure.code).toBe('E_IO');
        expect(failure.path).toBe(path);
        expect(failure.message).toBe(`${path}: block record at ${shared}: corrupt compressed block: zlib: decodes to ${lastLength} bytes, expected ${2 * MIB}`);
      }
    } finally {
      await sources.close();
      await reader.close();
    }
  });
});
