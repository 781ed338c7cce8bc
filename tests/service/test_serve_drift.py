"""Drift made with virsh on a real QEMU domain reaches a real HTTP receiver through
`ppec serve`; undoing it sends the resolution; a receiver that hangs and one that refuses
connections do not hold up the snapshot rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.realparts import QEMU_URI, Cli, make_key, unique, virsh, wait_until
from tests.service.serving import (
    Receiver,
    Service,
    add_hosts,
    make_fleet,
    refused_url,
    stop_fleet,
)


def mine(got: list[dict[str, Any]], vm: str) -> list[tuple[str, str, str, str]]:
    # Other domains on this machine's libvirtd are foreign to this agent too: ignore them.
    return [(e["host"], e["code"], e["object"], e["state"]) for e in got
            if e["object"] == vm]


def test_drift_reaches_the_webhook_and_a_dead_receiver_never_stalls_snapshots(
        cli: Cli, qemu_dir: Path, sshd_ready: None) -> None:
    key = qemu_dir / "operator_ed25519"
    hosts = make_fleet(qemu_dir / "fleet", 1, QEMU_URI, make_key(key),
                       agent_extra={"drift_interval": 0, "cpu_overcommit": 12.0})
    good, hanging = Receiver(), Receiver(hang=True)
    service = Service(cli, qemu_dir / "serve", {
        "snapshot_interval": 1.0, "drift_interval": 1.0, "agent_check_interval": 30.0,
        "notifier": [{"type": "webhook", "url": hanging.url, "timeout": 120, "retries": 0},
                     {"type": "webhook", "url": refused_url(), "timeout": 2, "retries": 5},
                     {"type": "webhook", "url": good.url, "timeout": 5}]})
    vm = unique("drift")
    try:
        add_hosts(cli, hosts, key)
        cli.ok("vm", "create", vm, "--cpus", "1", "--memory", "64M", "--disk", "16M")
        service.start()
        service.wait_rounds(2, job="drift")
        assert mine(good.got, vm) == []

        virsh("destroy", vm)   # behind ppec's back: the ledger says running
        wait_until(lambda: mine(good.got, vm), 60, "the drift alert at the receiver")
        assert mine(good.got, vm) == [("h1", "POWER_MISMATCH", vm, "opened")]
        opened = next(e for e in good.got if e["object"] == vm)
        assert opened["detail"] == "ppec last set running, libvirt has shut-off"
        assert opened["first_seen"] and opened["resolved_at"] is None
        assert hanging.hits >= 1        # that receiver holds its first delivery, unanswered
        snaps = len(service.rounds())

        cli.ok("vm", "start", vm)      # put it back: the alert resolves
        wait_until(lambda: len(mine(good.got, vm)) == 2, 60, "the resolution")
        assert mine(good.got, vm)[1] == ("h1", "POWER_MISMATCH", vm, "resolved")
        resolved = [e for e in good.got if e["object"] == vm][1]
        assert resolved["resolved_at"] >= resolved["first_seen"] == opened["first_seen"]

        # Snapshot rounds go on while the hanging receiver still holds its first delivery
        # (it never answers; the notifier waits 120 s) and the refused one is retried.
        service.wait_rounds(snaps + 4)
        assert hanging.hits == 1
        hung = f"webhook {hanging.url}"
        assert not [e for e in service.events() if e.get("notifier") == hung]
        refusals = [e for e in service.events("notify_failed") if e["notifier"] ==
                    f"webhook {service.serve['notifier'][1]['url']}"]
        assert refusals and all("refused" in e["error"].lower() for e in refusals)
    finally:
        service.stop()
        good.close()
        hanging.close()
        virsh("destroy", vm, check=False)
        virsh("undefine", vm, check=False)
        stop_fleet(hosts)
