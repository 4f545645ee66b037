// SPDX-License-Identifier: MIT
/**
 * Parent chains of urBackup VHD image backups (issue 19, finding 3): a file that is its own
 * ancestor through `..` or a hard link is one clear error naming it, found on the first repeat
 * (by device and inode, not by path string); a parent's Unique Id is checked before its BAT is
 * read; a chain at the depth limit (docs/urbackup-image-formats.md) opens, one deeper does not.
 */
import { link, mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSynthvhdError } from '../src/errors/synthvhd-error.js';
import { ImageBytes } from '../src/urbackup/images/image-bytes.js';
import type { SourceOpener } from '../src/urbackup/images/image-file.js';
import { MAX_CHAIN_DEPTH, openImageDisk } from '../src/urbackup/images/open-image-backup.js';
import { type WrittenImage, seededRandom, writeEmptyVhdChild, writeUrbackupImage } from '../fixtures/urbackup-images.js';

const random = seededRandom(1903);
let dir: string;
let opened: string[] = [];
/** Records every path opened (how far a walk went). */
const opener: SourceOpener = (path) => {
  opened.push(path);
  return open(path, 'r');
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'synthvhd-chains-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function expectError(promise: Promise<unknown>, code: string, text: RegExp): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect(isSynthvhdError(error)).toBe(true);
    if (!isSynthvhdError(error)) throw error;
    expect(error.code).toBe(code);
    expect(error.message).toMatch(text);
    return error.message;
  }
  throw new Error('expected an error');
}

/**
 * `image` with `parent_unicodename` (dynamic header at 512, the name at +64, UTF-16BE, 512 bytes;
 * the checksum at +36 is the ones' complement of the header's byte sum with the field zero).
 */
function withParentName(image: WrittenImage, name: string): Uint8Array {
  const bytes = image.bytes.slice();
  const header = bytes.subarray(512, 512 + 1024);
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  header.fill(0, 64, 64 + 512);
  for (let index = 0; index < name.length; index++) view.setUint16(64 + index * 2, name.charCodeAt(index), false);
  view.setUint32(36, 0, false);
  let sum = 0;
  for (const byte of header) sum += byte;
  view.setUint32(36, ~sum >>> 0, false);
  return bytes;
}

const VOLUME = 512 * 1024;
const volume = new Uint8Array(VOLUME).map((_, index) => (index * 31 + 7) & 0xff);

describe('parent chains', () => {
  it('a loop through `..` is found on the first repeat, naming the file', async () => {
    const folder = join(dir, 'dots');
    await mkdir(join(folder, 'sub'), { recursive: true });
    const full = writeUrbackupImage(volume, [0], { random });
    const path = join(folder, 'Image_C_260101-0100.vhd');
    // A differencing image whose parent name is itself through a subfolder and `..`.
    const child = writeEmptyVhdChild({ path: join(folder, 'other.vhd'), uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize }, random);
    await writeFile(path, withParentName(child, 'sub/../Image_C_260101-0100.vhd'));
    opened = [];
    const message = await expectError(openImageDisk(path, opener), 'E_CONTAINER', /loops back/);
    expect(message.startsWith(`${folder}/sub/../Image_C_260101-0100.vhd: `)).toBe(true);
    expect(message).toContain(`the same file as ${path}`);
    // Two opens: the image, and its "parent" (the same file), refused before anything is read.
    expect(opened).toEqual([path, `${folder}/sub/../Image_C_260101-0100.vhd`]);
  });

  it('a loop through a hard link is found on the first repeat, naming the file', async () => {
    const folder = join(dir, 'hardlink');
    await mkdir(folder, { recursive: true });
    const full = writeUrbackupImage(volume, [0], { random });
    const path = join(folder, 'Image_C_260102-0100.vhd');
    const child = writeEmptyVhdChild({ path: join(folder, 'Image_C_alias.vhd'), uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize }, random);
    await writeFile(path, child.bytes);
    await link(path, join(folder, 'Image_C_alias.vhd'));
    opened = [];
    const message = await expectError(openImageDisk(path, opener), 'E_CONTAINER', /loops back/);
    expect(message.startsWith(`${join(folder, 'Image_C_alias.vhd')}: `)).toBe(true);
    expect(message).toContain(`${path} names it as its parent`);
    expect(opened).toEqual([path, join(folder, 'Image_C_alias.vhd')]);
  });

  it("a parent's Unique Id is checked before its BAT is read", async () => {
    const folder = join(dir, 'order');
    await mkdir(folder, { recursive: true });
    const full = writeUrbackupImage(volume, [0], { random });
    // The parent's BAT entry 0 (at 1536: footer copy, dynamic header) points far past its end.
    const damaged = full.bytes.slice();
    new DataView(damaged.buffer).setUint32(1536, 0x7fffffff, false);
    const parentPath = join(folder, 'Image_C_full.vhd');
    await writeFile(parentPath, damaged);
    const info = { path: parentPath, uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize };
    const wrongId = writeEmptyVhdChild({ ...info, uniqueId: new Uint8Array(16).fill(9) }, random);
    const wrongPath = join(folder, 'Image_C_wrong.vhd');
    await writeFile(wrongPath, wrongId.bytes);
    // The Unique Id is wrong: that is the error, not the parent's BAT.
    await expectError(openImageDisk(wrongPath, opener), 'E_CONTAINER', /^.*Image_C_wrong\.vhd: wrong parent: .*Image_C_full\.vhd has Unique Id/);
    // With the right id, the parent's BAT is read, and its damage is the error.
    const rightPath = join(folder, 'Image_C_right.vhd');
    await writeFile(rightPath, writeEmptyVhdChild(info, random).bytes);
    await expectError(openImageDisk(rightPath, opener), 'E_CONTAINER', /Image_C_full\.vhd: VHD BAT entry 0/);
  });

  it(`a chain of ${MAX_CHAIN_DEPTH} files opens; one more file is refused`, async () => {
    const folder = join(dir, 'deep');
    await mkdir(folder, { recursive: true });
    const full = writeUrbackupImage(volume, [0, 1], { random, clientBlockSize: 4096 });
    let parent = { path: join(folder, 'level-0.vhd'), uniqueId: full.uniqueId, timeStamp: full.timeStamp, size: full.diskSize };
    await writeFile(parent.path, full.bytes);
    for (let level = 1; level <= MAX_CHAIN_DEPTH; level++) {
      const child = writeEmptyVhdChild(parent, random);
      const path = join(folder, `level-${level}.vhd`);
      await writeFile(path, child.bytes);
      parent = { path, uniqueId: child.uniqueId, timeStamp: child.timeStamp, size: child.diskSize };
    }
    // level-(MAX-1) is the top of a chain of MAX files: it opens and reads as the base.
    const top = join(folder, `level-${MAX_CHAIN_DEPTH - 1}.vhd`);
    const disk = await openImageDisk(top, opener);
    expect(disk.chain.length).toBe(MAX_CHAIN_DEPTH);
    const reader = new ImageBytes(opener);
    try {
      const bytes = await reader.read(disk.disk, 512 * 1024, 8192);
      expect(Buffer.from(bytes).equals(Buffer.from(volume.subarray(0, 8192)))).toBe(true);
    } finally {
      await reader.close();
    }
    // level-MAX has MAX + 1 files below and including it.
    const deeper = join(folder, `level-${MAX_CHAIN_DEPTH}.vhd`);
    await expectError(openImageDisk(deeper, opener), 'E_CONTAINER', new RegExp(`level-1\\.vhd: the differencing chain is deeper than ${MAX_CHAIN_DEPTH} files`));
  });
});
