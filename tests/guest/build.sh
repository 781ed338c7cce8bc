#!/usr/bin/env bash
# Build the tiny test guest (DESIGN.md: "a real guest in seconds") from Debian packages:
# the cloud kernel's vmlinuz plus an initramfs of busybox-static, the modules it needs from
# that same kernel (virtio disks and NICs, SCSI, the IDE CD-ROM that carries the cloud-init
# seed, iso9660) and tests/guest/init. Nothing is installed on the host: the .debs are
# downloaded and unpacked into the cache dir. Safe to run twice: a built guest is reused
# while its inputs (kernel version, init script) are unchanged.
#
#   tests/guest/build.sh [DIR]     (default /var/cache/ppec-tests/guest)
# prints DIR; DIR then holds vmlinuz and initrd.img.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/var/cache/ppec-tests/guest}
# In load order, each after the modules it depends on (checked below with modinfo); /init
# loads them in this order from /lib/modules/load. None of these is built into the cloud
# kernel (its modules.builtin), so each must be here.
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         virtio_blk scsi_common scsi_mod sd_mod virtio_scsi      # disks
         failover net_failover virtio_net                         # NICs
         libata ata_piix cdrom sr_mod isofs)                      # the seed CD-ROM (hdc, IDE)

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
    if command -v modinfo >/dev/null; then
        for dep in $(modinfo -F depends "$found" | tr ',' ' '); do
            case " $(cat "$rd/lib/modules/load" 2>/dev/null | tr '\n' ' ') " in
                *" $dep "*) ;;
                *) echo "module $m needs $dep first: add it to modules= in $0" >&2; exit 1 ;;
            esac
        done
    fi
    cp "$found" "$rd/lib/modules/"
    echo "$m" >> "$rd/lib/modules/load"
done

mkdir -p "$out"
chmod 0755 "$out"                  # QEMU (libvirt-qemu) must read the kernel and initrd,
chmod a+x "$(dirname "$out")"      # and search the parent (a+x: keep e.g. /tmp's 1777)
(cd "$rd" && find . | "$work/root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -9 > "$work/initrd.img"
install -m 0644 "$work/initrd.img" "$out/initrd.img"
install -m 0644 "$work/root/boot/vmlinuz-$version" "$out/vmlinuz"
echo "$stamp" > "$out/stamp"
echo "$out"
