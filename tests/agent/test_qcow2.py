"""The agent's own qcow2 writer against qemu-img, the reference: the same bytes, a clean
`qemu-img check`, and nothing left behind when the disk fills or the volume exists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppec.agent import qcow2, storage
from ppec.core.errors import StorageError

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img (qemu-utils) is not installed")
KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


def reference(path: Path, size: int) -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)],
                   check=True)
    return path.read_bytes()


def qemu_info(path: Path) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return dict(json.loads(out))


@pytest.mark.parametrize("size", [1, 1000, MIB, 16 * MIB, GIB, 3 * GIB + 512,
                                  512 * MIB + KIB, TIB, 64 * TIB, 1 << 50])
def test_the_same_bytes_as_qemu_img_and_a_clean_check(size: int, tmp_path: Path) -> None:
    ours = tmp_path / "ours.qcow2"
    qcow2.create(ours, size)
    assert ours.read_bytes() == reference(tmp_path / "ref.qcow2", size)
    assert ours.stat().st_mode & 0o777 == 0o600
    subprocess.run(["qemu-img", "check", "-q", str(ours)], check=True)
    info = qemu_info(ours)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == -(-size // 512) * 512
    assert info["cluster-size"] == 64 * KIB


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(1, 1023), unit=st.sampled_from([KIB, MIB, GIB, TIB]))
def test_any_size_an_operator_can_write(count: int, unit: int, tmp_path: Path) -> None:
    """Sizes as `--size 7G` gives them (whole K, M, G or T)."""
    ours, ref = tmp_path / f"o{count}-{unit}.qcow2", tmp_path / f"r{count}-{unit}.qcow2"
    qcow2.create(ours, count * unit)
    assert ours.read_bytes() == reference(ref, count * unit)


def test_a_guest_writes_through_it_as_qemu_would(tmp_path: Path) -> None:
    """Data written through QEMU's own qcow2 driver reads back, and the image stays clean."""
    vol = tmp_path / "v.qcow2"
    qcow2.create(vol, 64 * MIB)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 40M 1M", str(vol)],
                   check=True, capture_output=True)
    read = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 40M 1M", str(vol)],
                          check=True, capture_output=True, text=True).stdout
    assert "read 1048576/1048576 bytes" in read
    subprocess.run(["qemu-img", "check", "-q", str(vol)], check=True)


def test_an_existing_volume_is_never_overwritten(tmp_path: Path) -> None:
    vol = tmp_path / "kept.qcow2"
    vol.write_bytes(b"someone's data")
    with pytest.raises(FileExistsError):
        qcow2.create(vol, GIB)
    with pytest.raises(StorageError) as e:
        storage.create_volume(vol, GIB)
    assert e.value.code == "VOLUME_EXISTS"
    assert vol.read_bytes() == b"someone's data"


FULL = """
import resource, signal, sys
from pathlib import Path
from ppec.agent import storage
from ppec.core.errors import StorageError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # the write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    storage.create_volume(Path(sys.argv[1]), 1 << 30)
except StorageError as e:
    print(e.code, e)
"""


def test_a_disk_that_fills_part_way_leaves_no_volume(tmp_path: Path) -> None:
    """A write that fails after the file exists (here a file-size limit, as a full disk
    would) is a StorageError naming the volume, and the partial file is gone."""
    vol = tmp_path / "full.qcow2"
    done = subprocess.run([sys.executable, "-c", FULL, str(vol)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.startswith(f"STORAGE creating volume {vol} failed"), done.stdout
    assert not vol.exists()


def test_no_space_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(StorageError) as e:
        storage.create_volume(tmp_path / "huge.qcow2", free * 2)
    assert e.value.code == "NO_SPACE"
    assert not (tmp_path / "huge.qcow2").exists()


def test_sizes_that_are_not_a_volume_are_refused() -> None:
    for size in (0, -1):
        with pytest.raises(ValueError):
            qcow2.layout(size)
