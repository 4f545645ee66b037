#!/usr/bin/env bash
# The README's first Quick start command: set everything up, build realistic urBackup
# fixture backups, list them and materialize the UEFI disk as a .vhdx and a .vhd, then let
# qemu-img judge the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
demo=${SYNTHVHD_DEMO_DIR:-/tmp/synthvhd-demo}
rm -rf "$demo"
mkdir -p "$demo"
node dist/fixtures/build-fixtures.js "$demo"
synthvhd() { node dist/src/cli/main.js "$@"; }
echo "== synthvhd ls $demo/backups"
synthvhd ls "$demo/backups"
source_dir=$(ls -d "$demo"/backups/win11-uefi/*_Image_C | head -n 1)
echo "== synthvhd materialize $source_dir"
synthvhd materialize "$source_dir" -o "$demo/win11-uefi-C.vhdx"
synthvhd materialize "$source_dir" -o "$demo/win11-uefi-C.vhd"
echo "== qemu-img check / info"
qemu-img check -f vhdx "$demo/win11-uefi-C.vhdx"
qemu-img info -f vpc "$demo/win11-uefi-C.vhd" | grep 'virtual size'
echo "== synthvhd inspect"
synthvhd inspect "$demo/win11-uefi-C.vhdx"
