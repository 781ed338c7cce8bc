"""The fleet views' part of a snapshot (service/http/brief.py) says what the whole
snapshot says: for simulated hosts of every shape, the brief read from the stored part
equals the brief made from the whole parse; a row from before the part carried these
fields is read whole instead."""

from __future__ import annotations

import json
from pathlib import Path

from ppec.operator.store import Host, Store
from ppec.operator.store import fleetstate as fs
from ppec.service.http import brief
from ppec.service.http.snapcache import parse
from tests.sim.fleet import SimSettings, host_answers


def test_the_part_says_what_the_whole_says(tmp_path: Path) -> None:
    settings = SimSettings(40, Path("/nonexistent"))
    store = Store(tmp_path / "s.db")
    for i in range(40):
        store.add_host(Host(settings.name(i), "local"))
    fs.record_round(store, [fs.Success(settings.name(i), 100.0 + i, dict(host_answers(
        settings, i)["host.snapshot"])) for i in range(40)], [], 200.0)
    rows = store.db.execute("SELECT host, taken_at, data, placement, topology "
                            "FROM snapshots").fetchall()
    assert len(rows) == 40
    for host, taken, data, part, topology in rows:
        got = brief.from_part(host, taken, part, topology)
        assert got is not None
        assert got == brief.from_parsed(parse(host, taken, data)), host
        assert got.vm_count == len(json.loads(data)["vms"]) and got.state_counts
    # A part without the views' fields (written before them): read whole.
    host = rows[0][0]
    old = json.loads(rows[0][3])
    del old["vm_states"]
    store.db.execute("UPDATE snapshots SET placement = ? WHERE host = ?", (json.dumps(old), host))
    assert brief.from_part(host, rows[0][1], json.dumps(old), rows[0][4]) is None
    got = brief.Briefs().get(store, {host: float(rows[0][1])})
    assert got[host] == brief.from_parsed(parse(host, rows[0][1], rows[0][2]))
    store.close()
