"""The agent's console registry: one session per VM, --force hands it over, a failed
takeover leaves the holder in place. The opener (libvirt's console) is the seam: the
real one is exercised on a booted guest in tests/e2e/test_console_ssh.py."""

from __future__ import annotations

import pytest

from ppec.agent.console import Consoles
from ppec.core.errors import Conflict, HypervisorError


class Opened:
    """What the registry needs of a console stream: a wake-up and a close."""

    def __init__(self, vm: str, force: bool) -> None:
        self.vm, self.force = vm, force
        self.woken = self.closed = False

    def wake(self) -> None:
        self.woken = True

    def close(self) -> None:
        self.closed = True


def test_one_session_per_vm_and_force_hands_it_over() -> None:
    opened: list[Opened] = []

    def opener(vm: str, force: bool) -> Opened:
        opened.append(Opened(vm, force))
        return opened[-1]

    consoles = Consoles(opener)  # type: ignore[arg-type]
    first, replaced = consoles.open("web-1", False, "alice@a")
    assert replaced is None and not opened[0].force
    with pytest.raises(Conflict) as busy:
        consoles.open("web-1", False, "bob@b")
    assert busy.value.code == "CONSOLE_BUSY"
    assert "in use by alice@a since" in busy.value.message
    assert busy.value.details["holder"]["client"] == "alice@a"
    assert len(opened) == 1                       # libvirt was not even asked
    other, _ = consoles.open("db-1", False, "bob@b")   # another VM: its own console
    second, replaced = consoles.open("web-1", True, "bob@b")
    assert replaced is first and first.taken_by == "bob@b" and opened[0].woken
    assert opened[2].force                        # libvirt told to take it too
    assert consoles.holders()["web-1"]["client"] == "bob@b"
    first.cancel()                                # the old relay ends: bob's stays
    assert opened[0].closed and consoles.holders()["web-1"]["client"] == "bob@b"
    second.cancel()
    other.cancel()
    assert consoles.holders() == {}


def test_a_takeover_libvirt_refuses_leaves_the_holder_undisturbed() -> None:
    calls = 0

    def opener(vm: str, force: bool) -> Opened:
        nonlocal calls
        calls += 1
        if force:
            raise HypervisorError("console of web-1: libvirt said no")
        return Opened(vm, force)

    consoles = Consoles(opener)  # type: ignore[arg-type]
    first, _ = consoles.open("web-1", False, "alice@a")
    with pytest.raises(HypervisorError):
        consoles.open("web-1", True, "bob@b")
    assert first.taken_by is None and not first.stream.woken  # type: ignore[attr-defined]
    assert consoles.holders()["web-1"]["client"] == "alice@a"
