import re
from pathlib import Path

import pytest

from ppec.agent.config import AgentConfig, from_mapping, load, parse_cpu_list
from ppec.core.errors import BadInput


def test_defaults_need_no_file() -> None:
    cfg = from_mapping({})
    assert cfg.socket == "/run/ppec/agent.sock" and cfg.libvirt_uri == "qemu:///system"
    assert cfg.reserved_memory_mib == 1024


def test_embedded_default_file_parses_to_the_defaults() -> None:
    import tomllib
    from importlib.resources import files
    data = tomllib.loads(files("ppec.agent").joinpath("default-agent.toml").read_text())
    assert from_mapping(data) == AgentConfig(host=AgentConfig().host)


@pytest.mark.parametrize(("data", "words"), [
    ({"sokcet": "/x"}, "unknown key(s) sokcet"),
    ({"domain_type": "xen"}, "domain_type must be"),
    ({"reserved_cpus": "3-1"}, "invalid CPU range"),
    ({"reserved_memory": "lots"}, "invalid reserved_memory"),
    ({"lock_timeout": -1}, "lock_timeout"),
    ({"allowed_uids": ["x"]}, "allowed_uids"),
    ({"host": 5}, "host must be a string"),
    ({"volume_quota": "lots"}, "invalid volume_quota"),
    ({"max_volumes": 0}, "max_volumes must be a whole number of at least 1"),
    ({"max_volumes": True}, "max_volumes must be a whole number"),
])
def test_bad_config(data: dict[str, object], words: str) -> None:
    with pytest.raises(BadInput, match=re.escape(words)):
        from_mapping(data)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        load(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("host = ")
    with pytest.raises(BadInput, match=r"bad\.toml"):
        load(tmp_path / "bad.toml")


def test_cpu_list() -> None:
    assert parse_cpu_list("0-1,4, 6-7") == {0, 1, 4, 6, 7}
    assert parse_cpu_list("") == frozenset()
