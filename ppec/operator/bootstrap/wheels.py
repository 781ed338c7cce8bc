"""The agent's installation as wheels built from this one: ppec itself and the installed
distributions the agent imports, so a host installs exactly the code this CLI speaks,
without reaching a package index.

A wheel is a zip of the files a distribution installed (its RECORD) and its metadata; the
operator's install is often editable (no files in RECORD), so ppec's wheel is built from
the package directory with the same file list ``ppec agent sync`` keeps (``bundle.manifest``):
the host's release digest is then the one the syncer compares.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import re
import tarfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import ppec
from ppec.core.errors import BadInput
from ppec.wire import bundle

# What the agent imports besides the standard library (ppec/agent, core, wire, numa):
# libvirt, psutil, filelock, tomli_w, and paramiko for approvals' signatures.
AGENT_REQUIRES = ("libvirt-python", "psutil", "filelock", "tomli-w", "paramiko")
_EPOCH = (1980, 1, 1, 0, 0, 0)   # fixed times: the same files make the same bytes


@dataclass(frozen=True)
class Wheel:
    filename: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _record_hash(data: bytes) -> str:
    raw = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={raw},{len(data)}"


def _zip(files: dict[str, bytes], dist_info: str) -> bytes:
    record = [f"{name},{_record_hash(data)}" for name, data in sorted(files.items())]
    record.append(f"{dist_info}/RECORD,,")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, data in [*sorted(files.items()),
                           (f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode())]:
            info = zipfile.ZipInfo(name, _EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name)


def ppec_wheel() -> tuple[Wheel, str]:
    """ppec's wheel (agent entry point only: the host has no CLI dependencies) and the
    release digest the installed files will have."""
    root = bundle.package_root()
    found = bundle.manifest(root)
    version = ppec.__version__
    info = f"ppec-{version}.dist-info"
    files = {f"ppec/{name}": (root / name).read_bytes() for name in found}
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: ppec\nVersion: {version}\n"
                                 f"Summary: ppec host agent\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: ppec bootstrap\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{info}/entry_points.txt"] = (b"[console_scripts]\n"
                                         b"ppec-agent = ppec.agent.main:main\n")
    return (Wheel(f"ppec-{version}-py3-none-any.whl", _zip(files, info)),
            bundle.digest(version, found))


def _requirement_class() -> Any:
    for module in ("packaging.requirements", "pip._vendor.packaging.requirements"):
        try:
            return importlib.import_module(module).Requirement
        except ImportError:
            continue
    raise BadInput("cannot read requirements: neither packaging nor pip is installed")


def _requirements(dist: metadata.Distribution) -> list[str]:
    """The names ``dist`` needs here: markers evaluated for this interpreter, extras off."""
    Requirement = _requirement_class()
    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req.name)
    return out


def _closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if _norm(name).lower() in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BadInput(f"cannot build the agent's installation: {name} is not installed "
                           f"beside this ppec") from None
        seen[_norm(name).lower()] = dist
        todo.extend(_requirements(dist))
    return [seen[k] for k in sorted(seen)]


def _tags(dist: metadata.Distribution) -> str:
    tags = [ln.split(":", 1)[1].strip() for ln in (dist.read_text("WHEEL") or "").splitlines()
            if ln.startswith("Tag:")]
    if not tags:
        raise BadInput(f"{dist.metadata['Name']} was not installed from a wheel: cannot "
                       f"rebuild it for the host")
    parts = [t.split("-") for t in tags]
    return "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


_SKIP = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


def dist_wheel(dist: metadata.Distribution) -> Wheel:
    """A wheel of the files ``dist`` installed (scripts outside site-packages left out)."""
    name, version = _norm(dist.metadata["Name"]), dist.version
    files: dict[str, bytes] = {}
    for path in dist.files or []:
        text = str(path)
        if text.startswith("..") or "__pycache__" in text or text.endswith(".pyc") or \
                (".dist-info/" in text and text.rsplit("/", 1)[-1] in _SKIP):
            continue
        files[text] = Path(str(path.locate())).read_bytes()
    info = next((f.split("/")[0] for f in files if ".dist-info/" in f), "")
    if not info:
        raise BadInput(f"{name}: no .dist-info among its installed files")
    return Wheel(f"{name}-{version}-{_tags(dist)}.whl", _zip(files, info))


def agent_wheels() -> tuple[list[Wheel], str]:
    """Every wheel the host installs, ppec last, and ppec's release digest."""
    own, digest = ppec_wheel()
    return [*(dist_wheel(d) for d in _closure(AGENT_REQUIRES)), own], digest


def pip_wheel() -> Wheel:
    """pip itself, which runs from its wheel on the host (``python pip.whl/pip``): the venv
    is made without ensurepip, whose install of pip is most of a fresh venv's time."""
    return dist_wheel(metadata.distribution("pip"))


def tar(built: list[Wheel]) -> bytes:
    """The wheels as one uncompressed tar: one stream to the host, not one per file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for w in built:
            info = tarfile.TarInfo(w.filename)
            info.size, info.mode = len(w.data), 0o644
            t.addfile(info, io.BytesIO(w.data))
    return buf.getvalue()
