// SPDX-License-Identifier: MIT
/**
 * A small bootable disk with Windows' UEFI layout (ESP, MSR, C:), every structure made by an
 * external tool: sgdisk for the GPT, mkfs.vfat and mtools for the FAT32 ESP, grub-mkimage for
 * the boot loader (Debian's grub-efi-amd64-bin), mkntfs and ntfscp for the NTFS C:.
 *
 * The boot path is the one firmware takes with a Windows disk, with GRUB in the boot manager's
 * place: UEFI firmware with no boot entries of its own runs the removable-media path
 * \EFI\BOOT\BOOTX64.EFI of the ESP (UEFI spec §3.5.1.1); GRUB's embedded configuration finds C:
 * by its NTFS serial (GRUB prints it as the fs UUID, 16 hex digits), sources a file from C:
 * that sets the run's nonce, and starts the kernel and initramfs that are files on C:.
 */
import { randomBytes } from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from './run.js';
import type { DiskPartition } from './urbackup-raw-backup.js';

export const MiB = 1024 * 1024;

export interface UefiBootDisk {
  readonly image: string;
  readonly size: number;
  readonly esp: DiskPartition;
  readonly msr: DiskPartition;
  readonly c: DiskPartition;
  /** C:'s 64-bit NTFS serial (boot sector 0x48). */
  readonly ntfsSerial: bigint;
  /** Bytes NTFS says it spans (boot sector 0x28 × 0x0B): its partition minus the backup boot sector. */
  readonly ntfsLength: number;
  readonly fatVolumeId: number;
  readonly nonce: string;
}

/** The boot loader's file on the ESP: the removable-media default path for x64 (UEFI spec §3.5.1.1). */
const BOOT_LOADER = '/EFI/BOOT/BOOTX64.EFI';
/** GRUB modules the embedded configuration uses (Debian's /usr/lib/grub/x86_64-efi). */
const GRUB_MODULES = ['part_gpt', 'fat', 'ntfs', 'search', 'search_fs_uuid', 'configfile', 'normal', 'echo', 'linux', 'gzio', 'test'];

async function writeAt(path: string, position: number, data: Buffer): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(data, 0, data.length, position);
  } finally {
    await handle.close();
  }
}

async function readAt(path: string, position: number, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, position);
    return buffer;
  } finally {
    await handle.close();
  }
}

async function sparseFile(path: string, size: number): Promise<void> {
  const handle = await open(path, 'w');
  try {
    await handle.truncate(size);
  } finally {
    await handle.close();
  }
}

/** Copies a partition image into the disk at `offset` (dd: sparse, so holes stay holes). */
async function place(partitionImage: string, disk: string, offset: number): Promise<void> {
  await runOk('dd', [`if=${partitionImage}`, `of=${disk}`, 'bs=512', `seek=${offset / 512}`, 'conv=notrunc,sparse', 'status=none']);
}

export interface UefiBootDiskRequest {
  readonly dir: string;
  readonly vmlinuz: string;
  readonly initrd: string;
}

export async function buildUefiBootDisk(request: UefiBootDiskRequest): Promise<UefiBootDisk> {
  const { dir } = request;
  const image = join(dir, 'disk.img');
  const size = 128 * MiB;
  await sparseFile(image, size);
  await runOk('sgdisk', [
    '-o',
    '-n', '1:2048:+34M', '-t', '1:EF00', '-c', '1:EFI system partition',
    '-n', '2:0:+16M', '-t', '2:0C01', '-c', '2:Microsoft reserved partition',
    '-n', '3:0:0', '-t', '3:0700', '-c', '3:Basic data partition',
    image,
  ]);
  const table = (await runOk('sgdisk', ['-p', image])).stdout;
  const partition = (number: number): DiskPartition => {
    const m = new RegExp(`^\\s*${number}\\s+(\\d+)\\s+(\\d+)\\s`, 'm').exec(table);
    if (m === null) throw new Error(`sgdisk made no partition ${number}:\n${table}`);
    const first = Number(m[1]);
    return { number, offset: first * 512, length: (Number(m[2]) - first + 1) * 512 };
  };
  const [esp, msr, c] = [partition(1), partition(2), partition(3)];
  const nonce = randomBytes(8).toString('hex');
  const ntfsSerial = randomBytes(8).readBigUInt64LE();
  const fatVolumeId = randomBytes(4).readUInt32LE();

  // The MSR is never backed up: a pattern in the original disk shows whether zeros are served there.
  await writeAt(image, msr.offset, Buffer.alloc(msr.length, 'MSR!'));

  // C: first: GRUB's configuration needs its serial.
  const cImage = join(dir, 'c.img');
  await sparseFile(cImage, c.length);
  await runOk('mkntfs', ['-F', '-Q', '-q', '-s', '512', '-p', String(c.offset / 512), '-H', '255', '-S', '63', '-L', 'Windows', cImage]);
  const boot = await readAt(cImage, 0, 512);
  const ntfsLength = Number(boot.readBigUInt64LE(0x28)) * boot.readUInt16LE(0x0b);
  // mkntfs takes no serial: set it in the boot sector and in its backup in the partition's last sector.
  const serial = Buffer.alloc(8);
  serial.writeBigUInt64LE(ntfsSerial);
  await writeAt(cImage, 0x48, serial);
  await writeAt(cImage, c.length - 512 + 0x48, serial);
  const grubSource = join(dir, 'synthvhd.cfg');
  await writeFile(grubSource, `set nonce=${nonce}\n`);
  for (const [file, name] of [[request.vmlinuz, '/vmlinuz'], [request.initrd, '/initrd.gz'], [grubSource, '/synthvhd.cfg']] as const) {
    await runOk('ntfscp', ['-q', cImage, file, name]);
  }
  await place(cImage, image, c.offset);

  // GRUB with its configuration embedded (grub-mkimage -c): no grub.cfg to find on the ESP.
  const uuid = ntfsSerial.toString(16).padStart(16, '0');
  const earlyConfig = join(dir, 'grub-early.cfg');
  await writeFile(earlyConfig, [
    `echo "SYNTHVHD-GRUB: looking for NTFS ${uuid}"`,
    `search --no-floppy --fs-uuid --set=root ${uuid}`,
    'echo "SYNTHVHD-GRUB: C: is ($root)"',
    'source ($root)/synthvhd.cfg',
    'linux ($root)/vmlinuz console=ttyS0 panic=-1 synthvhd.nonce=$nonce',
    'initrd ($root)/initrd.gz',
    'boot',
    '',
  ].join('\n'));
  const loader = join(dir, 'BOOTX64.EFI');
  await runOk('grub-mkimage', ['-O', 'x86_64-efi', '-o', loader, '-p', '/EFI/BOOT', '-c', earlyConfig, ...GRUB_MODULES]);

  const espImage = join(dir, 'esp.img');
  await sparseFile(espImage, esp.length);
  await runOk('mkfs.vfat', ['-F', '32', '-S', '512', '-s', '1', '-h', String(esp.offset / 512), '-i', fatVolumeId.toString(16).padStart(8, '0'), espImage]);
  await runOk('env', ['MTOOLS_SKIP_CHECK=1', 'mmd', '-i', espImage, '::/EFI', '::/EFI/BOOT']);
  await runOk('env', ['MTOOLS_SKIP_CHECK=1', 'mcopy', '-i', espImage, loader, `::${BOOT_LOADER}`]);
  await place(espImage, image, esp.offset);

  return { image, size, esp, msr, c, ntfsSerial, ntfsLength, fatVolumeId, nonce };
}
