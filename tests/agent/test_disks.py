"""Dynamic disks on real libvirtd + QEMU, seen from inside a guest that really boots.

The guest (tests/guest) is Debian's cloud kernel with a busybox initramfs, booted under TCG;
it reports its block devices on the serial console, which virtlogd copies to a file. Every
result is checked three ways: the guest's console, `virsh domblklist` (live and saved
config), and the volume files on disk, plus the ledger read with sqlite3.
"""

from __future__ import annotations

import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.realparts import PPEC, Agent, Cli, Console, unique, virsh, vm_files, wait_until

NO_OS = ("--cpus", "1", "--memory", "64M", "--disk", "16M")   # an empty disk: SeaBIOS spins


@pytest.fixture
def gcli(cli: Cli, guest_agent: Agent) -> Cli:
    cli.ok("host", "add", "g", "--address", "local", "--socket", str(guest_agent.socket))
    return cli


def boot(cli: Cli, agent: Agent, guest: Path, name: str) -> Console:
    """Create a VM that boots the test guest; return its console once the guest is up."""
    cli.ok("vm", "create", name, "--cpus", "1", "--memory", "256M", "--disk", "64M",
           "--kernel", str(guest / "vmlinuz"), "--initrd", str(guest / "initrd.img"),
           "--cmdline", "console=ttyS0 quiet panic=-1")
    console = agent.console(name)
    console.wait(lambda d: "vda" in d)
    return console


def blk(name: str, inactive: bool = False) -> dict[str, str]:
    """target -> source from `virsh domblklist` (live, or the saved config)."""
    out = virsh("domblklist", name, *(["--inactive"] if inactive else []))
    rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
    return {r[0]: r[1] for r in rows if len(r) == 2}


def attach(cli: Cli, vm: str, *args: str) -> dict[str, object]:
    done = cli.run("disk", "attach", vm, *args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def disk_list(cli: Cli, vm: str) -> dict[str, dict[str, object]]:
    doc = json.loads(cli.ok("disk", "list", vm, "-o", "json").stdout)
    return {d["target"]: d for d in doc["disks"]}


def vm_alerts(cli: Cli, vm: str) -> list[dict[str, str]]:
    """Drift alerts about one VM (other tests' domains may raise their own)."""
    done = cli.run("alerts", "-o", "json")
    assert done.returncode in (0, 10), done.stderr
    return [a for a in json.loads(done.stdout)["alerts"] if a["object"] == vm]


def error(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return dict(json.loads(done.stderr.strip().splitlines()[-1])["error"])


def test_attach_shows_in_the_guest_and_detach_removes_it_guest_then_libvirt_then_volume(
        gcli: Cli, guest_agent: Agent, guest: Path) -> None:
    vm = unique("g")
    console = boot(gcli, guest_agent, guest, vm)
    disk = attach(gcli, vm, "--size", "48M")
    assert disk["target"] == "vdb" and disk["live"] is True and disk["persistent"] is True
    path = Path(str(disk["path"]))
    assert path.parent == guest_agent.storage
    # Inside the guest: a 48 MiB disk (98304 sectors) with the serial ppec gave it.
    seen = console.wait(lambda d: "vdb" in d)
    assert seen["vdb"] == (48 * 2048, "ppec-vdb")
    assert blk(vm)["vdb"] == str(path) and blk(vm, inactive=True)["vdb"] == str(path)
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["virtual-size"] == 48 << 20
    listed = disk_list(gcli, vm)
    assert (listed["vdb"]["kind"], listed["vdb"]["state"], listed["vdb"]["live"],
            listed["vdb"]["persistent"]) == ("data", "attached", True, True)
    assert listed["vda"]["kind"] == "root"
    assert guest_agent.disk_rows() == {(vm, "vdb"): ("attached", str(path))}
    # ppec's own change is no drift.
    assert vm_alerts(gcli, vm) == []

    done = json.loads(gcli.ok("disk", "detach", vm, "vdb", "-o", "json").stdout)
    assert (done["detached"], done["volume"]) == (True, "deleted")
    assert "vdb" not in console.wait(lambda d: "vdb" not in d, timeout=10)
    assert "vdb" not in blk(vm) and "vdb" not in blk(vm, inactive=True)
    assert not path.exists()
    assert guest_agent.disk_rows() == {}
    # The order the agent did it in: config, then the guest's release, then the volume.
    log = guest_agent.log()
    steps = [log.index(f"{vm}: vdb removed from the saved config"),
             log.index(f"{vm}: vdb released by the guest (libvirt: device removed)"),
             log.index(f"{vm}: vdb's volume {path} deleted")]
    assert steps == sorted(steps)
    gcli.ok("vm", "delete", vm)
    assert guest_agent.volumes() == set()


def test_scsi_disk_and_existing_volume_with_keep(gcli: Cli, guest_agent: Agent,
                                                 guest: Path) -> None:
    vm = unique("g")
    console = boot(gcli, guest_agent, guest, vm)
    disk = attach(gcli, vm, "--size", "32M", "--bus", "scsi")
    assert disk["target"] == "sda"
    assert console.wait(lambda d: "sda" in d)["sda"][0] == 32 * 2048
    # The virtio-scsi controller ppec added (live and saved), which the guest drove.
    for xml in (virsh("dumpxml", vm), virsh("dumpxml", "--inactive", vm)):
        assert "<controller type='scsi' index='0' model='virtio-scsi'>" in xml
    kept = json.loads(gcli.ok("disk", "detach", vm, "sda", "--keep-volume",
                              "-o", "json").stdout)
    assert kept["volume"] == "kept"
    console.wait(lambda d: "sda" not in d, timeout=10)
    path = Path(str(disk["path"]))
    assert path.exists()
    # The kept volume goes back in with --path, as a virtio disk this time.
    again = attach(gcli, vm, "--path", str(path))
    assert (again["target"], again["volume"]) == ("vdb", "path")
    assert console.wait(lambda d: "vdb" in d)["vdb"][0] == 32 * 2048
    # A volume attached with --path is never deleted by ppec.
    done = json.loads(gcli.ok("disk", "detach", vm, "vdb", "-o", "json").stdout)
    assert (done["volume"], done["reason"]) == ("kept", "attached with --path")
    assert path.exists()
    gcli.ok("vm", "delete", vm)
    assert guest_agent.volumes() == {path.name}


def test_a_domain_without_guest_os_leaves_detach_pending_and_keeps_the_volume(
        gcli: Cli, guest_agent: Agent) -> None:
    vm = unique("n")
    gcli.ok("vm", "create", vm, *NO_OS)
    disk = attach(gcli, vm, "--size", "16M")
    path = Path(str(disk["path"]))
    for _ in range(2):   # a second attempt while nothing in the guest answers: still pending
        done = gcli.run("disk", "detach", vm, "vdb", "--timeout", "2", "-o", "json")
        assert done.returncode == 1, done.stderr
        err = error(done)
        assert err["code"] == "DETACH_PENDING"
        assert err["details"] == {"vm": vm, "target": "vdb", "path": str(path),  # type: ignore[comparison-overlap]
                                  "state": "detach-pending", "volume": "kept"}
        assert "detach pending" in str(err["message"])
        assert path.exists()
        assert blk(vm)["vdb"] == str(path) and "vdb" not in blk(vm, inactive=True)
        assert guest_agent.disk_rows() == {(vm, "vdb"): ("detach-pending", str(path))}
    listed = disk_list(gcli, vm)["vdb"]
    assert (listed["state"], listed["live"], listed["persistent"]) == (
        "detach-pending", True, False)
    # A pending disk is expected live and absent from the config: no drift.
    assert vm_alerts(gcli, vm) == []
    # Its name stays taken while the guest may still have it.
    assert attach(gcli, vm, "--size", "16M")["target"] == "vdc"
    # Powered off, the domain has no live disks: the pending detach completes.
    gcli.ok("vm", "stop", vm, "--force")
    done = json.loads(gcli.ok("disk", "detach", vm, "vdb", "-o", "json").stdout)
    assert done["volume"] == "deleted" and not path.exists()
    assert set(guest_agent.disk_rows()) == {(vm, "vdc")}
    gcli.ok("vm", "delete", vm)
    assert guest_agent.volumes() == set() and guest_agent.disk_rows() == {}


@pytest.mark.parametrize("resolver", ["detach", "list"])
def test_a_guest_that_is_not_running_then_comes_up_completes_the_detach(
        gcli: Cli, guest_agent: Agent, guest: Path, resolver: str) -> None:
    vm = unique("g")
    console = boot(gcli, guest_agent, guest, vm)
    path = Path(str(attach(gcli, vm, "--size", "16M")["path"]))
    console.wait(lambda d: "vdb" in d)
    virsh("suspend", vm)   # the guest's CPUs stop: nothing answers the unplug request
    done = gcli.run("disk", "detach", vm, "vdb", "--timeout", "2", "-o", "json")
    assert done.returncode == 1 and error(done)["code"] == "DETACH_PENDING"
    assert path.exists() and blk(vm)["vdb"] == str(path)
    virsh("resume", vm)    # the guest is up again and handles the pending request
    console.wait(lambda d: "vdb" not in d, timeout=30)
    # The guest lets go before QEMU reports the unplug to libvirt; a quick `disk list` in
    # between rightly still says detach-pending. Resolve once libvirt has dropped it.
    wait_until(lambda: "vdb" not in blk(vm), 30, "libvirt's live config without vdb")
    if resolver == "detach":
        done2 = json.loads(gcli.ok("disk", "detach", vm, "vdb", "-o", "json").stdout)
        assert done2["volume"] == "deleted"
    else:
        listed = gcli.ok("disk", "list", vm)
        assert "vdb" not in listed.stdout
        assert f"{vm}: vdb ({path}): pending detach completed; volume deleted" in listed.stderr
    assert not path.exists() and "vdb" not in blk(vm) and guest_agent.disk_rows() == {}
    gcli.ok("vm", "delete", vm)


def test_ten_concurrent_attaches_get_ten_targets_and_volumes(gcli: Cli, guest_agent: Agent,
                                                             guest: Path) -> None:
    vm = unique("g")
    console = boot(gcli, guest_agent, guest, vm)
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: gcli.run("disk", "attach", vm, "--size", "8M",
                                                   "-o", "json"), range(10)))
    for r in results:
        assert r.returncode == 0, r.stderr
    docs = [json.loads(r.stdout) for r in results]
    targets = sorted(d["target"] for d in docs)
    assert targets == sorted(f"vd{c}" for c in "bcdefghijk")
    paths = {d["path"] for d in docs}
    assert len(paths) == 10
    live, saved = blk(vm), blk(vm, inactive=True)
    assert {t: p for t, p in live.items() if t not in ("vda", "hdc")} == {d["target"]: d["path"]
                                                            for d in docs}
    assert live == saved
    assert guest_agent.volumes() == vm_files(vm) | {Path(p).name for p in paths}
    assert {t for (_, t) in guest_agent.disk_rows()} == set(targets)
    seen = console.wait(lambda d: len(d) == 11)
    assert sorted(s for _, s in seen.values() if s) == sorted(f"ppec-{t}" for t in targets)
    gcli.ok("vm", "delete", vm)
    assert guest_agent.volumes() == set() and guest_agent.disk_rows() == {}


def test_bad_attaches_and_detaches_say_why_and_create_nothing(
        gcli: Cli, guest_agent: Agent, qemu_dir: Path) -> None:
    vm, other = unique("n"), unique("n")
    gcli.ok("vm", "create", vm, *NO_OS)
    gcli.ok("vm", "create", other, *NO_OS)
    used = Path(str(attach(gcli, other, "--size", "8M")["path"]))
    # A domain ppec does not know, using a volume in the storage dir.
    foreign_vol = guest_agent.storage / "foreign.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(foreign_vol), "8M"],
                   check=True)
    foreign = unique("foreign")
    xml = qemu_dir / "foreign.xml"
    xml.write_text(f"<domain type='qemu'><name>{foreign}</name><memory unit='MiB'>32"
                   f"</memory><os><type>hvm</type></os><devices><disk type='file' "
                   f"device='disk'><driver name='qemu' type='qcow2'/><source file="
                   f"'{foreign_vol}'/><target dev='vda' bus='virtio'/></disk></devices>"
                   f"</domain>")
    virsh("define", str(xml))
    backed = guest_agent.storage / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(foreign_vol),
                    "-F", "qcow2", str(backed)], check=True)
    # A qcow2 whose data lives in another file (a guest can write such a header into a
    # raw volume): attaching it would hand the guest that file.
    data_file = guest_agent.storage / "data-file.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={qemu_dir / 'outside.raw'},data_file_raw=on", str(data_file),
                    "8M"], check=True)
    before = (guest_agent.volumes(), guest_agent.disk_rows(), blk(vm), blk(vm, inactive=True))
    cases = [
        (("disk", "attach", vm, "--path", str(used)), 1, "VOLUME_IN_USE",
         f"is disk vdb of VM {other}"),
        (("disk", "attach", vm, "--path", str(foreign_vol)), 1, "VOLUME_IN_USE",
         f"is used by domain {foreign} (vda)"),
        (("disk", "attach", vm, "--path", f"{other}.qcow2"), 2, "BAD_INPUT",
         "must be absolute"),
        (("disk", "attach", vm, "--path", str(guest_agent.storage / f"{other}.qcow2")), 1,
         "VOLUME_IN_USE", f"is VM {other}'s own disk"),
        (("disk", "attach", vm, "--path", "/etc/passwd"), 2, "VOLUME_OUTSIDE",
         "is not in the storage dir"),
        (("disk", "attach", vm, "--path", str(guest_agent.storage / "nope.qcow2")), 2,
         "NOT_FOUND", "does not exist"),
        (("disk", "attach", vm, "--path", str(backed)), 2, "VOLUME_BACKED",
         f"refers to another file ({foreign_vol})"),
        (("disk", "attach", vm, "--path", str(data_file)), 2, "VOLUME_BACKED",
         f"refers to another file ({qemu_dir / 'outside.raw'})"),
        (("disk", "attach", vm, "--size", "900T"), 1, "NO_SPACE", "not enough space in"),
        (("disk", "attach", vm, "--size", "-5G"), 2, "BAD_SIZE", "invalid disk size"),
        (("disk", "attach", vm), 2, "BAD_INPUT", "give --size"),
        (("disk", "attach", vm, "--size", "1G", "--path", str(used)), 2, "BAD_INPUT",
         "give --size"),
        (("disk", "attach", "ghost", "--size", "1G"), 2, "NOT_FOUND", "ghost"),
        (("disk", "attach", "ghost", "--size", "1G", "--host", "g"), 2, "NOT_FOUND",
         "no VM named ghost"),
        (("disk", "detach", vm, "vdz"), 2, "NOT_FOUND", f"VM {vm} has no disk vdz"),
        (("disk", "detach", vm, "vda"), 2, "ROOT_DISK", f"vda is {vm}'s root disk"),
        (("disk", "detach", vm, "nonsense"), 2, "BAD_TARGET", "invalid disk target"),
        (("disk", "detach", "ghost", "vdb"), 2, "NOT_FOUND", "ghost"),
        (("disk", "list", "ghost"), 2, "NOT_FOUND", "ghost"),
    ]
    for args, code, err_code, words in cases:
        done = gcli.run(*args, "-o", "json")
        assert done.returncode == code, (args, done.stderr)
        err = error(done)
        assert err["code"] == err_code, (args, err)
        assert words in str(err["message"]), (args, err)
    assert (guest_agent.volumes(), guest_agent.disk_rows(), blk(vm),
            blk(vm, inactive=True)) == before
    # A disk attached behind ppec's back is reported and left alone.
    virsh("attach-disk", vm, str(foreign_vol), "vdq", "--subdriver", "qcow2", "--config")
    done = gcli.run("disk", "detach", vm, "vdq", "-o", "json")
    assert done.returncode == 1 and error(done)["code"] == "NOT_OWNED"
    assert disk_list(gcli, vm)["vdq"]["kind"] == "foreign"
    virsh("undefine", foreign)
    for name in (vm, other):
        gcli.ok("vm", "delete", name)


def test_the_volume_quota_and_count_are_checked_before_anything_is_made(
        cli: Cli, qemu_dir: Path, guest: Path) -> None:
    agent = Agent(qemu_dir / "quota", host=unique("q"), libvirt_uri="qemu:///system",
                  extra={"volume_quota": "40M", "max_volumes": 3, "domain_type": "qemu"}
                  ).start()
    try:
        cli.ok("host", "add", "q", "--address", "local", "--socket", str(agent.socket))
        vm = unique("n")
        cli.ok("vm", "create", vm, *NO_OS)                       # 16M, 1 volume
        done = cli.run("disk", "attach", vm, "--size", "32M", "-o", "json")
        assert done.returncode == 3
        err = error(done)
        assert err["code"] == "VOLUME_QUOTA" and "over its quota of 40M" in str(err["message"])
        attach(cli, vm, "--size", "8M")                          # 24M, 2 volumes
        attach(cli, vm, "--size", "8M")                          # 32M, 3 volumes
        done = cli.run("disk", "attach", vm, "--size", "1M", "-o", "json")
        assert done.returncode == 3
        assert "holds 3 volumes, its quota is 3" in str(error(done)["message"])
        # Three volumes (the seed ISO is no volume: neither quota counts it).
        assert len(agent.volumes() - vm_files(vm)) == 2 and len(agent.disk_rows()) == 2
        cli.ok("vm", "delete", vm)
        assert agent.volumes() == set()
    finally:
        agent.kill()


def detach_waiting(cli: Cli, agent: Agent, guest: Path
                   ) -> tuple[str, Console, Path, subprocess.Popen[str]]:
    """A booted guest with vdb attached, then paused, and a `disk detach vdb` (JSON, up to
    120 s) whose agent has taken the disk out of the saved config, asked the guest to
    release it, and now waits."""
    vm = unique("g")
    console = boot(cli, agent, guest, vm)
    path = Path(str(attach(cli, vm, "--size", "16M")["path"]))
    console.wait(lambda d: "vdb" in d)
    virsh("suspend", vm)   # the guest's CPUs stop: nothing answers the unplug request
    waiting = subprocess.Popen([PPEC, "disk", "detach", vm, "vdb", "--timeout", "120",
                                "-o", "json"], env=cli.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_until(lambda: f"{vm}: asked the guest to release vdb" in agent.log(),
               what="the agent's unplug request")
    assert "vdb" not in blk(vm, inactive=True)
    return vm, console, path, waiting


@pytest.mark.parametrize("moment", ["guest-still-has-it", "guest-released-it"])
def test_agent_killed_between_config_removal_and_volume_deletion(
        gcli: Cli, guest_agent: Agent, guest: Path, moment: str) -> None:
    vm, console, path, detach = detach_waiting(gcli, guest_agent, guest)
    assert guest_agent.disk_rows() == {(vm, "vdb"): ("detaching", str(path))}
    if moment == "guest-released-it":
        assert guest_agent.proc is not None
        guest_agent.proc.send_signal(signal.SIGSTOP)   # frozen before it can delete
        virsh("resume", vm)
        console.wait(lambda d: "vdb" not in d, timeout=30)
        wait_until(lambda: "vdb" not in blk(vm), what="vdb gone from the live XML")
    guest_agent.kill(signal.SIGKILL)
    detach.wait(timeout=60)
    assert detach.returncode != 0
    assert path.exists()          # nothing deleted by the crash itself
    guest_agent.start()
    rows = guest_agent.disk_rows()
    if moment == "guest-still-has-it":
        # Recovery: out of the config, still live: pending, volume kept.
        assert rows == {(vm, "vdb"): ("detach-pending", str(path))}
        assert path.exists() and blk(vm)["vdb"] == str(path)
        assert "detach pending (guest still has it); volume kept" in guest_agent.log()
        virsh("resume", vm)
        console.wait(lambda d: "vdb" not in d, timeout=30)
        wait_until(lambda: "vdb" not in blk(vm), what="vdb gone from the live XML")
        assert "vdb" not in disk_list(gcli, vm)
    else:
        # Recovery: libvirt says the guest let go, so the volume goes and the row with it.
        assert f"recovery: {vm}: vdb ({path}): pending detach completed; volume deleted" \
            in guest_agent.log()
    assert guest_agent.disk_rows() == {}
    assert not path.exists()
    assert "vdb" not in blk(vm) and "vdb" not in blk(vm, inactive=True)
    assert guest_agent.volumes() == vm_files(vm)
    gcli.ok("vm", "delete", vm)


def test_agent_killed_mid_attach_is_undone_or_kept_on_restart(gcli: Cli,
                                                             guest_agent: Agent) -> None:
    """Rows a crash left in 'attaching': volume made but not attached (undone), attached but
    not yet marked (kept)."""
    import contextlib
    import sqlite3
    vm = unique("n")
    gcli.ok("vm", "create", vm, *NO_OS)
    kept = Path(str(attach(gcli, vm, "--size", "8M")["path"]))
    guest_agent.kill(signal.SIGKILL)
    orphan = guest_agent.storage / f"{vm}-vdc-000000.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(orphan), "8M"], check=True)
    with contextlib.closing(sqlite3.connect(guest_agent.ledger)) as db, db:
        db.execute("UPDATE disks SET state='attaching'")
        db.execute("INSERT INTO disks (vm, target, path, bytes, bus, format, owned, keep, "
                   "state, created_at, updated_at) VALUES (?, 'vdc', ?, 8388608, 'virtio', "
                   "'qcow2', 1, 0, 'attaching', 'x', 'x')", (vm, str(orphan)))
    guest_agent.start()
    assert guest_agent.disk_rows() == {(vm, "vdb"): ("attached", str(kept))}
    assert not orphan.exists() and kept.exists()
    gcli.ok("vm", "delete", vm)
    assert guest_agent.volumes() == set()


def test_detach_waits_for_a_second_person_when_policy_says_so(
        cli: Cli, qemu_dir: Path, tmp_path: Path) -> None:
    """Maker-checker end to end on real QEMU: the request holds the detach, the approval
    runs it with the maker's --keep-volume, and the agent enforces its own approvers file."""
    from tests.policy import as_, install_policy, make_people
    people = make_people(tmp_path)
    approvers = install_policy(cli, tmp_path, people)
    agent = Agent(qemu_dir / "mc", host=unique("q"), libvirt_uri="qemu:///system",
                  extra={"approvers_file": str(approvers), "domain_type": "qemu"}).start()
    try:
        cli.ok("host", "add", "q", "--address", "local", "--socket", str(agent.socket))
        vm = unique("n")
        cli.ok("vm", "create", vm, *NO_OS)
        cli.ok("vm", "stop", vm, "--force")   # a stopped VM: the detach needs no guest
        path = Path(str(attach(cli, vm, "--size", "8M")["path"]))
        held = as_(cli, people["alice"], "disk", "detach", vm, "vdb", "--keep-volume",
                   "-o", "json")
        assert held.returncode == 4, held.stderr  # type: ignore[attr-defined]
        request = json.loads(held.stdout)  # type: ignore[attr-defined]
        assert (request["operation"], request["resource"]) == ("disk.detach", f"{vm}/vdb")
        assert agent.disk_rows() == {(vm, "vdb"): ("attached", str(path))}
        refused = as_(cli, people["alice"], "request", "approve", str(request["id"]))
        assert refused.returncode == 1  # type: ignore[attr-defined]
        assert "alice made this request and cannot approve it" in refused.stderr  # type: ignore[attr-defined]
        done = as_(cli, people["bob"], "request", "approve", str(request["id"]), "-o", "json")
        assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
        result = json.loads(done.stdout)["result"]  # type: ignore[attr-defined]
        assert (result["detached"], result["volume"]) == (True, "kept")
        assert agent.disk_rows() == {} and path.exists()
        assert "vdb" not in blk(vm, inactive=True)
        # The domain goes with qemu_dir's clean-up: vm delete would need its own approval.
    finally:
        agent.kill()


def test_a_detach_waiting_for_its_guest_does_not_hold_up_the_host(
        gcli: Cli, guest_agent: Agent, guest: Path) -> None:
    """The agent lets go of the host lock while the guest takes its time: other changes
    on the host go on, and the same disk cannot be detached twice at once."""
    other = unique("n")
    vm, console, path, waiting = detach_waiting(gcli, guest_agent, guest)
    gcli.ok("vm", "create", other, *NO_OS)            # not queued behind the detach
    again = gcli.run("disk", "detach", vm, "vdb", "-o", "json")
    assert again.returncode == 1 and error(again)["code"] == "BUSY"
    assert "already waiting for the guest" in str(error(again)["message"])
    assert disk_list(gcli, vm)["vdb"]["state"] == "detaching"
    assert waiting.poll() is None and path.exists()
    virsh("resume", vm)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert json.loads(out)["volume"] == "deleted" and not path.exists()
    console.wait(lambda d: "vdb" not in d, timeout=10)
    assert guest_agent.disk_rows() == {}
    for name in (vm, other):
        gcli.ok("vm", "delete", name)


def test_a_vm_deleted_while_its_detach_waits(gcli: Cli, guest_agent: Agent,
                                             guest: Path) -> None:
    vm, _, path, waiting = detach_waiting(gcli, guest_agent, guest)
    gcli.ok("vm", "delete", vm)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert (json.loads(out)["volume"], json.loads(out)["reason"]) == (
        "deleted", "the VM was deleted meanwhile")
    assert not path.exists() and guest_agent.volumes() == set()
    assert guest_agent.disk_rows() == {} and guest_agent.ledger_rows() == {}


def test_kernel_boot_takes_files_from_the_image_dir_only(gcli: Cli, guest_agent: Agent,
                                                         guest: Path) -> None:
    vm = unique("k")
    cases = [
        (("--kernel", "/etc/passwd"), 2, "kernel /etc/passwd is not under the image dir"),
        (("--kernel", str(guest / "vmlinuz"), "--initrd", "/etc/shadow"), 2,
         "initrd /etc/shadow is not under the image dir"),
        (("--kernel", str(guest / "missing")), 2, "does not exist on this host"),
        (("--initrd", str(guest / "initrd.img")), 2, "--initrd and --cmdline go with --kernel"),
    ]
    for args, code, words in cases:
        done = gcli.run("vm", "create", vm, *NO_OS, *args)
        assert done.returncode == code, (args, done.stderr)
        assert words in done.stderr, (args, done.stderr)
    assert guest_agent.volumes() == set() and guest_agent.ledger_rows() == {}
    assert gcli.store_vms() == []
    assert subprocess.run(["virsh", "domstate", vm], capture_output=True,
                          check=False).returncode != 0


def test_path_is_resolved_once_and_names_of_vm_volumes_stay_theirs(
        gcli: Cli, guest_agent: Agent, qemu_dir: Path) -> None:
    """A symlink to a volume is attached as the volume itself (what was checked is what
    the guest gets); a VM cannot be named so that its volumes would be a kept volume."""
    vm = unique("n")
    gcli.ok("vm", "create", vm, *NO_OS)
    vol = guest_agent.storage / "kept-data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(vol), "8M"], check=True)
    link = qemu_dir / "link.qcow2"
    link.symlink_to(vol)
    disk = attach(gcli, vm, "--path", str(link))
    assert disk["path"] == str(vol)
    assert blk(vm)["vdb"] == str(vol) and blk(vm, inactive=True)["vdb"] == str(vol)
    assert guest_agent.disk_rows() == {(vm, "vdb"): ("attached", str(vol))}
    # A symlink out of the storage dir is refused whatever it is called.
    outside = qemu_dir / "outside.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(outside), "8M"], check=True)
    sneaky = guest_agent.storage / "sneaky.qcow2"
    sneaky.symlink_to(outside)
    done = gcli.run("disk", "attach", vm, "--path", str(sneaky), "-o", "json")
    assert done.returncode == 2 and error(done)["code"] == "VOLUME_OUTSIDE"
    sneaky.unlink()
    # `vm create kept-data` would make (and on delete remove) kept-data.qcow2: refused.
    done = gcli.run("vm", "create", "kept-data", *NO_OS, "-o", "json")
    assert done.returncode == 2 and error(done)["code"] == "VOLUME_EXISTS", done.stderr
    assert vol.exists() and gcli.store_vms() == [vm]
    gcli.ok("vm", "delete", vm)
    assert vol.exists()


def test_a_guest_suspended_to_disk_keeps_its_disk_pending(gcli: Cli,
                                                          guest_agent: Agent) -> None:
    """A managed-save image holds the guest with its disks: while it exists, a pending
    detach must not be taken as done (the guest would wake up with a deleted volume)."""
    vm = unique("n")
    gcli.ok("vm", "create", vm, *NO_OS)
    path = Path(str(attach(gcli, vm, "--size", "8M")["path"]))
    done = gcli.run("disk", "detach", vm, "vdb", "--timeout", "1", "-o", "json")
    assert done.returncode == 1 and error(done)["code"] == "DETACH_PENDING"
    virsh("managedsave", vm)
    listed = disk_list(gcli, vm)["vdb"]
    assert (listed["state"], listed["live"], listed["persistent"]) == (
        "detach-pending", True, False)
    done = gcli.run("disk", "detach", vm, "vdb", "--timeout", "1", "-o", "json")
    assert done.returncode == 1 and error(done)["code"] == "DETACH_PENDING"
    assert path.exists()
    virsh("managedsave-remove", vm)     # the saved guest is gone: nothing holds the disk
    assert "vdb" not in disk_list(gcli, vm) and not path.exists()
    assert guest_agent.disk_rows() == {}
    gcli.ok("vm", "delete", vm)
