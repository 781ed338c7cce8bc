"""How a VM's disks do I/O on this host: the host page cache kept out where the storage
dir allows it, and one I/O thread per VM off QEMU's main loop.

``cache='none'`` opens the image with O_DIRECT: the guest's writes do not fill the host's
page cache (a VM's writes would otherwise eat the host's memory, and its latency depend on
its neighbours' dirty pages), and ``io='native'`` (Linux AIO, which QEMU allows only with
O_DIRECT) submits them without a thread pool. A filesystem that refuses O_DIRECT (tmpfs,
some FUSE) gets ``writeback`` with ``io='threads'``; the agent says so once at start and in
``host show``. ``discard='unmap'`` passes a guest's TRIM to the qcow2 file, which then
gives the space back to the host.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_MODES = ("auto", "none", "writeback")
IOTHREAD = "1"     # every VM gets one I/O thread serving its virtio disks


@dataclass(frozen=True)
class DiskTuning:
    cache: str              # none | writeback
    io: str                 # native | threads
    discard: str = "unmap"
    why: str = ""           # how it was chosen, for the log and `host show`

    def as_dict(self) -> dict[str, str]:
        return {"cache": self.cache, "io": self.io, "discard": self.discard, "why": self.why}

    def driver(self, element: ET.Element, iothread: bool) -> None:
        """Set a disk's ``<driver>`` attributes (a virtio-blk disk: also its I/O thread)."""
        element.set("cache", self.cache)
        element.set("io", self.io)
        element.set("discard", self.discard)
        if iothread:
            element.set("iothread", IOTHREAD)


def direct_io_refused(directory: Path) -> str:
    """Why O_DIRECT does not work in ``directory`` ("" when it does): one aligned block
    written and read back through a temporary file."""
    path = directory / f".ppec-odirect-{os.getpid()}"
    buf = mmap.mmap(-1, 4096)    # page-aligned, as O_DIRECT wants
    buf.write(b"p" * 4096)
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT | os.O_TRUNC, 0o600)
    except OSError as e:
        path.unlink(missing_ok=True)   # O_CREAT made it before O_DIRECT was refused
        buf.close()
        return f"{directory} refuses O_DIRECT ({errno.errorcode.get(e.errno or 0, e)})"
    try:
        os.write(fd, buf)
        return ""
    except OSError as e:
        return f"{directory} refuses O_DIRECT writes ({errno.errorcode.get(e.errno or 0, e)})"
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
        buf.close()


def choose(mode: str, storage_dir: Path) -> DiskTuning:
    """The disks' settings for ``disk_cache = mode`` (auto: none where O_DIRECT works)."""
    if mode == "writeback":
        return DiskTuning("writeback", "threads", why="disk_cache = writeback in the config")
    refused = direct_io_refused(storage_dir)
    if mode == "none" and refused:
        raise OSError(f"disk_cache = none, but {refused}")
    if refused:
        return DiskTuning("writeback", "threads", why=f"{refused}: host page cache in between")
    return DiskTuning("none", "native", why=f"O_DIRECT works on {storage_dir}")


def iothreads_element() -> ET.Element:
    el = ET.Element("iothreads")
    el.text = IOTHREAD
    return el


def iothreadpin(tune: ET.Element, cpuset: str) -> None:
    """The I/O thread beside the emulator thread(s): off the VM's vCPUs, on its nodes."""
    ET.SubElement(tune, "iothreadpin", iothread=IOTHREAD, cpuset=cpuset)


def memory_backing(page_kib: int, guest_cells: str) -> ET.Element:
    """Guest RAM from hugetlbfs pages of ``page_kib`` for these guest cells (numatune
    binds them to the host nodes the fit chose)."""
    backing = ET.Element("memoryBacking")
    ET.SubElement(ET.SubElement(backing, "hugepages"), "page", size=str(page_kib),
                  unit="KiB", nodeset=guest_cells)
    return backing


def has_iothread(root: ET.Element) -> bool:
    return (root.findtext("iothreads") or "0").strip() not in ("", "0")
