#!/usr/bin/env bash
# Installs everything synthvhd and its test suite need on Debian 12, idempotently, then
# installs npm dependencies (which builds the native addon) and compiles the TypeScript.
# Run as root (CI does); the Dockerfile runs this same script:
#   SYNTHVHD_RUNTIME_ONLY=1 scripts/setup.sh   runtime and build packages only, no test tools
#                                               (the image's build stage), then npm ci and tsc
#   scripts/setup.sh --runtime-packages        only the runtime packages, nothing else
#                                               (the image's runtime stage)
#   scripts/setup.sh --list-packages           print the apt packages this run would ensure
#                                               (after the other options) and stop
set -euo pipefail
cd "$(dirname "$0")/.."

# runtime: FUSE (libfuse.so.3 for the session addon, fusermount3/fusermount from fuse3)
runtime_packages=(fuse3 libfuse3-3)
# native addon build (the FUSE session links libfuse3, libzstd and zlib, found with pkg-config)
build_packages=(python3 make g++ pkg-config libfuse3-dev libzstd-dev zlib1g-dev)
# independent checkers and fixture builders used by the tests (systemd: systemd-analyze verify)
test_packages=(
  qemu-utils libvhdi-utils gdisk fdisk ntfs-3g dosfstools mtools libfsntfs-utils
  btrfs-progs xfsprogs samba smbclient systemd git
  # the peers `npm run bench -- fuse` measures against
  xmount nbdkit libnbd-bin
  # libFuzzer with ASan/UBSan for the native read core's fuzz targets (test/native-fuzz.test.ts)
  clang libfuzzer-14-dev libclang-rt-14-dev
  # independent witnesses: the zstd CLI decodes urBackup's records; 7-Zip reads VHD/VHDX
  zstd 7zip
  # the boot test: a served disk booted by qemu's TCG under UEFI (OVMF, GRUB as its loader) and
  # BIOS (SeaBIOS, Syslinux's MBR code and EXTLINUX on NTFS); the guest's initramfs is
  # busybox-static packed with cpio (its kernel: fetch_boot_kernel below)
  qemu-system-x86 ovmf grub-efi-amd64-bin syslinux-common extlinux busybox-static cpio
)

install_packages() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  if ((${#missing[@]} > 0)); then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

runtime_packages_only=0
list_only=0
for argument in "$@"; do
  case "$argument" in
    --runtime-packages) runtime_packages_only=1 ;;
    --list-packages) list_only=1 ;;
    *) echo "setup: unknown option $argument" >&2; exit 2 ;;
  esac
done
if ((runtime_packages_only)); then
  selected=("${runtime_packages[@]}")
elif [ "${SYNTHVHD_RUNTIME_ONLY:-}" = 1 ]; then
  selected=("${runtime_packages[@]}" "${build_packages[@]}")
else
  selected=("${runtime_packages[@]}" "${build_packages[@]}" "${test_packages[@]}")
fi
if ((list_only)); then
  echo "${selected[*]}"
  exit 0
fi
install_packages "${selected[@]}"
if ((runtime_packages_only)); then exit 0; fi

# The boot test's guest kernel (test/boot.test.ts): Debian's cloud kernel package, downloaded
# through apt but not installed, kept outside the repository. The test unpacks it with dpkg-deb
# and skips itself, saying why, when no .deb is here.
boot_kernel_cache=/var/cache/synthvhd-test
boot_kernel_package() {
  # linux-image-cloud-amd64 is a metapackage; the kernel is its versioned dependency.
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n 1
}
download_boot_kernel() {
  local package
  package=$(boot_kernel_package)
  [ -n "$package" ] || return 1
  compgen -G "$boot_kernel_cache/${package}_*_amd64.deb" >/dev/null && return 0
  echo "setup: downloading $package into $boot_kernel_cache" >&2
  mkdir -p "$boot_kernel_cache"
  (cd "$boot_kernel_cache" && apt-get download -q -o APT::Sandbox::User=root "$package" >/dev/null)
}
fetch_boot_kernel() {
  # Stale package lists may name a kernel the mirror no longer has: update them and try once more.
  download_boot_kernel && return 0
  apt-get update -qq && download_boot_kernel && return 0
  echo "setup: could not download Debian's cloud kernel into $boot_kernel_cache; the boot test will skip" >&2
}
if [ "${SYNTHVHD_RUNTIME_ONLY:-}" != 1 ]; then fetch_boot_kernel; fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run build:native --silent
fi
npm run build --silent
