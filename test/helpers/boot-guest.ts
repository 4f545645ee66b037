// SPDX-License-Identifier: MIT
/**
 * The guest the boot test starts from a served disk: Debian's kernel from its `.deb` (unpacked,
 * never installed; scripts/setup.sh downloads it into KERNEL_CACHE) and a tiny initramfs whose
 * `/init` is a busybox shell script. Its init loads the virtio block driver, reads C:'s NTFS
 * boot sector and a range no backup holds through the kernel, writes one sector to the disk,
 * prints one marker line on the serial console and powers off.
 */
import { copyFile, mkdir, readdir, readFile, writeFile, chmod } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { runOk } from './run.js';

/** Where scripts/setup.sh leaves the kernel `.deb` (outside the repository). */
export const KERNEL_CACHE = '/var/cache/synthvhd-test';
/** Debian's busybox-static: one statically linked binary, so the initramfs needs no libc. */
const BUSYBOX = '/bin/busybox';

export interface GuestKernel {
  readonly deb: string;
  readonly vmlinuz: string;
  /** Kernel modules to `insmod`, dependencies first (empty when the drivers are built in). */
  readonly modules: readonly string[];
}

/** The newest cached kernel `.deb`, or the reason there is none (the boot test then skips). */
export async function findKernelDeb(): Promise<{ deb: string } | { missing: string }> {
  let names: string[];
  try {
    names = await readdir(KERNEL_CACHE);
  } catch {
    return { missing: `${KERNEL_CACHE} does not exist: run scripts/setup.sh (it downloads Debian's cloud kernel .deb there)` };
  }
  const debs = names.filter((name) => /^linux-image-.*-amd64_.*_amd64\.deb$/.test(name)).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const newest = debs.at(-1);
  if (newest === undefined) return { missing: `no linux-image-*-amd64 .deb in ${KERNEL_CACHE}: run scripts/setup.sh (it downloads Debian's cloud kernel there)` };
  return { deb: join(KERNEL_CACHE, newest) };
}

/** The `depends=` entry of a module's .modinfo section: NUL-separated `key=value` strings. */
function moduleDepends(ko: Buffer): string[] {
  const key = Buffer.from('\0depends=');
  const at = ko.indexOf(key);
  if (at < 0) return [];
  const start = at + key.length;
  const end = ko.indexOf(0, start);
  const value = ko.toString('latin1', start, end < 0 ? start : end);
  return value === '' ? [] : value.split(',');
}

/** `CONFIG_X=y|m` from the kernel's config file. */
function configValue(config: string, name: string): string | undefined {
  return new RegExp(`^${name}=(.*)$`, 'm').exec(config)?.[1];
}

/**
 * Unpacks vmlinuz, the config and the modules the virtio disk needs from `deb` into `dir`
 * (`dpkg-deb --fsys-tarfile | tar`, nothing installed). The modules' order comes from their own
 * `depends=` fields, so a newer kernel with other dependencies still loads.
 */
export async function unpackKernel(deb: string, dir: string): Promise<GuestKernel> {
  await mkdir(dir, { recursive: true });
  await runOk('sh', ['-c', 'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards "*/vmlinuz-*" "*/config-*" "*/kernel/drivers/virtio/*" "*/kernel/drivers/block/virtio_blk.ko*"', 'sh', deb, dir]);
  const boot = join(dir, 'boot');
  const bootNames = await readdir(boot);
  const vmlinuzName = bootNames.find((name) => name.startsWith('vmlinuz-'));
  const configName = bootNames.find((name) => name.startsWith('config-'));
  if (vmlinuzName === undefined || configName === undefined) throw new Error(`${deb}: no boot/vmlinuz-* or boot/config-* inside`);
  const config = await readFile(join(boot, configName), 'utf8');
  if (configValue(config, 'CONFIG_BLK_DEV_INITRD') !== 'y' || configValue(config, 'CONFIG_RD_GZIP') !== 'y' || configValue(config, 'CONFIG_EFI_PARTITION') !== 'y') {
    throw new Error(`${deb}: the kernel cannot start a gzip initramfs or read GPT (CONFIG_BLK_DEV_INITRD, CONFIG_RD_GZIP, CONFIG_EFI_PARTITION)`);
  }

  const modules: string[] = [];
  const blk = configValue(config, 'CONFIG_VIRTIO_BLK');
  if (blk === 'm') {
    const release = configName.slice('config-'.length);
    const kernelDir = (await readdir(dir, { recursive: true })).find((path) => path.endsWith(`modules/${release}/kernel`));
    if (kernelDir === undefined) throw new Error(`${deb}: no modules directory for ${release}`);
    const files = new Map<string, string>();
    for (const sub of ['drivers/virtio', 'drivers/block']) {
      for (const name of await readdir(join(dir, kernelDir, sub))) files.set(name.replace(/\.ko.*$/, ''), join(dir, kernelDir, sub, name));
    }
    const visit = async (name: string, path: readonly string[]): Promise<void> => {
      if (modules.some((file) => basename(file) === `${name}.ko`)) return;
      if (path.includes(name)) throw new Error(`${deb}: module dependency cycle ${[...path, name].join(' -> ')}`);
      const file = files.get(name);
      if (file === undefined) throw new Error(`${deb}: module ${name} needed by ${path.join(' -> ')} is not in the package's virtio/block drivers`);
      // busybox insmod hands the file to init_module as it is: a compressed module would need the kernel's decompressor.
      if (!file.endsWith('.ko')) throw new Error(`${deb}: ${basename(file)} is compressed; the boot test's initramfs only loads plain .ko modules`);
      for (const dependency of moduleDepends(await readFile(file))) await visit(dependency, [...path, name]);
      modules.push(file);
    };
    // virtio_pci finds the device on the PCI bus; virtio_blk makes it /dev/vda.
    for (const root of ['virtio_pci', 'virtio_blk']) await visit(root, []);
  } else if (blk !== 'y') {
    throw new Error(`${deb}: the kernel has no virtio block driver (CONFIG_VIRTIO_BLK=${blk ?? 'unset'})`);
  }
  return { deb, vmlinuz: join(boot, vmlinuzName), modules };
}

/** True when the ELF file has no program interpreter (PT_INTERP): it runs without a libc in the initramfs. */
function isStaticElf(elf: Buffer): boolean {
  if (elf.toString('latin1', 1, 4) !== 'ELF' || elf[4] !== 2) return false; // ELF64 only
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === 3) return false;
  return true;
}

/** Where the guest finds things on its one disk (virtio, so /dev/vda; partition N is /dev/vdaN). */
export interface GuestLayout {
  /** C:'s partition device. */
  readonly c: string;
  /** A range no backup holds (an MSR, the gap after an MBR), which the served disk must show as zeros. */
  readonly unbacked: { readonly device: string; readonly firstSector: number; readonly sectors: number };
  /** The sector of `unbacked.device` the guest writes its line into. */
  readonly writeSector: number;
}

/**
 * The guest's `/init`. It prints
 *   SYNTHVHD-BOOT-OK nonce=<from the kernel command line> oem=<C:'s OEM id> serial=<C:'s 8 serial bytes in hex> unbacked=<zeros|data>
 * after writing `SYNTHVHD-GUEST-WROTE <nonce>` into sector `writeSector` of the unbacked range's device.
 */
function initScript(modules: readonly string[], layout: GuestLayout): string {
  const { c, unbacked } = layout;
  return String.raw`#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${modules.map((file) => basename(file, '.ko')).join(' ')}; do insmod /lib/modules/$m.ko || echo "SYNTHVHD-BOOT-FAIL insmod $m"; done
i=0
while { [ ! -b ${c} ] || [ ! -b ${unbacked.device} ]; } && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
[ -b ${c} ] || echo "SYNTHVHD-BOOT-FAIL no ${c}"
nonce=$(sed -n 's/.*synthvhd.nonce=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
oem=$(dd if=${c} bs=1 skip=3 count=8 2>/dev/null)
serial=$(dd if=${c} bs=1 skip=72 count=8 2>/dev/null | od -An -tx1 | tr -d ' \n')
if [ -z "$(dd if=${unbacked.device} bs=512 skip=${unbacked.firstSector} count=${unbacked.sectors} 2>/dev/null | od -An -tx1 | tr -d ' 0\n*')" ]; then unbacked=zeros; else unbacked=data; fi
echo "SYNTHVHD-GUEST-WROTE $nonce" | dd of=${unbacked.device} bs=512 seek=${layout.writeSector} count=1 conv=sync,notrunc 2>/dev/null
sync
echo "SYNTHVHD-BOOT-OK nonce=$nonce oem=$oem serial=$serial unbacked=$unbacked"
poweroff -f
`;
}

/** A gzip'd newc cpio (the format the kernel unpacks, Documentation/driver-api/early-userspace) with busybox, the modules and /init. */
export async function buildInitramfs(kernel: GuestKernel, dir: string, out: string, layout: GuestLayout): Promise<void> {
  const busybox = await readFile(BUSYBOX).catch(() => undefined);
  if (busybox === undefined || !isStaticElf(busybox)) throw new Error(`${BUSYBOX} is missing or not statically linked: install busybox-static (scripts/setup.sh)`);
  for (const sub of ['bin', 'lib/modules', 'proc', 'sys', 'dev']) await mkdir(join(dir, sub), { recursive: true });
  await copyFile(BUSYBOX, join(dir, 'bin', 'busybox'));
  await chmod(join(dir, 'bin', 'busybox'), 0o755);
  for (const module of kernel.modules) await copyFile(module, join(dir, 'lib', 'modules', basename(module)));
  await writeFile(join(dir, 'init'), initScript(kernel.modules, layout), { mode: 0o755 });
  await runOk('sh', ['-c', 'cd "$1" && find . | cpio -o -H newc --quiet | gzip -1 > "$2"', 'sh', dir, out]);
}
