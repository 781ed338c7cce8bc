"""What `ppec host add --install` refuses, and that a refusal writes nothing past its step:
a wrong bootstrap key, a changed or unexpected host key, an unsupported OS, an agent config
that does not parse, the operator key as bootstrap key, the operator key already on a line
without ppec's forced command. `--dry-run` connects to nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.bootstrap_parts import BootHost, agent_config
from tests.realparts import TEST_NODE_URI, Cli, make_key


@pytest.fixture
def host(tmp_path: Path, sshd_ready: None) -> Iterator[BootHost]:
    h = BootHost(tmp_path / "host", "127.0.0.43", tmp_path / "keys").start()
    yield h
    h.stop()


def _refused(cli: Cli, args: list[str], exit_code: int) -> dict[str, object]:
    done = cli.run(*args, "-o", "json")
    assert done.returncode == exit_code, (done.returncode, done.stderr)
    err = json.loads(done.stderr)["error"]
    assert isinstance(err, dict)
    return err


def _untouched(cli: Cli, h: BootHost, keys_before: str) -> None:
    assert not (h.root / "opt").exists()
    assert not (h.root / "etc" / "ppec").exists()
    assert h.authorized_keys.read_text() == keys_before
    assert json.loads(cli.ok("host", "list", "-o", "json").stdout)["hosts"] == []


def _sessions(h: BootHost) -> int:
    assert h.sshd is not None
    log = h.sshd.root / "sshd.log"
    return log.read_text(errors="replace").count("Accepted publickey") if log.exists() else 0


def test_wrong_keys_and_host_keys_stop_at_connect(cli: Cli, host: BootHost,
                                                  tmp_path: Path) -> None:
    keys = host.authorized_keys.read_text()
    config = str(agent_config(tmp_path / "a.toml", host, "bm-4", TEST_NODE_URI))
    stranger = tmp_path / "stranger"
    make_key(stranger)
    args = host.add_args("bm-4", "--agent-config", config, "--accept-new-host-key")
    wrong = [a if a != str(host.bootstrap) else str(stranger) for a in args]
    err = _refused(cli, wrong, 1)
    assert err["code"] == "AUTH_REFUSED" and "step 'connect'" in str(err["message"])
    _untouched(cli, host, keys)

    pinned = [*host.add_args("bm-4", "--agent-config", config), "--host-key-fingerprint",
              "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
    err = _refused(cli, pinned, 1)
    assert err["code"] == "HOST_KEY_MISMATCH", err
    _untouched(cli, host, keys)

    # a key recorded for this address before, then the host's key changes
    assert host.sshd is not None
    known = Path(cli.env["XDG_CONFIG_HOME"]) / "ppec" / "known_hosts"
    known.parent.mkdir(parents=True, exist_ok=True)
    other = tmp_path / "oldhostkey"
    old = make_key(other).split()
    known.write_text(f"[{host.address}]:{host.sshd.port} {old[0]} {old[1]}\n")
    err = _refused(cli, args, 1)
    assert err["code"] == "HOST_KEY_CHANGED" and "CHANGED" in str(err["message"])
    _untouched(cli, host, keys)


def test_bad_config_same_keys_and_unsupported_os_write_nothing(
        cli: Cli, host: BootHost, tmp_path: Path) -> None:
    keys = host.authorized_keys.read_text()
    broken = tmp_path / "broken.toml"
    broken.write_text('host = "bm-5"\nsocket = \n')
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('host = "bm-5"\nsockett = "/run/x.sock"\n')
    for bad, words in ((broken, "does not parse"), (unknown, "sockett")):
        err = _refused(cli, host.add_args("bm-5", "--agent-config", str(bad),
                                          "--accept-new-host-key"), 2)
        assert err["code"] == "AGENT_CONFIG" and words in str(err["message"]), err
        assert "step 'config'" in str(err["message"])
    same = host.add_args("bm-5", "--accept-new-host-key")
    same[same.index("--bootstrap-identity") + 1] = str(host.operator)
    err = _refused(cli, same, 2)
    assert "bootstrap key is the operator key" in str(err["message"])
    assert _sessions(host) == 0   # none of these even connected
    _untouched(cli, host, keys)

    (host.root / "etc").mkdir(exist_ok=True)
    (host.root / "etc" / "os-release").write_text('ID=centos\nVERSION_ID="9"\n'
                                                  'PRETTY_NAME="CentOS Stream 9"\n')
    config = str(agent_config(tmp_path / "a.toml", host, "bm-5", TEST_NODE_URI))
    err = _refused(cli, host.add_args("bm-5", "--agent-config", config,
                                      "--accept-new-host-key"), 2)
    assert err["code"] == "UNSUPPORTED_OS" and "step 'os'" in str(err["message"])
    assert "CentOS Stream 9" in str(err["message"]) and "--force-os" in str(err["message"])
    _untouched(cli, host, keys)
    done = cli.run(*host.add_args("bm-5", "--agent-config", config, "--accept-new-host-key",
                                  "--force-os"))
    assert done.returncode == 0, done.stderr   # the operator's call: it goes on
    assert "os: CentOS Stream 9" in done.stderr and "agent answers" in done.stderr


def test_dry_run_lists_steps_and_files_and_connects_to_nothing(
        cli: Cli, host: BootHost) -> None:
    done = cli.ok(*host.add_args("bm-6", "--network", "blue=br-blue", "--reserved-cpus",
                                 "0", "--dry-run", "-o", "json"))
    doc = json.loads(done.stdout)
    assert doc["steps"][0] == "connect" and doc["steps"][-1] == "inventory"
    paths = " ".join(f["path"] for f in doc["files"])
    assert f"{host.root}/opt/ppec" in paths and str(host.authorized_keys) in paths
    assert 'host = "bm-6"' in doc["agent_config"]
    assert 'bridge = "br-blue"' in doc["agent_config"]
    assert _sessions(host) == 0


def test_the_operator_key_on_a_plain_line_is_refused_not_edited(
        cli: Cli, host: BootHost, tmp_path: Path) -> None:
    with host.authorized_keys.open("a") as f:
        f.write(f"{host.operator_pub}\n")    # the operator's key with a shell: not ppec's
    text = host.authorized_keys.read_text()
    config = str(agent_config(tmp_path / "a.toml", host, "bm-7", TEST_NODE_URI))
    err = _refused(cli, host.add_args("bm-7", "--agent-config", config,
                                      "--accept-new-host-key"), 2)
    assert err["code"] == "AUTHORIZED_KEYS_CONFLICT", err
    assert "step 'forced command'" in str(err["message"])
    assert host.authorized_keys.read_text() == text
    assert json.loads(cli.ok("host", "list", "-o", "json").stdout)["hosts"] == []
