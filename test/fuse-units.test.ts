// SPDX-License-Identifier: MIT
/** The pure parts of src/fuse: errno mapping, inode ranges, mountinfo parsing, mount options. */
import { constants } from 'node:os';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SynthvhdError } from '../src/errors/synthvhd-error.js';
import { errnoOf, systemError } from '../src/fuse/errno.js';
import { ForegroundActivity } from '../src/fuse/foreground-activity.js';
import { realInode, virtualInode } from '../src/fuse/inode.js';
import { parseMountinfo } from '../src/fuse/mountinfo.js';
import { DEFAULT_TUNING } from '../src/fuse/mount.js';
import { fuseMountOptions } from '../src/fuse/native-session.js';
import { virtualNamesOf } from '../src/fuse/served-disks.js';

const errno = constants.errno;

describe('errnoOf', () => {
  it('maps SynthvhdErrors: E_IO → EIO, a missing or unservable disk → ENOENT', () => {
    expect(errnoOf(new SynthvhdError('E_IO', 'x: read failed'))).toBe(-errno.EIO);
    expect(errnoOf(new SynthvhdError('E_INTERNAL', 'bug'))).toBe(-errno.EIO);
    for (const code of ['E_INCOMPLETE', 'E_PLACEMENT', 'E_MBRDATA', 'E_RAW_IMAGE', 'E_FORMAT_LIMIT'] as const) {
      expect(errnoOf(new SynthvhdError(code, 'x'))).toBe(-errno.ENOENT);
    }
  });

  it('passes source errors through, writes are EROFS, anything else is EIO', () => {
    expect(errnoOf(systemError('ENOENT', 'gone'))).toBe(-errno.ENOENT);
    expect(errnoOf(systemError('ENOTDIR', 'x'))).toBe(-errno.ENOTDIR);
    expect(errnoOf(systemError('EROFS', 'x'))).toBe(-errno.EROFS);
    expect(errnoOf(systemError('EWEIRD', 'x'))).toBe(-errno.EIO);
    expect(errnoOf(new TypeError('bug'))).toBe(-errno.EIO);
    expect(errnoOf('string')).toBe(-errno.EIO);
  });
});

describe('inode numbers', () => {
  it('keep the source inode on the root file system and use disjoint hashed ranges otherwise', () => {
    expect(realInode(2049, 1234, 2049)).toBe(1234);
    const elsewhere = realInode(50, 1234, 2049);
    expect(elsewhere).toBeGreaterThanOrEqual(2 ** 30);
    expect(elsewhere).toBeLessThan(2 ** 31);
    expect(realInode(50, 1234, 2049)).toBe(elsewhere);
    expect(realInode(51, 1234, 2049)).not.toBe(elsewhere);
    const virtual = virtualInode('/pc/241101-0100_Image_C/Image_C_241101-0100.disk.vhdx');
    expect(virtual).toBeGreaterThanOrEqual(2 ** 31);
    expect(virtual).toBeLessThan(2 ** 32);
    expect(virtualInode('/pc/241101-0100_Image_C/Image_C_241101-0100.disk.vhdx')).toBe(virtual);
    expect(virtualInode('/pc/241101-0100_Image_C/Image_C_241101-0100.disk.vhd')).not.toBe(virtual);
  });
});

describe('parseMountinfo', () => {
  it('reads device, mount point (unescaped) and type', () => {
    const text = [
      '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
      '98 22 0:45 / /srv/my\\040disks rw,nosuid,nodev,relatime shared:50 - fuse.synthvhd synthvhd ro,user_id=0,group_id=0',
      '',
    ].join('\n');
    expect(parseMountinfo(text)).toEqual([
      { device: '254:0', mountPoint: '/', fsType: 'ext4', source: '/dev/vda' },
      { device: '0:45', mountPoint: '/srv/my disks', fsType: 'fuse.synthvhd', source: 'synthvhd' },
    ]);
  });
});

describe('mount options', () => {
  it('are read-only, let the kernel check permissions, and ask for 1 MiB reads', () => {
    const list = fuseMountOptions(DEFAULT_TUNING.maxRead, true);
    for (const option of ['ro', 'default_permissions', 'allow_other', 'max_read=1048576', 'subtype=synthvhd', 'fsname=synthvhd']) expect(list).toContain(option);
    expect(fuseMountOptions(DEFAULT_TUNING.maxRead, false)).not.toContain('allow_other');
    expect(DEFAULT_TUNING.pageCache).toBe('keep');
  });
});

describe('virtual names', () => {
  it('exist only in drive-letter backup folders', () => {
    expect([...virtualNamesOf('241101-0100_Image_C').entries()]).toEqual([
      ['Image_C_241101-0100.disk.vhdx', 'vhdx'],
      ['Image_C_241101-0100.disk.vhd', 'vhd'],
    ]);
    expect(virtualNamesOf('241101-0058_Image_ESP').size).toBe(0);
    expect(virtualNamesOf('241101-0058_Image_SYSVOL').size).toBe(0);
    expect(virtualNamesOf('something else').size).toBe(0);
  });
});

describe('ForegroundActivity', () => {
  // A fake clock (performance.now and the timers, @sinonjs/fake-timers under vi.useFakeTimers)
  // decides when things happen: the assertions are about order and causality (not before the
  // quiet time after the last request, exactly then), never about how long the machine took.
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('lets background work start only once requests have paused for the quiet time', async () => {
    const activity = new ForegroundActivity();
    let resolved = false;
    void activity.quiet(60, 10_000).then(() => {
      resolved = true;
    });
    // A burst: a request every 15 ms for 8 rounds (the last at 105 ms).
    for (let round = 0; round < 8; round++) {
      activity.touch();
      await vi.advanceTimersByTimeAsync(15);
      expect(resolved, `round ${round}`).toBe(false);
    }
    await vi.advanceTimersByTimeAsync(164 - 120);
    expect(resolved, '59 ms after the last request').toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(resolved, '60 ms after the last request').toBe(true);
  });

  it('does not let a client that never pauses starve the work', async () => {
    const activity = new ForegroundActivity();
    const timer = setInterval(() => {
      activity.touch();
    }, 5);
    let resolved = false;
    void activity.quiet(100, 300).then(() => {
      resolved = true;
    });
    try {
      await vi.advanceTimersByTimeAsync(299);
      expect(resolved, 'before the longest wait').toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(resolved, 'at the longest wait, requests still arriving').toBe(true);
    } finally {
      clearInterval(timer);
    }
  });

  it('starts at once when no request came for the quiet time', async () => {
    const activity = new ForegroundActivity();
    let resolved = false;
    void activity.quiet(50, 1000).then(() => {
      resolved = true;
    });
    await vi.advanceTimersByTimeAsync(49);
    expect(resolved).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(resolved).toBe(true);
  });
});
