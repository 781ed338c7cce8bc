#!/usr/bin/env bash
# Build the tiny test guest (DESIGN.md: "a real guest in seconds") from Debian packages:
# the cloud kernel's vmlinuz plus an initramfs of busybox-static, the virtio/SCSI modules
# of that same kernel and tests/guest/init. Nothing is installed on the host: the .debs are
# downloaded and unpacked into the cache dir. Safe to run twice: a built guest is reused
# while its inputs (kernel version, init script) are unchanged.
#
#   tests/guest/build.sh [DIR]     (default /var/cache/ppec-tests/guest)
# prints DIR; DIR then holds vmlinuz and initrd.img.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/var/cache/ppec-tests/guest}
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         virtio_blk scsi_common scsi_mod sd_mod virtio_scsi)

# The metapackage names the current kernel package; resolve it so a kernel update rebuilds.
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
             | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kernel_pkg" ]; then
    echo "cannot resolve linux-image-cloud-amd64 (run apt-get update?)" >&2
    exit 1
fi
stamp="$kernel_pkg $(sha256sum "$here/init" | cut -d' ' -f1) $(sha256sum "$0" | cut -d' ' -f1)"
if [ -f "$out/initrd.img" ] && [ -f "$out/vmlinuz" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$out"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$kernel_pkg" busybox-static >/dev/null 2>"$work/apt.log") || {
    cat "$work/apt.log" >&2
    exit 1
}
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
done
version=${kernel_pkg#linux-image-}
moddir="$work/root/lib/modules/$version/kernel"

rd="$work/initrd"
mkdir -p "$rd/bin" "$rd/proc" "$rd/sys" "$rd/dev" "$rd/lib/modules"
cp "$work/root/bin/busybox" "$rd/bin/busybox"
install -m 0755 "$here/init" "$rd/init"
for m in "${modules[@]}"; do
    found=$(find "$moddir" -name "$m.ko" -print -quit)
    if [ -z "$found" ]; then
        echo "module $m.ko is not in $kernel_pkg" >&2
        exit 1
    fi
    cp "$found" "$rd/lib/modules/"
done

mkdir -p "$out"
chmod 0755 "$out" "$(dirname "$out")"   # QEMU (libvirt-qemu) must read the kernel and initrd
(cd "$rd" && find . | "$work/root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -9 > "$work/initrd.img"
install -m 0644 "$work/initrd.img" "$out/initrd.img"
install -m 0644 "$work/root/boot/vmlinuz-$version" "$out/vmlinuz"
echo "$stamp" > "$out/stamp"
echo "$out"
