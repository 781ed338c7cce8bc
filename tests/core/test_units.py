import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppec.agent.volumes import device_names
from ppec.core.errors import BadInput
from ppec.core.units import (
    check_disk_target,
    check_host_name,
    check_vm_name,
    format_size,
    parse_size,
)


@pytest.mark.parametrize(("text", "value"), [
    ("512M", 512 << 20), ("8G", 8 << 30), ("1T", 1 << 40), ("1g", 1 << 30),
    ("4GiB", 4 << 30), ("1024", 1024), (" 2K ", 2048),
])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["12Q", "1.5G", "", "G", "-1G", "0", "0M", "8 G B", "1e3",
                                  "8G\nX"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(BadInput) as e:
        parse_size(text, what="memory")
    assert "memory" in str(e.value)


@given(st.integers(min_value=1, max_value=1 << 52))
def test_format_parse_round_trip_for_exact_sizes(n: int) -> None:
    text = format_size(n)
    if not text.endswith(("B", ".0K")) and "." not in text:
        assert parse_size(text) == n


@pytest.mark.parametrize("name", ["a", "web-01", "x" * 63, "0db"])
def test_vm_names_accepted(name: str) -> None:
    assert check_vm_name(name) == name


@pytest.mark.parametrize("name", ["", "Bad_Name", "-a", "a-", "x" * 64, "a b", "../etc",
                                  "a.b", "ü", "foo\n"])
def test_vm_names_refused(name: str) -> None:
    with pytest.raises(BadInput):
        check_vm_name(name)


def test_host_names() -> None:
    assert check_host_name("bm-01.rack_2") == "bm-01.rack_2"
    with pytest.raises(BadInput):
        check_host_name("BM 01")


@pytest.mark.parametrize("target", ["vdb", "sda", "hdc", "vdaa", "vdzzz"])
def test_disk_targets(target: str) -> None:
    assert check_disk_target(target) == target


@pytest.mark.parametrize("target", ["", "vd", "xvda", "vdb1", "VDB", "vdb\n", "../vdb",
                                    "vdaaaa"])
def test_disk_targets_refused(target: str) -> None:
    with pytest.raises(BadInput, match="invalid disk target"):
        check_disk_target(target)


def test_device_names_follow_the_kernel_order() -> None:
    names = device_names("vd")
    first = [next(names) for _ in range(28)]
    assert first[:3] == ["vda", "vdb", "vdc"] and first[25:] == ["vdz", "vdaa", "vdab"]
    assert all(check_disk_target(n) for n in first)
