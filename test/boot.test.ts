// SPDX-License-Identifier: MIT
/**
 * The served disk boots. A small disk with Windows' UEFI layout (ESP with a boot loader, MSR, an
 * NTFS C: holding a kernel and an initramfs) is backed up as urBackup RAW (ESP and C:, the MSR
 * never), served by `synthvhd mount`, and booted by qemu with OVMF, as a Hyper-V Generation 2 VM
 * boots, from a qcow2 overlay over the served `Image_C_<ts>.disk.vhdx`. The guest's own witness
 * is its serial console: GRUB found C: by its NTFS serial and read its kernel, initramfs and the
 * run's nonce from it; the guest's kernel read C:'s boot sector and the MSR through its virtio
 * disk and wrote a sector, which must land in the overlay while the served file stays the same.
 */
import { copyFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildUefiBootDisk } from './helpers/boot-disk.js';
import { buildInitramfs, findKernelDeb, unpackKernel } from './helpers/boot-guest.js';
import { startMount, tempMountpoint, type MountedChild } from './helpers/fuse-mount.js';
import { bootQemu, OVMF_VARS, qemuRead, serialTail } from './helpers/qemu-boot.js';
import { runOk, sha256File } from './helpers/run.js';
import { readSavedGpt, writeRawBackup } from './helpers/urbackup-raw-backup.js';

/** Past this the guest is killed and the test fails with the serial log's tail (a TCG boot takes about 25 s here). */
const BOOT_DEADLINE_MS = 120_000;
/** The MSR sector the guest's init writes its line into (any sector of the never-backed-up MSR). */
const GUEST_WRITE_SECTOR = 7;

describe('a served disk boots', () => {
  it('UEFI: OVMF runs GRUB from the ESP, which starts the kernel and initramfs from NTFS C:, through a qcow2 overlay over the served .vhdx', async (ctx) => {
    const kernelDeb = await findKernelDeb();
    ctx.skip('missing' in kernelDeb, 'missing' in kernelDeb ? kernelDeb.missing : '');
    if (!('deb' in kernelDeb)) return;

    const work = await mkdtemp(join(tmpdir(), 'synthvhd-boot-'));
    let mountpoint: Awaited<ReturnType<typeof tempMountpoint>> | undefined;
    let mount: MountedChild | undefined;
    try {
      const kernel = await unpackKernel(kernelDeb.deb, join(work, 'kernel'));
      const initrd = join(work, 'initrd.gz');
      await buildInitramfs(kernel, join(work, 'initramfs'), initrd, GUEST_WRITE_SECTOR);
      const disk = await buildUefiBootDisk({ dir: work, vmlinuz: kernel.vmlinuz, initrd });

      // The backup: the ESP just before C:, as urBackup images them in one run (docs/urbackup-formats.md §1.1).
      const backupRoot = join(work, 'backups');
      const gpt = await readSavedGpt(disk.image);
      const client = 'boot-uefi';
      await writeRawBackup({
        backupRoot, client, letter: 'ESP', timestamp: '250301-0958', disk: disk.image, partition: disk.esp, volumeLength: disk.esp.length,
        serial: String(disk.fatVolumeId), label: '', fsName: 'FAT32', gpt,
      });
      await writeRawBackup({
        backupRoot, client, letter: 'C', timestamp: '250301-1000', disk: disk.image, partition: disk.c, volumeLength: disk.ntfsLength,
        // Windows reports the low 32 bits of the NTFS serial (docs/urbackup-formats.md §3.3 #5).
        serial: String(disk.ntfsSerial & 0xffffffffn), label: 'Windows', fsName: 'NTFS', gpt,
      });

      mountpoint = await tempMountpoint();
      mount = await startMount(backupRoot, mountpoint.path);
      const served = join(mountpoint.path, client, '250301-1000_Image_C', 'Image_C_250301-1000.disk.vhdx');
      const servedHashBefore = await sha256File(served);

      const overlay = join(work, 'overlay.qcow2');
      await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'vhdx', '-b', served, overlay]);
      const overlayBefore = (await stat(overlay)).size;
      const vars = join(work, 'OVMF_VARS_4M.fd');
      await copyFile(OVMF_VARS, vars);

      const boot = await bootQemu({ disk: overlay, serialLog: join(work, 'serial.log'), uefiVars: vars, timeoutMs: BOOT_DEADLINE_MS });
      console.log(`boot-test: UEFI guest powered off after ${boot.seconds.toFixed(1)} s`);

      // GRUB found C: by its serial, and the guest's init ran and saw C: and the MSR through its own kernel.
      const serialHex = Buffer.alloc(8);
      serialHex.writeBigUInt64LE(disk.ntfsSerial);
      const marker = `SYNTHVHD-BOOT-OK nonce=${disk.nonce} oem=NTFS     serial=${serialHex.toString('hex')} msr=zeros`;
      expect(boot.serial.includes(marker), `no "${marker}" on the serial console:\n${serialTail(boot.serial)}`).toBe(true);
      expect(boot.serial).toContain(`SYNTHVHD-GRUB: C: is (hd0,gpt${disk.c.number})`);

      // The guest's write is in the overlay, and only there.
      expect((await stat(overlay)).size).toBeGreaterThan(overlayBefore);
      const written = disk.msr.offset + GUEST_WRITE_SECTOR * 512;
      const line = Buffer.from(`SYNTHVHD-GUEST-WROTE ${disk.nonce}\n`);
      const inOverlay = await qemuRead(overlay, 'qcow2', written, 512);
      expect(inOverlay.subarray(0, line.length).toString('latin1')).toBe(line.toString('latin1'));
      expect(inOverlay.subarray(line.length).equals(Buffer.alloc(512 - line.length))).toBe(true);
      expect((await qemuRead(served, 'vhdx', written, 512)).equals(Buffer.alloc(512))).toBe(true);
      expect(await sha256File(served)).toBe(servedHashBefore);
    } finally {
      if (mount !== undefined) await mount.stop();
      if (mountpoint !== undefined) await mountpoint.cleanup();
      await rm(work, { recursive: true, force: true });
    }
  }, 300_000);
});
