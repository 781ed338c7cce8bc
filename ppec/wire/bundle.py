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
# A bundle rides inside one protocol line (1 MiB): base64 characters, and what its tar
# holds once unpacked (a gzip bomb is small on the wire).
MAX_BUNDLE_CHARS = 900_000
MAX_PACKAGE_BYTES = 32 << 20


def too_large(what: str) -> BadInput:
    return BadInput(f"{what} is larger than the limit ({MAX_BUNDLE_CHARS} base64 characters, "
                    f"{MAX_PACKAGE_BYTES >> 20} MiB unpacked)", code="BUNDLE_TOO_LARGE")


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Order release versions: numeric parts as numbers ("0.10" > "0.9"); a part with
    letters after its number ("1rc1") sorts before the bare number."""
    out = []
    for part in version.replace("-", ".").split("."):
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        num = int(digits[:18]) if digits and part.startswith(digits) else -1
        rest = part[len(digits):] if num >= 0 else part
        out.append((num, rest or "~"))   # "~" sorts after letters: 1 > 1rc1
    return tuple(out)


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
    out = base64.b64encode(buf.getvalue()).decode()
    if len(out) > MAX_BUNDLE_CHARS:
        raise too_large(f"the bundle of {len(names)} changed file(s)")
    return out


def check_name(name: str) -> str:
    """A package-relative file name: no absolute paths, no '..', one of our suffixes."""
    p = PurePosixPath(name)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts) \
            or p.suffix not in SUFFIXES or "__pycache__" in p.parts or "\\" in name:
        raise BadInput(f"file name {name!r} is not a package file", code="BAD_UPDATE")
    return name


def unpack(bundle: str) -> dict[str, bytes]:
    """Read the bundle's regular files by name; never extract (no links, no paths out)."""
    if len(bundle) > MAX_BUNDLE_CHARS:
        raise too_large("the update bundle")
    try:
        raw = base64.b64decode(bundle, validate=True)
        out = {}
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            members = tar.getmembers()
            if sum(m.size for m in members) > MAX_PACKAGE_BYTES:
                raise too_large("the update bundle")
            for member in members:
                if not member.isfile():
                    raise BadInput(f"bundle entry {member.name!r} is not a regular file",
                                   code="BAD_UPDATE")
                stream = tar.extractfile(member)
                assert stream is not None
                out[check_name(member.name)] = stream.read()
    except (ValueError, tarfile.TarError, OSError) as e:
        raise BadInput(f"update bundle unreadable: {e}", code="BAD_UPDATE") from None
    return out
