"""The agent's files on the wire: a manifest by SHA-256, a digest naming a release, and
the bundle (base64 of a tar.gz) that carries changed files. Stdlib only: both the operator
(``ppec agent sync``) and the agent use it; the agent's swap lives in ``ppec.agent.files``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path, PurePosixPath

from ppec.core.errors import BadInput

SUFFIXES = (".py", ".toml", ".typed")   # what makes up the package; nothing else is synced


def package_root() -> Path:
    import ppec
    return Path(ppec.__file__).resolve().parent


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every package file under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or not path.is_file() or path.suffix not in SUFFIXES:
            continue
        out[rel.as_posix()] = sha256(path.read_bytes())
    return out


def digest(version: str, files: dict[str, str]) -> str:
    """One checksum for a version and its manifest (what an approval can name)."""
    return sha256(json.dumps({"version": version, "files": files}, sort_keys=True,
                              separators=(",", ":")).encode())


def pack(root: Path, names: list[str]) -> str:
    """The named files as base64 of a tar.gz (regular files only, relative names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(names):
            data = (root / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def check_name(name: str) -> str:
    """A package-relative file name: no absolute paths, no '..', one of our suffixes."""
    p = PurePosixPath(name)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts) \
            or p.suffix not in SUFFIXES or "__pycache__" in p.parts or "\\" in name:
        raise BadInput(f"file name {name!r} is not a package file", code="BAD_UPDATE")
    return name


def unpack(bundle: str) -> dict[str, bytes]:
    """Read the bundle's regular files by name; never extract (no links, no paths out)."""
    try:
        raw = base64.b64decode(bundle, validate=True)
        out = {}
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    raise BadInput(f"bundle entry {member.name!r} is not a regular file",
                                   code="BAD_UPDATE")
                stream = tar.extractfile(member)
                assert stream is not None
                out[check_name(member.name)] = stream.read()
    except (ValueError, tarfile.TarError, OSError) as e:
        raise BadInput(f"update bundle unreadable: {e}", code="BAD_UPDATE") from None
    return out
