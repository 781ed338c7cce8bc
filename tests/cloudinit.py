"""Check what ppec puts in a NoCloud seed with the real consumer: Debian 12's cloud-init 22.4.

DESIGN.md: validate what ppec writes with that package, not by eye. These helpers run
``/usr/bin/cloud-init`` (and, for user-data, cloud-init's own Python package with the
system interpreter, since it is not installed in the project's virtualenv).

What cloud-init 22.4.2 (Debian 12) was seen to do with network-config v2 (``net-convert
--kind yaml``), which decides what ppec may write:

- Routes ``{"to": "0.0.0.0/0", "via": GW}`` are accepted by every renderer (networkd:
  ``[Route] Destination=0.0.0.0/0 Gateway=GW``; eni: ``post-up route add default gw GW``).
- ``{"to": "default", ...}`` is rejected by the eni, networkd (and sysconfig) renderers:
  ``ValueError: Address default is not a valid ip address`` (exit 1). Only the netplan
  renderer passes it through untouched. Debian's renderer order puts eni first, so ppec
  must write ``0.0.0.0/0`` (and ``::/0`` for IPv6), never ``default``.
- ``match: {macaddress: M}`` without ``set-name`` is accepted. cloud-init names the
  interface after the NIC that has MAC M on the machine it runs on (LP #1855945); where no
  such NIC exists (e.g. on the test host) it falls back to the entry's id: networkd then
  writes ``[Match] MACAddress=M`` plus ``Name=<id>``, eni writes ``iface <id>`` and a udev
  rule renaming the MAC to ``<id>``. With the NICs present (``net_convert(..., nics=...)``
  renders inside a network namespace holding them), the real names appear instead
  (``Name=eth0``, ``iface eth0``): what the guest itself writes at boot.
- ``cloud-init schema`` accepts unknown top-level keys silently (exit 0, "Valid
  cloud-config", no warning), so ``schema_check`` also compares the top-level keys with the
  ones 22.4's schema defines. It refuses a user-data without the ``#cloud-config`` first
  line, and an empty one ("#cloud-config" alone: "Cloud-config is not a YAML dict").
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

CLOUD_INIT = "/usr/bin/cloud-init"
SYSTEM_PYTHON = "/usr/bin/python3"     # the interpreter Debian's cloud-init package uses

# Keys cloud-init reads from cloud-config that its 22.4 schema does not list.
_UNSCHEMAED_KEYS = frozenset({"merge_how", "merge_type"})

# A non-MIME user-data's type, from how it starts (cloud-init's own table, the common rows).
_STARTS = (("#cloud-config-archive", "text/cloud-config-archive"),
           ("#cloud-config", "text/cloud-config"),
           ("#cloud-boothook", "text/cloud-boothook"),
           ("#include-once", "text/x-include-once-url"),
           ("#include", "text/x-include-url"),
           ("#part-handler", "text/part-handler"),
           ("## template: jinja", "text/jinja2"),
           ("#!", "text/x-shellscript"))


@cache
def cloudinit_reason() -> str | None:
    """Why cloud-init cannot be used here, or None when it can."""
    if not Path(CLOUD_INIT).exists():
        return "cloud-init is not installed (apt-get install cloud-init: Debian 12 ships 22.4)"
    done = subprocess.run([CLOUD_INIT, "--version"], capture_output=True, text=True,
                          check=False, timeout=60)
    if done.returncode != 0:
        return f"cloud-init does not run: {(done.stderr or done.stdout).strip()}"
    return None


def _run(args: list[str], what: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"cloud-init {what} refused it (exit {done.returncode}):\n"
                             f"{done.stderr.strip()}\n{done.stdout.strip()}".rstrip())
    return done


def net_convert(network_config: str, tmp: Path, output_kind: str = "networkd",
                nics: dict[str, str] | None = None) -> str:
    """Render a network-config (v1/v2 YAML or JSON) as cloud-init 22.4 does on Debian;
    return the rendered files' text, each after a ``# FILE <path>`` line, sorted by path.
    AssertionError with cloud-init's error when it refuses the document.

    ``nics`` ({"eth0": "02:..."}) renders as the guest would, where NICs with those MACs
    exist: inside a new network namespace holding veth devices of those names and MACs
    (needs root). Without it, cloud-init names a MAC-matched entry after its id."""
    tmp.mkdir(parents=True, exist_ok=True)
    source = tmp / "network-config"
    source.write_text(network_config)
    out = tmp / f"net-convert-{output_kind}"
    if out.exists():
        shutil.rmtree(out)
    convert = [CLOUD_INIT, "devel", "net-convert", "--network-data", str(source),
               "--kind", "yaml", "--distro", "debian", "--output-kind", output_kind,
               "--directory", str(out)]
    if nics:
        # A private /sys shows the namespace's devices, which is where cloud-init looks.
        # Names and MACs travel as arguments ("${1}", "${2}" ...), never inside the script.
        script = ["mount -t sysfs sysfs /sys"]
        for i in range(len(nics)):
            script.append(f'ip link add "${{{2 * i + 1}}}" address "${{{2 * i + 2}}}" '
                          f"type veth peer name peer{i}")
        script.append(f'shift {2 * len(nics)}; exec "$@"')
        words = [w for name, mac in nics.items() for w in (name, mac)]
        convert = ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-ec",
                   "\n".join(script), "sh", *words, *convert]
    _run(convert, "net-convert")
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return "".join(f"# FILE {p.relative_to(out)}\n{p.read_text()}" for p in files)


@cache
def _schema_keys() -> frozenset[str]:
    """The top-level cloud-config keys cloud-init's installed schema defines."""
    code = ("import json\nfrom cloudinit.config.schema import get_schema\n"
            "s = get_schema()\nkeys = set(s.get('properties', {}))\n"
            "for part in s.get('allOf', []):\n"
            "    ref = part.get('$ref', '')\n"
            "    d = s['$defs'][ref.rsplit('/', 1)[-1]] if ref.startswith('#/$defs/') "
            "else part\n"
            "    keys |= set(d.get('properties', {}))\n"
            "print(json.dumps(sorted(keys)))\n")
    done = _run([SYSTEM_PYTHON, "-c", code], "schema (reading its key list)")
    return frozenset(json.loads(done.stdout)) | _UNSCHEMAED_KEYS


def schema_check(cloud_config: str, tmp: Path, allow_unknown: bool = False) -> None:
    """``cloud-init schema --config-file``; AssertionError with its output when the document
    is invalid. 22.4 accepts unknown top-level keys without a word: unless
    ``allow_unknown``, a key its schema does not define fails here too (a typo such as
    ``ssh_authorised_keys`` would otherwise pass and do nothing in the guest)."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "cloud-config.yaml"
    path.write_text(cloud_config)
    done = subprocess.run([CLOUD_INIT, "schema", "--config-file", str(path)],
                          capture_output=True, text=True, check=False, timeout=120)
    said = f"{done.stdout}\n{done.stderr}".strip()
    if done.returncode != 0 or "Invalid cloud-config" in said or "schema errors" in said:
        raise AssertionError(f"cloud-init schema (exit {done.returncode}): {said}")
    if not allow_unknown:
        code = ("import json, sys, yaml\n"
                "d = yaml.safe_load(open(sys.argv[1]))\n"
                "print(json.dumps(sorted(d) if isinstance(d, dict) else []))\n")
        keys = json.loads(_run([SYSTEM_PYTHON, "-c", code, str(path)], "schema").stdout)
        unknown = sorted(set(keys) - _schema_keys())
        if unknown:
            raise AssertionError(f"cloud-config keys cloud-init 22.4's schema does not "
                                 f"define (it would ignore them): {', '.join(unknown)}")


def user_data_parts(user_data: str) -> list[tuple[str, str]]:
    """(content type, payload) of each part of a user-data. A MIME document (it starts with
    headers) is split with the stdlib email package, transfer encodings undone; anything
    else is one part typed by how it starts, as cloud-init types it ("#cloud-config" ->
    text/cloud-config, "#!" -> text/x-shellscript; anything else -> text/x-not-multipart)."""
    head = user_data.lstrip().split("\n", 1)[0].lower()
    if head.startswith(("content-type:", "mime-version:")):
        message = email.message_from_string(user_data, policy=email.policy.compat32)
        parts = []
        for part in message.walk():
            if part.is_multipart():
                continue
            raw = part.get_payload(decode=True)
            payload = raw.decode(part.get_content_charset() or "utf-8") \
                if isinstance(raw, bytes) else str(part.get_payload())
            parts.append((part.get_content_type(), payload))
        return parts
    for start, kind in _STARTS:
        if user_data.startswith(start):
            return [(kind, user_data)]
    return [("text/x-not-multipart", user_data)]


def cloudinit_user_data_parts(user_data: str, tmp: Path) -> list[tuple[str, str]]:
    """The same as cloud-init 22.4 itself sees it: its UserDataProcessor (what the guest
    runs at boot) turns the user-data into parts; (content type, payload) of each.
    Compare with ``user_data_parts`` to check a MIME document ppec builds."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "user-data"
    path.write_text(user_data)
    code = ("import json, sys\nfrom cloudinit import helpers, user_data\n"
            "p = user_data.UserDataProcessor(helpers.Paths({}))\n"
            "m = p.process(open(sys.argv[1]).read())\nout = []\n"
            "for part in m.walk():\n"
            "    if part.is_multipart():\n        continue\n"
            "    raw = part.get_payload(decode=True) or b''\n"
            "    out.append([part.get_content_type(), raw.decode()])\n"
            "print(json.dumps(out))\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([SYSTEM_PYTHON, "-c", code, str(path)], capture_output=True,
                          text=True, check=False, timeout=120, env=env)
    if done.returncode != 0:
        raise AssertionError(f"cloud-init's user-data processor failed: {done.stderr.strip()}")
    return [(kind, payload) for kind, payload in json.loads(done.stdout)]


_MERGE = """
import json, os, sys, tempfile
from cloudinit import helpers, util
from cloudinit.handlers.cloud_config import CloudConfigPartHandler
parts = json.load(sys.stdin)
tmp = tempfile.mkdtemp()
handler = CloudConfigPartHandler(helpers.Paths({"cloud_dir": tmp}))
handler.cloud_fn = os.path.join(tmp, "cloud-config.txt")
handler.handle_part(None, "__begin__", None, None, None, None)
for i, (ctype, payload) in enumerate(parts):
    handler.handle_part(None, ctype, f"part-{i}", payload, "once-per-instance",
                        {"Content-Type": ctype})
handler.handle_part(None, "__end__", None, None, None, None)
print(json.dumps(util.load_yaml(open(handler.cloud_fn).read())))
"""


def merged_cloud_config(user_data: str, tmp: Path) -> dict[str, object]:
    """The cloud-config the guest ends up with: cloud-init 22.4's own part handler merges
    the cloud-config parts of ``user_data`` in order, each by its ``merge_how``."""
    parts = [p for p in cloudinit_user_data_parts(user_data, tmp)
             if p[0] == "text/cloud-config"]
    done = subprocess.run([SYSTEM_PYTHON, "-c", _MERGE], input=json.dumps(parts),
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"cloud-init's merge failed: {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout))
