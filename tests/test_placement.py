"""The interim placement rule: reasons are true, the choice fits, least loaded first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ppec.placement import HostView, Request, place

hosts_st = st.lists(st.builds(
    HostView, name=st.text("abcdefgh", min_size=1, max_size=4),
    region=st.sampled_from(["", "eu", "us"]),
    drained=st.booleans(), cpus=st.integers(1, 64), memory_mib=st.integers(1024, 1 << 20),
    committed_mib=st.integers(0, 1 << 20), storage_free_bytes=st.integers(0, 1 << 42)),
    max_size=20, unique_by=lambda h: h.name)
req_st = st.builds(Request, vcpus=st.integers(1, 80), memory_mib=st.integers(16, 1 << 19),
                   disk_bytes=st.integers(1 << 20, 1 << 41),
                   region=st.sampled_from(["", "eu", "us"]))


def _fits(h: HostView, r: Request) -> bool:
    return (not h.drained and (not r.region or h.region == r.region) and r.vcpus <= h.cpus
            and r.memory_mib <= h.memory_mib - h.committed_mib
            and r.disk_bytes <= h.storage_free_bytes)


@given(hosts_st, req_st)
def test_every_host_is_ranked_or_rejected_truthfully(hosts: list[HostView], req: Request) -> None:
    d = place(hosts, req)
    by_name = {h.name: h for h in hosts}
    assert sorted([*d.ranked, *(r.host for r in d.rejected)]) == sorted(by_name)
    assert all(_fits(by_name[n], req) for n in d.ranked)
    assert not any(_fits(by_name[r.host], req) for r in d.rejected)
    loads = [by_name[n].committed_mib / by_name[n].memory_mib for n in d.ranked]
    assert loads == sorted(loads)


def test_reasons_carry_the_numbers() -> None:
    h = HostView("h7", "eu", False, 8, 4096, 3072, 1 << 40)
    (why,) = place([h], Request(vcpus=2, memory_mib=2048, disk_bytes=1 << 30)).rejected
    assert (why.rule, why.reason) == ("memory", "h7: 1024 MiB memory free, needs 2048 MiB")
