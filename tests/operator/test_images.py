"""The image catalogue (issue 25): versions by SHA-256, what qemu-img refuses, removal
refused while a VM's document names the image; on both store backends."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from ppec.core.errors import AlreadyExists, BadInput, Conflict, NotFound
from ppec.operator import images
from ppec.operator.store import Host, Store
from ppec.wire.vmspec import Shape, VmSpec


@pytest.fixture
def store(store_url: str) -> Store:
    return Store(store_url)


def _qcow2(path: Path, size: str = "64M", backing: Path | None = None) -> Path:
    args = ["-b", str(backing), "-F", "qcow2"] if backing else []
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *args, str(path), size],
                   check=True)
    return path


def test_versions_by_digest(store: Store, tmp_path: Path) -> None:
    first = images.add(store, "deb", _qcow2(tmp_path / "a.qcow2"), os_user="debian")
    assert first.digest == hashlib.sha256((tmp_path / "a.qcow2").read_bytes()).hexdigest()
    assert (first.format, first.virtual_bytes, first.kind) == ("qcow2", 64 << 20, "disk")
    with pytest.raises(AlreadyExists):
        images.add(store, "deb", tmp_path / "a.qcow2")
    second = images.add(store, "deb", _qcow2(tmp_path / "b.qcow2", "128M"))
    assert images.resolve(store, "deb") == second and second.version == 2
    assert [i.digest for i in images.versions(store, "deb")] == [second.digest, first.digest]
    assert images.resolve(store, f"deb@{first.digest[:8]}") == first
    with pytest.raises(BadInput, match="8 or more digits"):
        images.resolve(store, f"deb@{first.digest[:4]}")
    with pytest.raises(NotFound, match="unknown image 'nope'"):
        images.resolve(store, "nope")
    raw = tmp_path / "vmlinuz"
    raw.write_bytes(b"\x7fELF" + b"k" * 1000)
    kernel = images.add(store, "k", raw, kind="kernel")
    assert (kernel.format, kernel.virtual_bytes) == ("raw", 1004)
    with pytest.raises(BadInput, match="is a kernel, not a disk"):
        images.resolve(store, "k")


@pytest.mark.parametrize(("make", "words"), [
    ("backing", "has a backing file"),
    ("vmdk", "is a vmdk image; ppec takes qcow2 or raw"),
    ("missing", "no such file"),
])
def test_what_the_catalogue_refuses(store: Store, tmp_path: Path, make: str,
                                    words: str) -> None:
    path = tmp_path / "x.img"
    if make == "backing":
        _qcow2(path, backing=_qcow2(tmp_path / "base.qcow2"))
    elif make == "vmdk":
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(path), "1M"], check=True)
    with pytest.raises(BadInput, match=words):
        images.add(store, "bad", path)
    assert images.versions(store) == []


def test_removal_is_refused_while_a_vm_uses_it(store: Store, tmp_path: Path) -> None:
    image = images.add(store, "deb", _qcow2(tmp_path / "a.qcow2"))
    store.add_host(Host(name="h1", address="local"))
    store.reserve_vm("web-1", "h1", Shape(1, 256, 1 << 30), images.ref(image.digest))
    doc = VmSpec("web-1", Shape(1, 256, 1 << 30), image=images.ref(image.digest)).document()
    store.set_vm("web-1", state="running", spec=json.dumps(doc))
    images.record_host(store, image.digest, "h1")
    [shown] = images.views(store, [image])
    assert shown["vms"] == ["web-1"]
    assert shown["hosts"] == ["h1"]
    with pytest.raises(Conflict) as e:
        images.remove(store, "deb")
    assert e.value.code == "IMAGE_IN_USE" and e.value.details["vms"] == ["web-1"]
    store.forget_vm("web-1")
    assert images.remove(store, "deb") == [image.digest]
    assert images.versions(store) == []
