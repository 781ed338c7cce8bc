"""The rate definitions of ppec.wire.vmstats: exact figures from known counters, and the
edge cases (first sample, counter restart, a device that appears, missing counters)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ppec.wire import vmstats


def sample(clock: float, cpu: int | None, **extra: Any) -> dict[str, Any]:
    return {"name": "vm", "state": "running", "clock_s": clock, "vcpus": 2, "cpu_ns": cpu,
            "vcpu_ns": None, "steal_ns": None, "memory_kib": 1 << 20, "rss_kib": 300 << 10,
            "block": [], "net": [], **extra}


def test_cpu_is_percent_of_one_vcpu_and_of_all() -> None:
    # 3 s of CPU time in 2 s of wall time: 150% of one vCPU, 75% of its two.
    r = vmstats.rates(sample(10.0, 0, vcpu_ns=0, steal_ns=0),
                      sample(12.0, 3 * 10**9, vcpu_ns=2 * 10**9, steal_ns=10**8))
    assert (r["cpu_percent"], r["cpu_percent_of_vcpus"]) == (150.0, 75.0)
    assert (r["vcpu_percent"], r["steal_percent"], r["interval_s"]) == (100.0, 5.0, 2.0)
    assert (r["memory_mib"], r["rss_mib"]) == (1024, 300)


def test_io_rates_per_device_and_totals() -> None:
    before = sample(0.0, 0, block=[{"name": "vda", "rd_bytes": 0, "wr_bytes": 1000,
                                    "rd_reqs": 0, "wr_reqs": 1}])
    after = sample(4.0, 0, block=[
        {"name": "vda", "rd_bytes": 4096, "wr_bytes": 9000, "rd_reqs": 4, "wr_reqs": 9},
        # hot-plugged in between: all it counted is new
        {"name": "vdb", "rd_bytes": 0, "wr_bytes": 400, "rd_reqs": 0, "wr_reqs": 2}],
        net=[{"name": "vnet0", "rx_bytes": 800, "tx_bytes": 80}])
    r = vmstats.rates(before, after)
    vda, vdb = r["block"]
    assert (vda["read_bps"], vda["write_bps"], vda["write_iops"]) == (1024.0, 2000.0, 2.0)
    assert (vdb["write_bps"], vdb["wr_bytes"]) == (100.0, 400)
    assert (r["block_write_bps"], r["block_read_iops"]) == (2100.0, 1.0)
    assert (r["block_write_bytes"], r["block_read_bytes"]) == (9400, 4096)
    assert (r["net_rx_bps"], r["net_tx_bps"]) == (200.0, 20.0)


def test_no_rate_without_two_samples() -> None:
    for before in (None, sample(5.0, 0)):       # none, or the same clock reading
        r = vmstats.rates(before, sample(5.0, 10**9, block=[{"name": "vda", "wr_bytes": 7}]))
        assert r["cpu_percent"] is None and r["block_write_bps"] is None
        assert r["block"][0]["write_bps"] is None and r["block_write_bytes"] == 7
        assert r["memory_mib"] == 1024


def test_shut_off_vm_has_no_counters() -> None:
    off = {"name": "vm", "state": "shut-off", "clock_s": 3.0, "block": [], "net": []}
    r = vmstats.rates({**off, "clock_s": 1.0}, off)
    assert r["cpu_percent"] is None and r["memory_mib"] is None and r["vcpus"] == 0


def test_counters_that_restart_count_from_zero() -> None:
    r = vmstats.rates(sample(0.0, 50 * 10**9), sample(1.0, 10**8))
    assert r["cpu_percent"] == 10.0


@given(st.lists(st.tuples(st.text(min_size=1, max_size=3),
                          st.one_of(st.none(), st.floats(0, 1e4))), max_size=8))
def test_by_cpu_busiest_first_and_no_rate_last(rows: list[tuple[str, float | None]]) -> None:
    out = vmstats.by_cpu([{"name": n, "cpu_percent": c} for n, c in rows])
    cpus = [r["cpu_percent"] for r in out]
    known = [c for c in cpus if c is not None]
    assert known == sorted(known, reverse=True)
    assert cpus == known + [None] * (len(cpus) - len(known))


def test_every_field_is_documented() -> None:
    """docs/vmstats.md names every field a rate row has (the -o json contract)."""
    from pathlib import Path
    doc = (Path(__file__).parents[2] / "docs" / "vmstats.md").read_text()
    r = vmstats.rates(sample(0.0, 0), sample(1.0, 10**9, block=[{"name": "vda"}],
                                             net=[{"name": "vnet0"}]))
    keys = set(r) | set(r["block"][0]) | set(r["net"][0]) | {"host"}
    import re
    missing = sorted(k for k in keys if not re.search(rf"`[^`]*\b{k}\b[^`]*`", doc))
    assert missing == []
