"""The VM shape's vocabulary and the bounds the agent enforces on the wire: what the
method table checks. Apart from ``ppec.wire.vmspec`` so that the table (which every agent
call's client imports for its timeouts) does not load the VM shape's classes."""

from __future__ import annotations

from typing import Literal

Policy = Literal["shared", "dedicated"]
Threads = Literal["prefer", "isolate", "require"]
Emulator = Literal["share", "isolate"]
POLICIES: tuple[Policy, ...] = ("shared", "dedicated")
THREADS: tuple[Threads, ...] = ("prefer", "isolate", "require")
EMULATORS: tuple[Emulator, ...] = ("share", "isolate")
# Huge page sizes a dedicated VM's memory may be backed by (KiB; 0: ordinary pages).
HUGEPAGE_KIB = {"2M": 2048, "1G": 1048576}

# Bounds the agent enforces on the wire (the method table's schema uses these).
MAX_VCPUS = 1024
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 16, 16 << 20
MIN_DISK_BYTES, MAX_DISK_BYTES = 1 << 20, 1 << 50
MAX_NUMA_NODES = 64
MAX_CMDLINE = 4096

_HEX = frozenset("0123456789abcdef")


def is_sha256(text: str) -> bool:
    """An image's name on every host: its SHA-256, 64 lower-case hex digits."""
    return len(text) == 64 and set(text) <= _HEX
