#!/usr/bin/env bash
# Installs everything synthvhd and its test suite need on Debian 12, idempotently, then
# installs npm dependencies (which builds the native addon) and compiles the TypeScript.
# Run as root (CI does); the Dockerfile runs this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # runtime: FUSE (libfuse.so.2 for fuse-native, fusermount from fuse3)
  libfuse2 fuse3
  # native addon build
  python3 make g++
  # independent checkers and fixture builders used by the tests
  qemu-utils libvhdi-utils gdisk fdisk ntfs-3g dosfstools mtools libfsntfs-utils
  btrfs-progs xfsprogs samba smbclient
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run build:native --silent
fi
npm run build --silent
