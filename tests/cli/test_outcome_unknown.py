"""The connection dies after vm.create left: the name and address stay reserved."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

from tests.realparts import Agent, Cli, wait_until


class Relay:
    """A Unix-socket relay in front of a real agent that can cut the line: the network
    failing at the worst moment. Once it has passed a vm.create on, it hangs up and
    refuses every connection until told to come back."""

    def __init__(self, path: Path, agent: Path) -> None:
        self.path, self.agent = path, agent
        self.down = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            if self.down.is_set():
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        up = socket.socket(socket.AF_UNIX)
        up.connect(str(self.agent))
        client, agent = conn.makefile("rb"), up.makefile("rb")
        with conn, up:
            for line in client:
                up.sendall(line)
                if b'"vm.create"' in line:
                    self.down.set()   # the request left; the answer never arrives
                    return
                conn.sendall(agent.readline())


def test_outcome_unknown_keeps_name_address_and_mac_until_resolved(
        cli: Cli, net_agent: Agent, tmp_path: Path) -> None:
    test_agent = net_agent
    relay = Relay(tmp_path / "relay.sock", test_agent.socket)
    cli.ok("host", "add", "t1", "--address", "local", "--socket", str(relay.path),
           "--vrf", "blue")
    cli.ok("ip", "pool", "add", "p1", "--vrf", "blue", "--cidr", "10.0.0.0/30")
    done = cli.run("vm", "create", "lost", "--flavor", "tiny", "-o", "json")
    assert done.returncode == 1
    err = json.loads(done.stderr)["error"]
    assert err["code"] == "OUTCOME_UNKNOWN"
    assert "whether lost was created is unknown" in err["message"]
    # The agent did build it (it may still be at it when the CLI gives up: the request had
    # left); ppec kept its claim and its address.
    wait_until(lambda: test_agent.ledger_rows().get("lost", ("",))[0] == "present",
               timeout=60, what="the agent finishing the create the CLI lost sight of")
    assert cli.store_vms() == ["lost"]
    owned = json.loads(cli.ok("ip", "list", "-o", "json").stdout)["addresses"]
    assert [(a["address"], a["owner"]) for a in owned] == [("10.0.0.1", "lost")]
    with closing(sqlite3.connect(cli.db)) as db:
        macs = list(db.execute("SELECT vm, address FROM vm_nics"))
    assert macs == [("lost", "10.0.0.1/30")]
    again = cli.run("vm", "create", "lost", "--flavor", "tiny")
    assert again.returncode == 2 and "already exists" in again.stderr
    relay.down.clear()   # the network is back: an ordinary delete resolves it
    cli.ok("vm", "delete", "lost")
    assert test_agent.ledger_rows() == {} and cli.store_vms() == []
    assert json.loads(cli.ok("ip", "list", "-o", "json").stdout)["addresses"] == []
    with closing(sqlite3.connect(cli.db)) as db:
        assert list(db.execute("SELECT * FROM vm_nics")) == []
