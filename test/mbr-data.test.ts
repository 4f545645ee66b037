// SPDX-License-Identifier: MIT
/** The `.raw.mbr` parser against hand-built SMBRData records (docs/urbackup-formats.md §3.2–3.3). */
import { describe, expect, it } from 'vitest';
import { parseMbrFile } from '../src/urbackup/mbr-data.js';

function str(text: string | Uint8Array): Buffer {
  const bytes = typeof text === 'string' ? Buffer.from(text) : Buffer.from(text);
  const length = Buffer.alloc(4);
  length.writeUInt32LE(bytes.length);
  return Buffer.concat([length, bytes]);
}

function int32(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeInt32LE(value);
  return bytes;
}

const mbr = Buffer.alloc(512, 0x11);

function version0(tail: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([Buffer.from([1, 0]), int32(2), int32(1), str('123456'), str('System'), str('NTFS'), str(mbr), str(''), tail]);
}

describe('parseMbrFile', () => {
  it('reads a version 0 record without the optional tail', () => {
    const parsed = parseMbrFile(version0(), 'x.raw.mbr');
    expect(parsed.kind).toBe('volume');
    if (parsed.kind !== 'volume') return;
    expect(parsed.data).toMatchObject({ version: 0, deviceNumber: 2, partitionNumber: 1, serialNumber: '123456', volumeName: 'System', fsName: 'NTFS', errorMessage: '' });
    expect(parsed.data.extraData).toBeUndefined();
  });

  it('reads the extra-data tail with SQLite varints (512 = 0x84 0x00)', () => {
    const extra = Buffer.alloc(300, 7);
    // varint 300 = 0x82 0x2C (two 7-bit groups, big-endian).
    const parsed = parseMbrFile(version0(Buffer.concat([Buffer.from([0x84, 0x00, 0x82, 0x2c]), extra])), 'x.raw.mbr');
    if (parsed.kind !== 'volume') throw new Error('expected a volume');
    expect(parsed.data.extraData?.position).toBe(512);
    expect(Buffer.from(parsed.data.extraData?.data ?? [])).toEqual(extra);
  });

  it('recognizes a whole-disk image (version 100)', () => {
    expect(parseMbrFile(Buffer.from([1, 100, 0, 0]), 'x').kind).toBe('whole-disk');
  });

  it('names the file and the field in its errors', () => {
    expect(() => parseMbrFile(version0().subarray(0, 30), '/b/x.raw.mbr')).toThrow(/^\/b\/x\.raw\.mbr: truncated: fsn length needs 4 bytes at offset 30/);
    expect(() => parseMbrFile(Buffer.from([1, 3]), '/b/x.raw.mbr')).toThrow('/b/x.raw.mbr: unknown version byte 3');
    expect(() => parseMbrFile(Buffer.from([0, 0]), 'm')).toThrow('status byte is 0');
    const tooLong = version0();
    tooLong.writeUInt32LE(1000, 10);
    expect(() => parseMbrFile(tooLong, 'm')).toThrow(/serial_number length 1000 at offset 14 runs past the end/);
    expect(() => parseMbrFile(Buffer.concat([version0(), Buffer.from([0x84, 0x00, 5, 1])]), 'm')).toThrow(/extra_data length 5/);
  });

  it('keeps nothing of the buffer it parsed: a scan reuses one buffer for every file', () => {
    const int64 = (value: number): Buffer => {
      const bytes = Buffer.alloc(8);
      bytes.writeBigInt64LE(BigInt(value));
      return bytes;
    };
    const header = Buffer.alloc(92, 0x45);
    const table = Buffer.alloc(16384, 0x5a);
    const gptRecord = (): Buffer =>
      Buffer.concat([Buffer.from([1, 1]), int32(0), int32(2), str('S'), str('C'), str('NTFS'), str(mbr), int64(512), str(header), int64(1024), str(table), int64(4096), str(header), int64(2048), str(table), str(''), Buffer.from([0x84, 0x00, 3, 1, 2, 3])]);
    const buffer = gptRecord();
    const parsed = parseMbrFile(buffer, 'x.raw.mbr');
    buffer.fill(0xee);
    const again = parseMbrFile(gptRecord(), 'y.raw.mbr');
    for (const result of [parsed, again]) {
      if (result.kind !== 'volume' || result.data.gpt === undefined) throw new Error('expected a GPT volume');
      expect(Buffer.from(result.data.mbr)).toEqual(mbr);
      expect(Buffer.from(result.data.gpt.header)).toEqual(header);
      expect(Buffer.from(result.data.gpt.table)).toEqual(table);
      expect(Buffer.from(result.data.gpt.backupTable)).toEqual(table);
      expect(Buffer.from(result.data.extraData?.data ?? [])).toEqual(Buffer.from([1, 2, 3]));
    }
  });
});
