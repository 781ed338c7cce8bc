#!/usr/bin/env bash
# Set up this machine for ppec: Debian packages, libvirt daemons, the virtualenv.
# Debian 12, as root. Safe to run any number of times: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "scripts/setup.sh: run as root (it installs packages and starts libvirtd)" >&2; exit 1; }

PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  libvirt-daemon-system   # what `host add --install` puts on a host: its test finds it here
  qemu-system-x86 qemu-utils genisoimage ganeti-htools-3.0
  openssh-server openssh-client
  postgresql
  chromium chromium-driver prometheus
  cloud-init iputils-ping iproute2
  python3 python3-venv python3-dev gcc procps
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# libvirt runs QEMU as libvirt-qemu and refuses to start its QEMU driver without that user
# (Debian's libvirt-daemon-system creates it when systemd runs; a container has none).
if ! getent group libvirt-qemu >/dev/null; then groupadd -r libvirt-qemu; fi
if ! id libvirt-qemu >/dev/null 2>&1; then
  useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
fi
# Without udev nobody gives /dev/kvm to group kvm; QEMU (as libvirt-qemu) then cannot use it.
if [ -e /dev/kvm ]; then
  getent group kvm >/dev/null || groupadd -r kvm
  [ "$(stat -c %G /dev/kvm)" = kvm ] || chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
  id -nG libvirt-qemu | tr ' ' '\n' | grep -qx kvm || usermod -aG kvm libvirt-qemu
fi

virsh_ok() { virsh -c qemu:///system version >/dev/null 2>&1; }
# Huge pages (vm create --hugepages): libvirt backs guest RAM from a hugetlbfs mount it
# looks for when it starts, so the mount comes first, and a libvirtd that started without
# it starts again (running VMs are not libvirtd's children: they keep running).
if ! grep -qs " /dev/hugepages hugetlbfs " /proc/mounts; then
  say "mounting hugetlbfs at /dev/hugepages"
  if ! { mkdir -p /dev/hugepages && mount -t hugetlbfs hugetlbfs /dev/hugepages; }; then
    echo "setup: could not mount hugetlbfs: hugepage-backed VMs (and their tests) need it" >&2
  elif [ ! -d /run/systemd/system ] && pgrep -x libvirtd >/dev/null; then
    pkill -x libvirtd
    for _ in $(seq 1 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.1; done
  elif [ -d /run/systemd/system ]; then
    systemctl try-restart libvirtd
  fi
fi
if ! virsh_ok; then
  say "starting virtlogd and libvirtd"
  if [ -d /run/systemd/system ]; then
    systemctl start virtlogd libvirtd
  else
    mkdir -p /var/log/libvirt /run/libvirt
    pgrep -x virtlogd >/dev/null || virtlogd -d
    pgrep -x libvirtd >/dev/null || libvirtd -d
  fi
  for _ in $(seq 1 60); do virsh_ok && break; sleep 1; done
  virsh_ok || { echo "libvirtd did not come up; see /var/log/libvirt/libvirtd.log" >&2; exit 1; }
fi
# The first QEMU use makes libvirt probe the emulator's capabilities (tens of seconds
# here); do it now so the first VM create does not look hung.
virsh -c qemu:///system domcapabilities >/dev/null 2>&1 || true

# PostgreSQL on loopback, for the shared-store tests (and for teams that share a store).
cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1, $2}')
if [ -n "$cluster" ]; then
  set -- $cluster
  if ! pg_lsclusters -h | awk 'NR==1 {print $4}' | grep -q online; then
    say "starting PostgreSQL $1/$2"
    pg_ctlcluster "$1" "$2" start
  fi
  su postgres -c "psql -qtA -c \"SELECT 1 FROM pg_roles WHERE rolname='ppec'\"" | grep -q 1 ||
    su postgres -c "psql -q -c \"CREATE ROLE ppec LOGIN PASSWORD 'ppec' CREATEDB\""
  set --
fi

# The virtualenv: rebuilt only when pyproject.toml changes.
PY=${PYTHON:-python3}
stamp=.venv/.ppec-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing ppec and its dependencies into .venv"
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[dev]'; } \
      >.venv/pip.log 2>&1; then
    grep -v "is ignored: it is neither" .venv/pip.log | tail -30 >&2
    echo "pip install failed (full log: .venv/pip.log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
# An editable install leaves ppec's own modules uncompiled, and where PYTHONDONTWRITEBYTECODE
# is set (as on this machine) every command compiled some 30 of them again (~18 ms of a
# 100 ms command). Compile them as a wheel install would; only changed files are redone.
.venv/bin/python -m compileall -q -j 0 ppec >/dev/null
say "set-up done"
