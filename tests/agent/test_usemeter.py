"""The host snapshot's VM use: rates since the previous snapshot, never a wait."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ppec.agent.handlers import stats

VMS = [{"name": "vm1", "vcpus": 1}]   # the snapshot's own VM list, as vm.list gives it


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.cpu_ns = 0

    def sample(self, _ctx: Any, _held: dict[str, int], names: list[str],
               _groups: int = 0) -> dict[str, dict[str, Any]]:
        return {n: {"name": n, "state": "running", "vcpus": 1, "clock_s": self.t,
                    "cpu_ns": self.cpu_ns, "block": [], "net": []} for n in names}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(stats, "sample", c.sample)
    monkeypatch.setattr(stats.time, "monotonic", lambda: c.t)
    return c


def test_a_new_vm_has_no_rate_and_the_snapshot_does_not_wait(clock: Clock) -> None:
    meter = stats.UseMeter(ctx=None)  # type: ignore[arg-type]
    start = time.perf_counter()
    first = meter.use(VMS)
    assert time.perf_counter() - start < 0.2          # no second sample slept for
    assert first["vms"]["vm1"]["cpu_percent"] is None and first["cpu_used"] is None
    clock.t += 2.0
    clock.cpu_ns += 1_000_000_000                      # 1 s of CPU in 2 s: 50%
    second = meter.use(VMS)
    assert second["vms"]["vm1"]["cpu_percent"] == 50.0 and second["cpu_used"] == 0.5


def test_snapshots_in_quick_succession_measure_over_the_baseline_before(clock: Clock) -> None:
    meter = stats.UseMeter(ctx=None)  # type: ignore[arg-type]
    meter.use(VMS)
    clock.t += 1.0
    clock.cpu_ns += 1_000_000_000
    assert meter.use(VMS)["vms"]["vm1"]["cpu_percent"] == 100.0
    clock.t += 0.1                                     # 0.1 s later: too short a window
    third = meter.use(VMS)["vms"]["vm1"]
    assert third["interval_s"] == 1.1 and third["cpu_percent"] == pytest.approx(90.9, 0.1)
