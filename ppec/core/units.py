"""Sizes and names as operators type them."""

from __future__ import annotations

import re

from ppec.core.errors import BadInput

_SIZE = re.compile(r"\s*(\d+)\s*([KMGTP]?)(i?B)?\s*", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str, *, what: str = "size", default_unit: str = "") -> int:
    """Parse ``512M``, ``8G``, ``1T`` (binary units) into bytes.

    A bare number means bytes unless ``default_unit`` says otherwise. Fractions are refused
    on purpose: ``1.5G`` is ambiguous about rounding and operators can write ``1536M``.
    """
    m = _SIZE.fullmatch(text)
    if not m:
        raise BadInput(f"invalid {what} {text!r}: use a whole number with K, M, G or T "
                       f"(binary units), e.g. 512M or 8G", code="BAD_SIZE")
    unit = (m.group(2) or default_unit).upper()
    value = int(m.group(1)) * _FACTORS[unit]
    if value <= 0:
        raise BadInput(f"invalid {what} {text!r}: must be greater than zero", code="BAD_SIZE")
    return value


def parse_memory_mib(text: str, *, what: str = "memory") -> int:
    """Memory as operators write it (``512M``, ``4G``) in MiB: the one memory parser, for
    flavors, --memory and the agent's reserved_memory. An amount that is not a whole
    number of MiB is refused, not rounded."""
    size = parse_size(text, what=what)
    if size % MIB:
        raise BadInput(f"invalid {what} {text!r}: not a whole number of MiB (e.g. 512M, 4G)",
                       code="BAD_SIZE")
    return size // MIB


def format_size(n: int) -> str:
    """The shortest exact binary-unit spelling, e.g. 1073741824 -> ``1G``."""
    for unit in ("P", "T", "G", "M", "K"):
        factor = _FACTORS[unit]
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B" if n < 1024 else f"{n / 1024:.1f}K"


MIB = 1 << 20

# Names become libvirt domain names, file names in the storage dir and SQL keys: keep them
# to a conservative alphabet so none of those needs quoting.
_VM_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")


def check_vm_name(name: str) -> str:
    if not _VM_NAME.fullmatch(name):
        raise BadInput(f"invalid VM name {name!r}: use 1-63 lower-case letters, digits and "
                       f"'-', starting and ending with a letter or digit", code="BAD_NAME")
    return name


_DISK_TARGET = re.compile(r"(vd|sd|hd)[a-z]{1,3}")


def check_disk_target(target: str) -> str:
    if not _DISK_TARGET.fullmatch(target):
        raise BadInput(f"invalid disk target {target!r}: a device name such as vdb or sdc "
                       f"(see `ppec disk list VM`)", code="BAD_TARGET")
    return target


def check_label(name: str, what: str) -> str:
    """Host, pool and HA group names: one alphabet, one message."""
    if not _HOST_NAME.fullmatch(name):
        raise BadInput(f"invalid {what} {name!r}: use 1-63 lower-case letters, digits, "
                       f"'.', '_' and '-' (no spaces), starting and ending with a letter or "
                       f"digit", code="BAD_NAME")
    return name


def check_host_name(name: str) -> str:
    return check_label(name, "host name")
