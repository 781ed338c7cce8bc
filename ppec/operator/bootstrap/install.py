"""``ppec host add --install``: from a root login with a bootstrap key to an agent that
serves through its forced command, then the inventory; and ``host remove --uninstall``.

Every step checks before it changes (steps.py): a rerun finishes an interrupted install
and leaves a finished one as it is. A failure names its step and the steps done before
it; nothing past the failing step is written. Local checks (the agent config parses, the
two keys differ) run before the connection, so bad input writes nothing at all."""

from __future__ import annotations

import concurrent.futures
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppec.core.errors import AlreadyExists, BadInput, NotFound, PpecError
from ppec.operator.agentsync import Desired
from ppec.operator.bootstrap import service, steps, wheels
from ppec.operator.bootstrap.layout import Layout, agent_config, config_bytes
from ppec.operator.bootstrap.remote import RootShell, Same
from ppec.operator.context import Context
from ppec.operator.store import Host

Say = Callable[[str, str], None]   # (step, outcome)


@dataclass(frozen=True)
class Options:
    bootstrap_identity: str
    agent_config: str = ""                 # a file written as given (validated first)
    networks: dict[str, str] = field(default_factory=dict)
    reserved_cpus: str = ""
    accept_new_host_key: bool = False
    host_key_fingerprint: str = ""
    force_os: bool = False
    root: str = ""                          # install under this directory (tests, chroots)


@dataclass(frozen=True)
class Plan:
    host: Host
    options: Options
    layout: Layout
    config: bytes
    socket: str
    operator_key: str      # "type base64"
    version: str
    digest: str

    def files(self) -> list[dict[str, str]]:
        lay = self.layout
        return [{"path": lay.venv, "what": f"virtualenv with ppec {self.version}"},
                {"path": lay.config, "what": "agent config"},
                {"path": f"{lay.unit} (systemd) or {lay.pidfile}", "what": "the service"},
                {"path": lay.authorized_keys, "what": "one forced-command line for "
                                                      "the operator key"}]


STEPS = ("connect", "os", "packages", "ppec", "config", "agent", "forced command",
         "agent answers", "inventory")


def public_key(path: str, what: str) -> str:
    import paramiko
    try:
        key = paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException) as e:
        raise BadInput(f"cannot read the {what} {path}: {e}") from None
    return f"{key.get_name()} {key.get_base64()}"


def _config(host: Host, opts: Options, layout: Layout) -> tuple[bytes, str]:
    """The agent config's bytes and its socket, as the agent's own parser reads them (in
    its own process: operator code never imports the agent's)."""
    if opts.agent_config:
        try:
            data = Path(opts.agent_config).read_bytes()
        except OSError as e:
            raise BadInput(f"step 'config' (checked before connecting): agent config "
                           f"{opts.agent_config}: {e.strerror}", code="AGENT_CONFIG") from None
    else:
        data = config_bytes(agent_config(layout, host.name, opts.networks,
                                         opts.reserved_cpus, supervised=False))
    with tempfile.NamedTemporaryFile(suffix=".toml") as f:
        f.write(data)
        f.flush()
        done = subprocess.run([sys.executable, "-P", "-m", "ppec.agent.main", "check-config",
                               f.name], capture_output=True, text=True, check=False,
                              timeout=60)
    if done.returncode != 0:
        reason = done.stderr.strip().replace(f.name, "").strip(": ") or \
            f"exit {done.returncode}"
        raise BadInput(f"step 'config' (checked before connecting): agent config "
                       f"{opts.agent_config or '(generated)'} does not parse: {reason}",
                       code="AGENT_CONFIG")
    return data, str(json.loads(done.stdout)["socket"])


def _operator_key(host: Host, opts: Options) -> str:
    """The operator key's public line, after the checks both install and uninstall need:
    an SSH host, the two keys given, and not the same key."""
    if host.is_local:
        raise BadInput("--install needs an SSH host (--address), not `local`")
    if not host.identity:
        raise BadInput(f"host {host.name} needs an --identity: the operator key whose "
                       f"public half is in the forced-command line")
    if not opts.bootstrap_identity:
        raise BadInput("--bootstrap-identity is needed: a key root accepts for a shell, "
                       "used for this command only")
    operator = public_key(host.identity, "operator key")
    if public_key(opts.bootstrap_identity, "bootstrap key").split()[1] == operator.split()[1]:
        raise BadInput("the bootstrap key is the operator key: the operator key must only "
                       "ever run the forced command, so bootstrap with another key")
    return operator


def plan(host: Host, opts: Options) -> Plan:
    operator = _operator_key(host, opts)
    layout = Layout(opts.root)
    data, socket = _config(host, opts, layout)
    release = Desired.here()   # the files agent sync compares: the host's digest after
    return Plan(host, opts, layout, data, socket, operator, release.version, release.digest)


def dry_run(p: Plan) -> dict[str, Any]:
    return {"host": p.host.name, "dry_run": True, "steps": list(STEPS), "files": p.files(),
            "agent_config": p.config.decode(), "release": p.digest, "version": p.version}


class _Run:
    """Runs the steps in order; a failure says which step and what was done before."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.done: list[dict[str, str]] = []

    def step(self, name: str, fn: Callable[[], str]) -> str:
        try:
            outcome = fn()
        except PpecError as e:
            before = ", ".join(d["step"] for d in self.done) or "nothing"
            e.message = f"step {name!r} failed: {e.message} (done before it: {before})"
            e.args = (e.message,)
            e.details = {**(e.details or {}), "step": name, "done": self.done}
            raise
        self.done.append({"step": name, "outcome": outcome})
        self.say(name, outcome)
        return outcome


def _connect(ctx: Context, host: Host, opts: Options) -> RootShell:
    return RootShell(address=host.address, port=host.port,
                     identity=opts.bootstrap_identity, known_hosts=ctx.reach.known_hosts,
                     accept_new_host_key=opts.accept_new_host_key,
                     pin=opts.host_key_fingerprint, timeout=ctx.reach.connect_timeout)


def _inventory(ctx: Context, host: Host) -> str:
    try:
        have = ctx.store.host(host.name)
    except NotFound:
        ctx.store.add_host(host)
        return "added to the inventory"
    if (have.address, have.port) != (host.address, host.port):
        raise AlreadyExists(f"host {host.name} is already in the inventory at "
                            f"{have.address}:{have.port}")
    return Same("already in the inventory")


def install(ctx: Context, p: Plan, say: Say) -> dict[str, Any]:
    run, lay = _Run(say), p.layout
    # The wheels are built while the host answers the first steps (most of it is zlib,
    # which leaves the GIL); a finished host never asks for them.
    built = concurrent.futures.ThreadPoolExecutor(1).submit(_wheels, p.digest)
    shell = _connect_step(run, ctx, p.host, p.options)
    try:
        run.step("os", lambda: steps.os_release(shell, lay, p.options.force_os))
        run.step("packages", lambda: steps.packages(shell))
        run.step("ppec", lambda: steps.install_ppec(shell, lay, p.version, p.digest,
                                                    built.result, lambda m: say("ppec", m)))
        config = _final_config(shell, p)
        run.step("config", lambda: steps.config(shell, lay, config))
        run.step("agent", lambda: _agent(service.ensure_running(
            shell, lay, p.socket, config, p.digest)))
        run.step("forced command", lambda: steps.forced_command(shell, lay, p.socket,
                                                                 p.operator_key))
    finally:
        shell.close()
    run.step("agent answers", lambda: _answers(ctx, p))
    run.step("inventory", lambda: _inventory(ctx, p.host))
    changed = [d["step"] for d in run.done if not isinstance(d["outcome"], Same)]
    return {**p.host.as_dict(), "installed": True, "version": p.version,
            "release": p.digest, "steps": run.done, "changed": changed}


def _wheels(digest: str) -> tuple[list[wheels.Wheel], wheels.Wheel]:
    agent, built_digest = wheels.agent_wheels()
    if built_digest != digest:
        raise BadInput("this ppec's files changed while bootstrap ran; run it again")
    return agent, wheels.pip_wheel()


def _final_config(shell: RootShell, p: Plan) -> bytes:
    """A given config as given; a generated one says whether systemd restarts the agent
    (``supervised``: then an update's watchdog leaves the restart to it)."""
    if p.options.agent_config:
        return p.config
    h, o = p.host, p.options
    return config_bytes(agent_config(p.layout, h.name, o.networks, o.reserved_cpus,
                                     supervised=service.has_systemd(shell)))


def _connect_step(run: _Run, ctx: Context, host: Host, opts: Options) -> RootShell:
    box: list[RootShell] = []

    def go() -> str:
        box.append(_connect(ctx, host, opts))
        return Same(f"connected as root (host key {box[0].host_key})")
    run.step("connect", go)
    return box[0]


def _agent(outcome: str) -> str:
    """ "agent started", "agent running": the service's word, still Same when it is."""
    return type(outcome)(f"agent {outcome}")


def _answers(ctx: Context, p: Plan) -> str:
    """Through sshd as the operator key: the forced command, and nothing else, reaches
    the agent."""
    from ppec.operator.fleet.client import AgentClient
    client = AgentClient(p.host, ctx.reach)
    try:
        info = client.call("ping")
    finally:
        client.close()
    if info.get("digest") != p.digest:
        raise BadInput(f"the agent behind the forced command runs release "
                       f"{info.get('digest')}, not {p.digest}")
    return Same(f"agent answers (ppec {info.get('version')}, host {info.get('host')})")


def uninstall(ctx: Context, name: str, opts: Options, say: Say) -> dict[str, Any]:
    """Stop and remove the agent and its forced-command line, then the inventory entry;
    refused while the store or the agent knows of a VM there. The state dir (ledger,
    disks, images) stays: an operator removes data, not ppec."""
    host = ctx.store.host(name)
    if ctx.store.vms(name):
        raise BadInput(f"host {name} still has VMs in the store: move or delete them first")
    live = _live_vms(ctx, host)
    if live:
        raise BadInput(f"host {name}'s agent still runs VMs: {', '.join(live[:10])}")
    operator = _operator_key(host, opts)   # no config, no release: nothing is installed
    run, lay = _Run(say), Layout(opts.root)
    shell = _connect_step(run, ctx, host, opts)

    def stop() -> str:
        service.stop(shell, lay)
        return "agent stopped"

    def remove() -> str:
        shell.check(f"rm -rf {shlex.quote(lay.venv)} {shlex.quote(lay.config)} "
                    f"{shlex.quote(lay.stamp)}", "removing ppec")
        return "ppec removed"
    try:
        run.step("agent", stop)
        run.step("forced command", lambda: steps.remove_forced_command(shell, lay,
                                                                        operator))
        run.step("ppec", remove)
    finally:
        shell.close()

    def forget() -> str:
        ctx.store.remove_host(name)
        return "removed from the inventory"
    run.step("inventory", forget)
    return {"name": name, "removed": True, "uninstalled": True, "steps": run.done}


def _live_vms(ctx: Context, host: Host) -> list[str]:
    """The agent's own VMs; an agent that does not answer cannot prove it runs none."""
    try:
        vms = ctx.client(host).call("vm.list")
    except PpecError as e:
        raise BadInput(f"host {host.name}'s agent does not answer ({e}): cannot tell "
                       f"whether it runs VMs, so nothing was uninstalled") from None
    return [str(v.get("name")) for v in vms.get("vms", []) if isinstance(v, dict)]
