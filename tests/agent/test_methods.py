import subprocess
import sys
from pathlib import Path

import pytest

from ppec.core.errors import BadInput
from ppec.wire.methods import METHODS, TIMEOUTS, check_params

CREATE = METHODS["vm.create"]
GOOD = {"name": "a", "vcpus": 1, "memory_mib": 64, "disk_bytes": 1 << 30}


def test_defaults_filled() -> None:
    assert check_params(CREATE, GOOD)["image"] == ""


@pytest.mark.parametrize(("params", "words"), [
    ({**GOOD, "extra": 1}, "unknown parameter"),
    ({k: v for k, v in GOOD.items() if k != "vcpus"}, "missing parameter 'vcpus'"),
    ({**GOOD, "vcpus": True}, "must be int"),
    ({**GOOD, "vcpus": "2"}, "must be int"),
    ({**GOOD, "vcpus": 0}, "at least 1"),
    ({**GOOD, "memory_mib": 1 << 40}, "at most"),
    ({**GOOD, "name": "../x"}, "invalid VM name"),
])
def test_refusals(params: dict[str, object], words: str) -> None:
    with pytest.raises(BadInput) as e:
        check_params(CREATE, params)
    assert words in str(e.value)


def test_every_method_has_a_known_tier_and_mutators_are_marked() -> None:
    assert all(m.tier in TIMEOUTS for m in METHODS.values())
    assert {n for n, m in METHODS.items() if m.mutating} == {
        "vm.create", "vm.delete", "vm.start", "vm.stop", "drift.check", "disk.attach",
        "disk.detach", "disk.list", "agent.update", "agent.rollback", "image.remove",
        # migration: each side's steps under its lock (the copy itself lets it go)
        "vm.migrate", "vm.migrate_info", "vm.migrate_settle", "vm.incoming",
        "vm.incoming_settle"}


def test_client_timeouts_cover_the_lock_and_the_wait_asked_for() -> None:
    from ppec.wire.methods import client_timeout
    assert client_timeout("ping", {}) == TIMEOUTS["fast"]
    assert client_timeout("vm.list", {}) == TIMEOUTS["normal"]
    # Locked methods may queue behind the host lock: at least the slow tier.
    assert client_timeout("vm.start", {"name": "x"}) == TIMEOUTS["slow"]
    assert client_timeout("disk.list", {"name": "x"}) == TIMEOUTS["slow"]
    # ... plus the seconds the caller lets the handler wait for a guest.
    assert client_timeout("disk.detach", {"timeout": 300}) == TIMEOUTS["slow"] + 300
    assert client_timeout("vm.stop", {"timeout": 3600}) == TIMEOUTS["slow"] + 3600
    assert client_timeout("vm.stop", {"timeout": True}) == TIMEOUTS["slow"]
    assert client_timeout("no.such", {}) == TIMEOUTS["fast"]


def test_every_method_resolves_to_a_handler_and_every_handler_is_in_the_table(
        tmp_path: Path) -> None:
    """Both directions, over real handler objects (libvirt's test driver): a table entry
    naming no handler would stop the agent at start; a handler no entry names is dead code
    or a method someone forgot to declare (its schema, tier and lock)."""
    from ppec.agent.config import AgentConfig
    from ppec.agent.context import AgentContext
    from ppec.agent.handlers import Handlers
    from ppec.agent.hypervisor import Hypervisor
    from ppec.agent.ledger import Ledger
    from tests.realparts import TEST_NODE_URI

    config = AgentConfig(host="t", state_dir=str(tmp_path), storage_dir=str(tmp_path / "d"),
                         libvirt_uri=TEST_NODE_URI)
    handlers = Handlers(AgentContext(config, Hypervisor(TEST_NODE_URI),
                                     Ledger(tmp_path / "ledger.db")))
    named = {m.handler for m in METHODS.values()}
    assert len(named) == len(METHODS)          # one handler per method
    assert named == handlers.served()
    for m in METHODS.values():
        assert callable(handlers.resolve(m.handler)), m.name
    for bad in ("vms._build", "vms", "nope.ping", "host.ctx", "vms.__init__"):
        with pytest.raises(KeyError):
            handlers.resolve(bad)


def test_the_method_table_imports_no_agent_code() -> None:
    code = ("import sys, ppec.wire.methods\n"
            "sys.stdout.write(repr(sorted(m for m in sys.modules if m.startswith("
            "('ppec.agent', 'libvirt')))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=True)
    assert done.stdout == "[]"
