// SPDX-License-Identifier: MIT
/**
 * Small bootable disks with Windows' layouts, every structure made by an external tool, and a
 * Linux guest (kernel and initramfs as files on NTFS) in the place of Windows' boot files.
 *
 * UEFI (as a Hyper-V Generation 2 VM boots): a GPT with ESP, MSR and C: (sgdisk); a FAT32 ESP
 * (mkfs.vfat, mtools) holding GRUB (grub-mkimage, Debian's grub-efi-amd64-bin) at the
 * removable-media path \EFI\BOOT\BOOTX64.EFI, which firmware with no boot entries of its own
 * runs (UEFI spec §3.5.1.1); GRUB's embedded configuration finds C: by its NTFS serial (GRUB's
 * fs UUID of NTFS: the serial's 16 hex digits), sources a file from C: that sets the run's
 * nonce, and starts the kernel and initramfs that are files on C: (mkntfs, ntfscp).
 *
 * BIOS: the MBR layout of Windows 7 and later, an active "System Reserved" NTFS partition
 * (urBackup's SYSVOL) holding the boot loader and C: after it (sfdisk, mkntfs). Windows' chain
 * is the MBR's code, which loads the active partition's first sector (its VBR) and jumps to it;
 * the NTFS VBR's code loads bootmgr from that file system. Here the same chain runs other code
 * at each step: Syslinux's mbr.bin (it does exactly what Windows' MBR code does: find the
 * entry marked active, load its first sector to 0x7C00, jump) and EXTLINUX's NTFS boot sector
 * (extlinux --install on the mounted NTFS rewrites the VBR's code and keeps its BPB), which
 * loads ldlinux.sys from the NTFS and then the kernel and initramfs from the same volume, as
 * bootmgr loads its BCD and winload. GRUB's i386-pc boot.img would also fit in an MBR, but it
 * loads GRUB's core.img from the sectors after the MBR and never runs a partition's boot
 * sector: not Windows' chain, so not chosen.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, runOk } from './run.js';
import type { DiskPartition } from './urbackup-raw-backup.js';

export const MiB = 1024 * 1024;

/** Syslinux's MBR code (Debian's syslinux-common): boots the active partition's first sector. */
export const SYSLINUX_MBR = '/usr/lib/syslinux/mbr/mbr.bin';

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
const GRUB_MODULES = ['part_gpt', 'fat', 'ntfs', 'search', 'search_fs_uuid', 'configfile', 'normal', 'echo', 'linux', 'gzio', 'test', 'halt'];

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

/** Copies a partition image into the disk at `offset`, whose range reads as zeros (dd: all-zero blocks are skipped, so holes stay holes). */
async function place(partitionImage: string, disk: string, offset: number): Promise<void> {
  await runOk('dd', [`if=${partitionImage}`, `of=${disk}`, 'bs=1M', `seek=${offset}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
}

export interface BootDiskRequest {
  readonly dir: string;
  readonly vmlinuz: string;
  readonly initrd: string;
}

export async function buildUefiBootDisk(request: BootDiskRequest): Promise<UefiBootDisk> {
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
  const ntfsLength = await makeNtfs(cImage, c, 'Windows', ntfsSerial);
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
    // Only reached when something above failed: power off at once instead of waiting at GRUB's prompt for the deadline.
    'echo "SYNTHVHD-GRUB: boot failed"',
    'halt',
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

export interface BiosBootDisk {
  readonly image: string;
  readonly sysvol: DiskPartition;
  readonly c: DiskPartition;
  readonly sysvolSerial: bigint;
  readonly sysvolLength: number;
  readonly cSerial: bigint;
  readonly cLength: number;
  readonly nonce: string;
}

/**
 * mkntfs on a partition-sized file. mkntfs takes no serial: it is set in the boot sector (0x48) and
 * in its backup in the partition's last sector. Returns the bytes NTFS says it spans (0x28 × 0x0B).
 */
async function makeNtfs(file: string, partition: DiskPartition, label: string, serial: bigint): Promise<number> {
  await sparseFile(file, partition.length);
  await runOk('mkntfs', ['-F', '-Q', '-q', '-s', '512', '-p', String(partition.offset / 512), '-H', '255', '-S', '63', '-L', label, file]);
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(serial);
  await writeAt(file, 0x48, bytes);
  await writeAt(file, partition.length - 512 + 0x48, bytes);
  const boot = await readAt(file, 0, 512);
  return Number(boot.readBigUInt64LE(0x28)) * boot.readUInt16LE(0x0b);
}

/**
 * Runs `body` with `volume` (an NTFS partition image) mounted by ntfs-3g on a loop device of its
 * own: as fuseblk, which answers FIBMAP, so extlinux can find ldlinux.sys's sectors. Unmounted
 * and detached whatever happens.
 */
async function withNtfsMounted<T>(volume: string, mountDir: string, body: (dir: string) => Promise<T>): Promise<T> {
  await mkdir(mountDir, { recursive: true });
  const device = (await runOk('losetup', ['--find', '--show', volume])).stdout.trim();
  let mounted = false;
  try {
    await runOk('ntfs-3g', [device, mountDir]);
    mounted = true;
    return await body(mountDir);
  } finally {
    if (mounted && (await run('umount', [mountDir])).code !== 0) await run('umount', ['-l', mountDir]);
    await run('losetup', ['-d', device]);
  }
}

export async function buildBiosBootDisk(request: BootDiskRequest): Promise<BiosBootDisk> {
  const { dir } = request;
  const image = join(dir, 'bios-disk.img');
  await sparseFile(image, 64 * MiB);
  const signature = randomBytes(4).readUInt32LE();
  await runOk('sh', ['-c', 'printf "%s\\n" "$2" | sfdisk --no-reread --no-tell-kernel -q "$1"', 'sh', image, [
    'label: dos',
    `label-id: 0x${signature.toString(16).padStart(8, '0')}`,
    'unit: sectors',
    '',
    `start=2048, size=${(40 * MiB) / 512}, type=7, bootable`,
    `start=${2048 + (40 * MiB) / 512}, size=${(22 * MiB) / 512}, type=7`,
  ].join('\n')]);
  const mbr = await readAt(image, 0, 512);
  const entry = (index: number): DiskPartition => ({
    number: index + 1,
    offset: mbr.readUInt32LE(446 + index * 16 + 8) * 512,
    length: mbr.readUInt32LE(446 + index * 16 + 12) * 512,
  });
  const [sysvol, c] = [entry(0), entry(1)];
  if (mbr[446] !== 0x80 || sysvol.offset !== MiB || c.length !== 22 * MiB) throw new Error(`sfdisk did not make the partitions asked for: ${mbr.subarray(446, 510).toString('hex')}`);
  // The boot code: 440 bytes, before the disk signature at 440 and the table at 446.
  const code = await readAt(SYSLINUX_MBR, 0, 440);
  await writeAt(image, 0, code);
  // Sectors between the MBR and the first partition are in no urBackup backup (only LBA 0 is saved
  // with this boot code, docs/urbackup-formats.md §3.3 #19): a pattern there shows whether zeros are served.
  await writeAt(image, 512, Buffer.alloc(sysvol.offset - 512, 'GAP!'));

  const nonce = randomBytes(8).toString('hex');
  const sysvolSerial = randomBytes(8).readBigUInt64LE();
  const cSerial = randomBytes(8).readBigUInt64LE();

  const sysvolImage = join(dir, 'sysvol.img');
  await makeNtfs(sysvolImage, sysvol, 'System Reserved', sysvolSerial);
  await withNtfsMounted(sysvolImage, join(dir, 'sysvol-mnt'), async (mounted) => {
    await copyFile(request.vmlinuz, join(mounted, 'vmlinuz'));
    await copyFile(request.initrd, join(mounted, 'initrd.gz'));
    await mkdir(join(mounted, 'boot', 'syslinux'), { recursive: true });
    // SERIAL first: Syslinux wants it before anything it prints (its banner and "Loading /vmlinuz... ok").
    await writeFile(join(mounted, 'boot', 'syslinux', 'extlinux.conf'), [
      'SERIAL 0 115200',
      'DEFAULT guest',
      'PROMPT 0',
      'TIMEOUT 0',
      'LABEL guest',
      '  LINUX /vmlinuz',
      '  INITRD /initrd.gz',
      `  APPEND console=ttyS0 panic=-1 synthvhd.nonce=${nonce}`,
      '',
    ].join('\n'));
    await runOk('extlinux', ['--install', join(mounted, 'boot', 'syslinux')]);
  });
  // EXTLINUX rewrote the boot sector's code and kept the BPB: read NTFS's length after it.
  const sysvolBoot = await readAt(sysvolImage, 0, 512);
  const sysvolLength = Number(sysvolBoot.readBigUInt64LE(0x28)) * sysvolBoot.readUInt16LE(0x0b);
  await place(sysvolImage, image, sysvol.offset);

  const cImage = join(dir, 'bios-c.img');
  const cLength = await makeNtfs(cImage, c, 'Windows', cSerial);
  await place(cImage, image, c.offset);
  return { image, sysvol, c, sysvolSerial, sysvolLength, cSerial, cLength, nonce };
}
