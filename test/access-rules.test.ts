// SPDX-License-Identifier: MIT
/**
 * The two pure rules behind "who may read what": the owner and mode of a virtual file from the
 * stats of its sources, and the Windows paths written into a differencing VHDX's parent locator.
 * Expectations are written out by hand from POSIX permission semantics and MS-VHDX 2.6.2.6.3.
 */
import { describe, expect, it } from 'vitest';
import { absoluteWin32Path, parseWindowsFolder } from '../src/container/windows-path.js';
import { mirroredMode, virtualAccess, type SourceObject } from '../src/fuse/reader-access.js';

const file = (uid: number, gid: number, mode: number): SourceObject => ({ uid, gid, mode: 0o100000 | mode, isDirectory: false });
const folder = (uid: number, gid: number, mode: number): SourceObject => ({ uid, gid, mode: 0o040000 | mode, isDirectory: true });

describe('virtualAccess', () => {
  it('grants every class that every source grants, through folders that can be entered', () => {
    expect(virtualAccess([folder(0, 0, 0o755), file(0, 0, 0o644), file(0, 0, 0o644)], 0, 0)).toEqual({ uid: 0, gid: 0, mode: 0o444 });
    expect(virtualAccess([folder(34, 34, 0o750), file(34, 34, 0o640)], 34, 34).mode).toBe(0o440);
    expect(virtualAccess([folder(34, 34, 0o700), file(34, 34, 0o600)], 34, 34).mode).toBe(0o400);
  });

  it('a folder without search permission for a class takes that class away', () => {
    // Readable files, but the companion's folder is 0700: only the owner gets through.
    expect(virtualAccess([folder(0, 0, 0o755), file(0, 0, 0o644), folder(0, 0, 0o700), file(0, 0, 0o644)], 0, 0).mode).toBe(0o400);
    // Group may read the files, but the folder gives the group no x.
    expect(virtualAccess([folder(0, 5, 0o741), file(0, 5, 0o640)], 0, 5).mode).toBe(0o400);
  });

  it('a source owned by someone else counts its group and other classes against the owner', () => {
    // The virtual owner 1000 does not own the second file (owner 2000, 0640 group 5): 1000 may
    // or may not be in group 5, so the other class (no read) decides: owner gets nothing.
    expect(virtualAccess([file(1000, 5, 0o644), file(2000, 5, 0o640)], 1000, 5).mode).toBe(0o040);
    // With other-read on the second file, everyone may read it: the first decides.
    expect(virtualAccess([file(1000, 5, 0o640), file(2000, 5, 0o644)], 1000, 5).mode).toBe(0o440);
  });

  it('a source in another group denies the virtual group unless its other class grants', () => {
    expect(virtualAccess([file(0, 5, 0o640), file(0, 6, 0o640)], 0, 5).mode).toBe(0o400);
    expect(virtualAccess([file(0, 5, 0o644), file(0, 6, 0o644)], 0, 5).mode).toBe(0o444);
    // Anyone but the owner may be in group 6, whose bits (none) then apply: only the owner reads.
    expect(virtualAccess([file(0, 5, 0o644), file(0, 6, 0o604)], 0, 5).mode).toBe(0o400);
  });

  it('mirrored entries keep their permissions without write and set-id bits', () => {
    expect(mirroredMode(0o100644)).toBe(0o444);
    expect(mirroredMode(0o040775)).toBe(0o555);
    expect(mirroredMode(0o106750)).toBe(0o550);
    expect(mirroredMode(0o041777)).toBe(0o1555);
  });
});

describe('Windows paths for absolute_win32_path', () => {
  it('accepts drive-letter and share folders, with \\ or /, and writes the \\\\?\\ forms', () => {
    expect(absoluteWin32Path(parseWindowsFolder('D:\\VMs\\'), 'disk0.vhdx')).toBe('\\\\?\\D:\\VMs\\disk0.vhdx');
    expect(absoluteWin32Path(parseWindowsFolder('D:'), 'a/b.vhdx')).toBe('\\\\?\\D:\\a\\b.vhdx');
    expect(absoluteWin32Path(parseWindowsFolder('\\\\nas\\vdisks'), 'pc1/241101-0100_Image_C/Image_C_241101-0100.disk.vhdx')).toBe(
      '\\\\?\\UNC\\nas\\vdisks\\pc1\\241101-0100_Image_C\\Image_C_241101-0100.disk.vhdx',
    );
    expect(absoluteWin32Path(parseWindowsFolder('//nas/restore'), 'parent.vhdx')).toBe('\\\\?\\UNC\\nas\\restore\\parent.vhdx');
    expect(absoluteWin32Path(parseWindowsFolder('\\\\?\\UNC\\nas\\x'), 'p.vhdx')).toBe('\\\\?\\UNC\\nas\\x\\p.vhdx');
  });

  it('refuses a Linux path, a relative one, a bare server and characters Windows forbids', () => {
    for (const bad of ['/srv/vdisks', 'vdisks', '\\\\nas', 'C:relative', '\\\\nas\\share\\a*b']) {
      expect(() => parseWindowsFolder(bad), bad).toThrow(/--windows-path: .* (is not a Windows|holds a character)/);
    }
    expect(() => absoluteWin32Path('D:\\VMs', '../x.vhdx')).toThrow(/not below the folder named by --windows-path/);
  });
});
