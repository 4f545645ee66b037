#!/usr/bin/env bash
# The README's first Quick start command: set everything up, build realistic urBackup
# fixture backups, list them, materialize the UEFI disk as .vhdx and .vhd, mount the backup
# tree with its virtual whole-disk files, and let qemu-img judge what it serves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
demo=${SYNTHVHD_DEMO_DIR:-/tmp/synthvhd-demo}
mountpoint="$demo/mnt"
if mountpoint -q "$mountpoint" 2>/dev/null; then node dist/src/cli/main.js unmount --lazy "$mountpoint" || true; fi
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

echo "== synthvhd mount $demo/backups $mountpoint"
mkdir -p "$mountpoint"
node dist/src/cli/main.js mount "$demo/backups" "$mountpoint" > "$demo/mount.log" 2>&1 &
mount_pid=$!
stop_mount() {
  kill -TERM "$mount_pid" 2>/dev/null || true
  wait "$mount_pid" 2>/dev/null || true
  if mountpoint -q "$mountpoint" 2>/dev/null; then node dist/src/cli/main.js unmount --lazy "$mountpoint" || true; fi
}
trap stop_mount EXIT
for _ in $(seq 1 100); do
  grep -q 'mounted' "$demo/mount.log" 2>/dev/null && break
  kill -0 "$mount_pid" 2>/dev/null || { cat "$demo/mount.log"; exit 1; }
  sleep 0.1
done
cat "$demo/mount.log"
served_dir="$mountpoint/win11-uefi/$(basename "$source_dir")"
ls -l "$served_dir"
served=$(ls "$served_dir"/*.disk.vhdx | head -n 1)
echo "== qemu-img check and compare of the served $served"
qemu-img check -f vhdx "$served"
qemu-img compare -f vhdx -F vhdx "$served" "$demo/win11-uefi-C.vhdx"
