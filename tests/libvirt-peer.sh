#!/bin/sh
# A second (third, ...) libvirtd on this machine, for migration tests and benches.
#
#   tests/libvirt-peer.sh start NAME INDEX   # idempotent; prints the socket path
#   tests/libvirt-peer.sh stop NAME          # its guests are destroyed with it
#
# libvirt refuses to migrate between daemons with the same host UUID, and two daemons
# cannot share /run/libvirt or /var/lib/libvirt. So each peer runs in a mount namespace of
# its own (unshare -m) where those dirs, /var/cache/libvirt, /var/log/libvirt and
# /etc/libvirt are bind mounts of /var/tmp/ppec-peers/NAME/*, with its own host_uuid,
# pid file, virtlogd and migration ports (49152 + 100 * INDEX, 50 of them). Everything
# else (the file system at large, the network, /dev/kvm) is the machine's. Its socket is
# /var/tmp/ppec-peers/NAME/run/libvirt-sock, seen from outside the namespace too: connect
# with qemu:///system?socket=THAT (docs/development.md).
set -eu

cmd=${1:?start|stop}
name=${2:?peer name}
root=/var/tmp/ppec-peers/$name
sock=$root/run/libvirt-sock

answers() {
  virsh -c "qemu:///system?socket=$sock" version >/dev/null 2>&1
}

case $cmd in
start)
  index=${3:?index (1, 2, ...)}
  if [ -S "$sock" ] && answers; then
    echo "$sock"
    exit 0
  fi
  mkdir -p "$root"
  for d in run lib cache log etc; do mkdir -p "$root/$d"; done
  chmod 0755 "$root" "$root/lib"
  [ -s "$root/uuid" ] || cat /proc/sys/kernel/random/uuid > "$root/uuid"
  low=$((49152 + 100 * index))
  cat > "$root/etc/libvirtd.conf" <<EOF
host_uuid = "$(cat "$root/uuid")"
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
EOF
  cat > "$root/etc/qemu.conf" <<EOF
migration_port_min = $low
migration_port_max = $((low + 49))
EOF
  rm -f "$root/run/libvirtd.pid" "$root/run/virtlogd.pid"
  # The namespace lives as long as the daemons in it: nothing to clean up when they die.
  unshare -m --propagation private sh -c "
    mount --bind '$root/run' /run/libvirt
    mount --bind '$root/lib' /var/lib/libvirt
    mount --bind '$root/cache' /var/cache/libvirt
    mount --bind '$root/log' /var/log/libvirt
    mount --bind '$root/etc' /etc/libvirt
    virtlogd -d -p /run/libvirt/virtlogd.pid
    libvirtd -d -p /run/libvirt/libvirtd.pid -f /etc/libvirt/libvirtd.conf
  "
  i=0
  until answers; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then
      echo "libvirt peer $name did not answer on $sock; see $root/log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$sock"
  ;;
stop)
  for pidfile in "$root/run/libvirtd.pid" "$root/run/virtlogd.pid"; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      if [ "$pidfile" = "$root/run/libvirtd.pid" ]; then
        for dom in $(virsh -c "qemu:///system?socket=$sock" list --all --name 2>/dev/null); do
          virsh -c "qemu:///system?socket=$sock" destroy "$dom" >/dev/null 2>&1 || true
          virsh -c "qemu:///system?socket=$sock" undefine "$dom" >/dev/null 2>&1 || true
        done
      fi
      kill "$pid"
      i=0
      while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
    fi
    rm -f "$pidfile"
  done
  ;;
*)
  echo "usage: $0 start NAME INDEX | stop NAME" >&2
  exit 2
  ;;
esac
