// SPDX-License-Identifier: MIT
/**
 * The served disk boots. A small disk with a Windows layout is backed up as urBackup RAW (its
 * volumes, never the MSR or the sectors after the MBR), served by `synthvhd mount`, and booted
 * by qemu (TCG) from a qcow2 overlay over the served `Image_C_<ts>.disk.vhdx`:
 *   - UEFI, as a Hyper-V Generation 2 VM boots: OVMF runs GRUB from the ESP, GRUB finds C: by
 *     its NTFS serial, reads the run's nonce, the kernel and the initramfs from it;
 *   - BIOS, Windows' MBR chain: SeaBIOS runs the MBR's code, which runs the active
 *     (System Reserved) partition's boot sector, whose loader reads the kernel and initramfs
 *     from that NTFS volume (test/helpers/boot-disk.ts says what stands in for Windows' code).
 * The guest's witness is its serial console: its init read C:'s boot sector (a random serial)
 * and a range no backup holds through its own virtio disk, and wrote a sector, which must land
 * in the overlay while the served file stays byte for byte the same.
 */
import { copyFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildBiosBootDisk, buildUefiBootDisk } from './helpers/boot-disk.js';
import { buildInitramfs, findKernelDeb, unpackKernel, type GuestKernel, type GuestLayout } from './helpers/boot-guest.js';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { bootQemu, OVMF_VARS, qemuRead, serialTail, type BootRun } from './helpers/qemu-boot.js';
import { runOk, sha256File } from './helpers/run.js';
import { readSavedGpt, writeRawBackup, type RawBackupRequest } from './helpers/urbackup-raw-backup.js';

/** Past this the guest is killed and the test fails with the serial log's tail (a TCG boot takes 25–35 s on a quiet machine here). */
const BOOT_DEADLINE_MS = 120_000;
const TEST_TIMEOUT_MS = 300_000;
const SECTOR = 512;

const kernelDeb = await findKernelDeb();
const skipReason = 'missing' in kernelDeb ? kernelDeb.missing : undefined;
const kernelDir = await mkdtemp(join(tmpdir(), 'synthvhd-boot-kernel-'));
let kernel: Promise<GuestKernel> | undefined;
/** The kernel is unpacked once for both boots. */
function guestKernel(): Promise<GuestKernel> {
  if (!('deb' in kernelDeb)) throw new Error(kernelDeb.missing);
  kernel ??= unpackKernel(kernelDeb.deb, kernelDir);
  return kernel;
}

afterAll(async () => {
  await rm(kernelDir, { recursive: true, force: true });
});

interface ServedBoot {
  readonly boot: BootRun;
  readonly overlay: string;
  readonly overlaySizeBefore: number;
  readonly served: string;
  readonly servedHashBefore: string;
  readonly servedHashAfter: string;
  /** The 512 bytes at `at` of the overlay (the guest's view) and of the served file, read by qemu-io after the boot. */
  readonly overlaySector: Buffer;
  readonly servedSector: Buffer;
}

/**
 * Writes the backups under `work`/backups, mounts them, boots the C: backup's served `.disk.vhdx`
 * through a fresh qcow2 overlay, and reads back sector `at` of both. Always unmounts.
 */
async function bootServed(work: string, backups: readonly Omit<RawBackupRequest, 'backupRoot'>[], uefi: boolean, at: number): Promise<ServedBoot> {
  const backupRoot = join(work, 'backups');
  for (const backup of backups) await writeRawBackup({ ...backup, backupRoot });
  const c = backups.find((backup) => backup.letter === 'C');
  if (c === undefined) throw new Error('no C: backup to boot');

  const mountpoint = await tempMountpoint();
  let mount: MountedChild | undefined;
  try {
    mount = await startMount(backupRoot, mountpoint.path);
    const served = join(mountpoint.path, c.client, `${c.timestamp}_Image_C`, `Image_C_${c.timestamp}.disk.vhdx`);
    const servedHashBefore = await sha256File(served);
    const overlay = join(work, 'overlay.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'vhdx', '-b', served, overlay]);
    const overlaySizeBefore = (await stat(overlay)).size;
    let uefiVars: string | undefined;
    if (uefi) {
      uefiVars = join(work, 'OVMF_VARS_4M.fd');
      await copyFile(OVMF_VARS, uefiVars);
    }
    const boot = await bootQemu({ disk: overlay, serialLog: join(work, 'serial.log'), timeoutMs: BOOT_DEADLINE_MS, ...(uefiVars === undefined ? {} : { uefiVars }) });
    console.log(`boot-test: ${uefi ? 'UEFI' : 'BIOS'} guest powered off after ${boot.seconds.toFixed(1)} s`);
    return {
      boot, overlay, overlaySizeBefore, served, servedHashBefore,
      servedHashAfter: await sha256File(served),
      overlaySector: await qemuRead(overlay, 'qcow2', at, SECTOR),
      servedSector: await qemuRead(served, 'vhdx', at, SECTOR),
    };
  } finally {
    if (mount !== undefined) await mount.stop();
    await mountpoint.cleanup();
  }
}

/** What the guest's init prints when it ran (test/helpers/boot-guest.ts). */
function bootMarker(nonce: string, cSerial: bigint): string {
  const serial = Buffer.alloc(8);
  serial.writeBigUInt64LE(cSerial);
  return `SYNTHVHD-BOOT-OK nonce=${nonce} oem=NTFS     serial=${serial.toString('hex')} unbacked=zeros`;
}

if (skipReason !== undefined) console.warn(`boot-test: skipped: ${skipReason}`);

/** The guest wrote its line at the sector, the overlay holds it, the served file does not and did not change. */
async function expectWrittenToOverlayOnly(result: ServedBoot, nonce: string): Promise<void> {
  expect((await stat(result.overlay)).size).toBeGreaterThan(result.overlaySizeBefore);
  const line = Buffer.from(`SYNTHVHD-GUEST-WROTE ${nonce}\n`);
  expect(result.overlaySector.subarray(0, line.length).toString('latin1')).toBe(line.toString('latin1'));
  expect(result.overlaySector.subarray(line.length).equals(Buffer.alloc(SECTOR - line.length))).toBe(true);
  expect(result.servedSector.equals(Buffer.alloc(SECTOR))).toBe(true);
  expect(result.servedHashAfter).toBe(result.servedHashBefore);
}

describe('a served disk boots', () => {
  it('UEFI: OVMF runs GRUB from the ESP, which starts the kernel and initramfs from NTFS C:, through a qcow2 overlay over the served .vhdx', async (ctx) => {
    ctx.skip(skipReason !== undefined, skipReason);
    const work = await mkdtemp(join(tmpdir(), 'synthvhd-boot-uefi-'));
    try {
      // GPT entry 2 is the MSR (no backup: served as zeros), entry 3 is C:.
      const layout: GuestLayout = { c: '/dev/vda3', unbacked: { device: '/dev/vda2', firstSector: 0, sectors: 64 }, writeSector: 7 };
      const initrd = join(work, 'initrd.gz');
      await buildInitramfs(await guestKernel(), join(work, 'initramfs'), initrd, layout);
      const disk = await buildUefiBootDisk({ dir: work, vmlinuz: (await guestKernel()).vmlinuz, initrd });
      const gpt = await readSavedGpt(disk.image);
      const client = 'boot-uefi';
      // The ESP just before C:, as urBackup images them in one run (docs/urbackup-formats.md §1.1).
      const result = await bootServed(work, [
        { client, letter: 'ESP', timestamp: '250301-0958', disk: disk.image, partition: disk.esp, volumeLength: disk.esp.length, serial: String(disk.fatVolumeId), label: '', fsName: 'FAT32', gpt },
        // Windows reports the low 32 bits of the NTFS serial (docs/urbackup-formats.md §3.3 #5).
        { client, letter: 'C', timestamp: '250301-1000', disk: disk.image, partition: disk.c, volumeLength: disk.ntfsLength, serial: String(disk.ntfsSerial & 0xffffffffn), label: 'Windows', fsName: 'NTFS', gpt },
      ], true, disk.msr.offset + layout.writeSector * SECTOR);

      const marker = bootMarker(disk.nonce, disk.ntfsSerial);
      expect(result.boot.serial.includes(marker), `no "${marker}" on the serial console:\n${serialTail(result.boot.serial)}`).toBe(true);
      expect(result.boot.serial).toContain(`SYNTHVHD-GRUB: C: is (hd0,gpt${disk.c.number})`);
      await expectWrittenToOverlayOnly(result, disk.nonce);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);

  it('BIOS: SeaBIOS runs the MBR code, which runs the active System Reserved partition\'s boot sector, whose loader starts the kernel from it', async (ctx) => {
    ctx.skip(skipReason !== undefined, skipReason);
    const work = await mkdtemp(join(tmpdir(), 'synthvhd-boot-bios-'));
    try {
      // MBR entry 1 is System Reserved (SYSVOL), entry 2 is C:; the sectors after the MBR are in no backup.
      const layout: GuestLayout = { c: '/dev/vda2', unbacked: { device: '/dev/vda', firstSector: 1, sectors: 64 }, writeSector: 7 };
      const initrd = join(work, 'initrd.gz');
      await buildInitramfs(await guestKernel(), join(work, 'initramfs'), initrd, layout);
      const disk = await buildBiosBootDisk({ dir: work, vmlinuz: (await guestKernel()).vmlinuz, initrd });
      const client = 'boot-bios';
      const result = await bootServed(work, [
        { client, letter: 'SYSVOL', timestamp: '250302-0958', disk: disk.image, partition: disk.sysvol, volumeLength: disk.sysvolLength, serial: String(disk.sysvolSerial & 0xffffffffn), label: 'System Reserved', fsName: 'NTFS' },
        { client, letter: 'C', timestamp: '250302-1000', disk: disk.image, partition: disk.c, volumeLength: disk.cLength, serial: String(disk.cSerial & 0xffffffffn), label: 'Windows', fsName: 'NTFS' },
      ], false, layout.writeSector * SECTOR);

      const marker = bootMarker(disk.nonce, disk.cSerial);
      expect(result.boot.serial.includes(marker), `no "${marker}" on the serial console:\n${serialTail(result.boot.serial)}`).toBe(true);
      // The loader on System Reserved printed its banner and read the kernel and initramfs there.
      expect(result.boot.serial).toMatch(/^SYSLINUX \d[^\n]*\r?\nLoading \/vmlinuz\.\.\. ?ok\r?\nLoading \/initrd\.gz\.\.\. ?ok\r?$/m);
      await expectWrittenToOverlayOnly(result, disk.nonce);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);
});
