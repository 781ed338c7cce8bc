"""The steps on the host, each checking first and changing only what differs: a second
run on a finished host changes nothing, and a run after an interrupted one finishes it."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from ppec.core.errors import BadInput
from ppec.operator.bootstrap import authkeys, wheels
from ppec.operator.bootstrap.layout import PACKAGES, SUPPORTED, Layout
from ppec.operator.bootstrap.remote import BootstrapFailed, RootShell, Same

# What the installed package says of itself, with the installed Python (-P: nothing from
# the working directory); the agent's imports are tried too, so a broken venv is redone.
_INSTALLED = ("import ppec, libvirt, psutil, filelock, tomli_w, paramiko; "
              "from ppec.wire import bundle as b; "
              "print(ppec.__version__, b.digest(ppec.__version__, b.manifest(b.package_root())))")


def os_release(shell: RootShell, layout: Layout, force: bool) -> str:
    """The OS the agent will run on (under an install root, that tree's own if it has one,
    as in a chroot)."""
    own = shlex.quote(layout.at("/etc/os-release"))
    text = shell.check(f"cat {own} 2>/dev/null || cat /etc/os-release",
                       "reading /etc/os-release")
    fields = dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln)
    os_id, version = fields.get("ID", "").strip('"'), fields.get("VERSION_ID", "").strip('"')
    name = fields.get("PRETTY_NAME", f"{os_id} {version}").strip('"')
    if (os_id, version) not in SUPPORTED and not force:
        raise BadInput(f"{name} is not a supported host OS (tested: Debian 12); "
                       f"--force-os to try anyway", code="UNSUPPORTED_OS")
    return Same(name)


def packages(shell: RootShell) -> str:
    listed = shell.run("dpkg-query -W -f='${Package} ${db:Status-Status}\\n' "
                       + " ".join(PACKAGES))
    have = {ln.split()[0] for ln in listed.out.splitlines() if ln.endswith(" installed")}
    missing = [p for p in PACKAGES if p not in have]
    if not missing:
        return Same("packages ok")
    shell.check("export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null && "
                f"apt-get install -y -q --no-install-recommends {' '.join(missing)} "
                f">/dev/null", f"apt-get install {' '.join(missing)}", timeout=1800)
    return f"packages installed: {', '.join(missing)}"


def installed(shell: RootShell, layout: Layout) -> tuple[str, str] | None:
    """(version, digest) of the ppec in the host's venv, None if absent or broken."""
    done = shell.run(f"{shlex.quote(layout.python)} -P -c {shlex.quote(_INSTALLED)}")
    parts = done.out.split()
    return (parts[0], parts[1]) if done.rc == 0 and len(parts) == 2 else None


def install_ppec(shell: RootShell, layout: Layout, version: str, digest: str,
                 built: Callable[[], tuple[list[wheels.Wheel], wheels.Wheel]],
                 say: Callable[[str], None]) -> str:
    """This ppec and its agent's dependencies into the venv, from wheels sent over the
    connection, each SHA-256 checked on the host before pip sees it. ``built()``: the
    wheels and pip's (built beside the earlier steps)."""
    if (have := installed(shell, layout)) and have[1] == digest:
        return Same(f"ppec {version} already installed")
    agent, pip = built()
    every = [*agent, pip]
    q, stage = shlex.quote, shlex.quote(layout.staging)
    say(f"sending {len(every)} wheels ({sum(len(w.data) for w in every) >> 20} MiB)")
    shell.check(f"rm -rf {stage} && mkdir -p -m 700 {stage} && tar -x -C {stage}",
                "sending the wheels", stdin=wheels.tar(every))
    sums = shell.check(f"cd {stage} && sha256sum -- *.whl", "checking the wheels")
    got = {ln.split()[1].lstrip("*"): ln.split()[0] for ln in sums.splitlines()}
    bad = [w.filename for w in every if got.get(w.filename) != w.sha256]
    if bad:
        raise BootstrapFailed(f"wheels arrived damaged (SHA-256 differs): {', '.join(bad)}")
    venv, py = q(layout.venv), q(layout.python)
    shell.check(f"{py} -c pass 2>/dev/null || "
                f"{{ rm -rf {venv} && python3 -m venv --without-pip {venv}; }}",
                "creating the virtualenv")
    names = " ".join(f"{stage}/{q(w.filename)}" for w in agent)
    shell.check(f"{py} {stage}/{q(pip.filename)}/pip install -q --no-index --no-deps "
                f"--force-reinstall --disable-pip-version-check {names} && rm -rf {stage}",
                "pip install", timeout=900)
    now = installed(shell, layout)
    if now is None or now[1] != digest:
        raise BootstrapFailed(f"after pip install the host's ppec is {now}, not {digest}")
    return f"ppec {version} installed"


def config(shell: RootShell, layout: Layout, data: bytes) -> str:
    if shell.read(layout.config) == data:
        return Same(f"config unchanged ({layout.config})")
    shell.write(layout.config, data, mode="644")
    return f"config written ({layout.config})"


def forced_command(shell: RootShell, layout: Layout, socket: str, public_key: str) -> str:
    line = authkeys.forced_line(layout.agent, socket, public_key)
    before = shell.read(layout.authorized_keys)
    text = (before or b"").decode()
    after = authkeys.with_line(text, line)
    if before is not None and after == text:
        return Same("forced command already set")
    shell.check(f"mkdir -p -m 700 \"$(dirname {shlex.quote(layout.authorized_keys)})\"",
                "making root's .ssh")
    shell.write(layout.authorized_keys, after.encode(), mode="600")
    return "forced command set"


def remove_forced_command(shell: RootShell, layout: Layout, public_key: str) -> str:
    before = shell.read(layout.authorized_keys)
    if before is None:
        return Same("no authorized_keys")
    after = authkeys.without(before.decode(), public_key.split()[1])
    if after == before.decode():
        return Same("no forced command to remove")
    shell.write(layout.authorized_keys, after.encode(), mode="600")
    return "forced command removed"
