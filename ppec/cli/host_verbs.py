"""``ppec host add --install`` and ``host remove --uninstall``: the options they share and
the step-by-step output (operator/bootstrap/install.py does the work)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ppec.cli import output
from ppec.cli.common import Run
from ppec.cli.output import Fmt
from ppec.operator.store import Host

BootstrapIdentityOpt = Annotated[str, typer.Option(
    "--bootstrap-identity", help="With --install/--uninstall: a private key root accepts "
    "for a shell, used for this command only (never the operator key).")]
InstallRootOpt = Annotated[str, typer.Option(
    "--install-root", help="With --install/--uninstall: put every file under this "
    "directory instead of / (/opt/ppec, /etc/ppec, root's authorized_keys): tests, "
    "chroots.")]
AgentConfigOpt = Annotated[str, typer.Option(
    "--agent-config", help="With --install: the agent TOML to write, as given (parsed by "
    "the agent's own parser first). Default: one from the host name, --network and "
    "--reserved-cpus.")]
NetworkOpt = Annotated[list[str] | None, typer.Option(
    "--network", help="With --install: VRF=BRIDGE, the bridge this host's NICs in that "
    "VRF attach to. Repeatable.")]
ReservedCpusOpt = Annotated[str, typer.Option(
    "--reserved-cpus", help="With --install: CPUs never given to VMs, e.g. 0-1.")]
FingerprintOpt = Annotated[str, typer.Option(
    "--host-key-fingerprint", help="With --install: the host key's SHA256:... fingerprint "
    "read on the host (ssh-keygen -lf); it is then recorded.")]
ForceOsOpt = Annotated[bool, typer.Option(
    "--force-os", help="With --install: try an OS other than Debian 12.")]
InstallDryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="With --install: list the steps and the files it would write; "
    "connect to nothing.")]


def _say(fmt: Fmt) -> Any:
    def say(step: str, outcome: str) -> None:
        if fmt is not Fmt.json:   # JSON's stderr carries only an error document
            sys.stderr.write(f"{step}: {outcome}\n")
            sys.stderr.flush()
    return say


def options(bootstrap_identity: str, install_root: str, agent_config: str = "",
            network: list[str] | None = None, reserved_cpus: str = "",
            accept_new_host_key: bool = False, fingerprint: str = "",
            force_os: bool = False) -> Any:
    from ppec.operator.bootstrap.install import Options
    from ppec.operator.bootstrap.layout import parse_networks
    return Options(bootstrap_identity=bootstrap_identity, agent_config=agent_config,
                   networks=parse_networks(network or []), reserved_cpus=reserved_cpus,
                   accept_new_host_key=accept_new_host_key,
                   host_key_fingerprint=fingerprint, force_os=force_os, root=install_root)


def install(run: Run, host: Host, opts: Any, dry_run: bool, fmt: Fmt) -> None:
    from ppec.operator.bootstrap import install as bootstrap
    p = bootstrap.plan(host, opts)
    if dry_run:
        doc = bootstrap.dry_run(p)
        if fmt is Fmt.json:
            output.emit_json(doc)
            return
        output.emit_line(f"would install ppec {p.version} on {host.name} "
                         f"({host.address}:{host.port}), steps: {', '.join(doc['steps'])}")
        output.emit_table(doc["files"], [("path", "PATH"), ("what", "WHAT")])
        return
    doc = bootstrap.install(run.ctx, p, _say(fmt))
    what = "changed: " + ", ".join(doc["changed"]) if doc["changed"] else "nothing changed"
    output.emit_record(fmt, doc, message=f"host {host.name} installed ({what})")


def uninstall(run: Run, name: str, opts: Any, fmt: Fmt) -> None:
    from ppec.operator.bootstrap import install as bootstrap
    doc = bootstrap.uninstall(run.ctx, name, opts, _say(fmt))
    output.emit_record(fmt, doc, message=f"host {name} uninstalled and removed")
