"""The agent's accepted releases on the host, kept by digest under the state dir.

``<state_dir>/releases/<digest>/`` holds one accepted release: ``ppec/`` (the files) and
``release.json`` (version, manifest, digest, accepted_at). ``releases/pointer.json`` names
the current one, the previous one and the releases that failed their health check; it is
replaced whole (write, fsync, rename), so a crash leaves the old pointer or the new one.

A release is *accepted* once its files passed every check and sit complete in its dir
(written under a temporary name, renamed last): the installed package is always exactly
one accepted release, or it is drift. Stdlib only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppec.agent import files
from ppec.core.errors import NotFound
from ppec.wire.bundle import digest as digest_of
from ppec.wire.bundle import manifest, sha256

log = logging.getLogger(__name__)
KEEP = 2            # releases kept besides any failed ones' records: running + previous
MAX_FAILED = 10     # failed digests remembered in the pointer


@dataclass
class Pointer:
    current: str = ""
    previous: str = ""
    failed: list[dict[str, str]] = field(default_factory=list)   # digest, version, at, why


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` whole: a synced temp file renamed over it, the rename synced."""
    tmp = path.with_name(f".{path.name}.tmp")
    files.write_synced(tmp, data, flags=os.O_TRUNC, mode=0o600)
    os.replace(tmp, path)
    files.fsync_dir(path.parent)


class Releases:
    def __init__(self, state_dir: Path | str, pkg: str = "ppec") -> None:
        self.dir = Path(state_dir) / "releases"
        self.pkg = pkg

    @property
    def pointer_path(self) -> Path:
        return self.dir / "pointer.json"

    def pointer(self) -> Pointer:
        try:
            data = json.loads(self.pointer_path.read_text())
        except FileNotFoundError:
            return Pointer()
        except (OSError, ValueError) as e:
            log.error("release pointer %s unreadable (%s); starting afresh",
                      self.pointer_path, e)
            return Pointer()
        return Pointer(str(data.get("current", "")), str(data.get("previous", "")),
                       [dict(f) for f in data.get("failed", []) if isinstance(f, dict)])

    def save(self, p: Pointer) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_atomic(self.pointer_path, json.dumps(
            {"current": p.current, "previous": p.previous, "failed": p.failed[-MAX_FAILED:]},
            indent=1, sort_keys=True).encode())

    # -- releases ---------------------------------------------------------------------------

    def files_dir(self, digest: str) -> Path:
        return self.dir / digest / self.pkg

    def info(self, digest: str) -> dict[str, Any]:
        """release.json of an accepted release (NotFound: none by that digest)."""
        try:
            data: dict[str, Any] = json.loads((self.dir / digest / "release.json").read_text())
        except (OSError, ValueError):
            raise NotFound(f"no accepted release {digest[:12]} on this host",
                           code="NO_RELEASE") from None
        return data

    def has(self, digest: str) -> bool:
        return len(digest) == 64 and (self.dir / digest / "release.json").is_file()

    def contents(self, digest: str) -> dict[str, bytes]:
        """Every file of a release, each checked against its manifest."""
        info = self.info(digest)
        out = {}
        for name, sha in info["files"].items():
            data = (self.files_dir(digest) / name).read_bytes()
            if sha256(data) != sha:
                raise NotFound(f"release {digest[:12]}: {name} does not match its manifest",
                               code="NO_RELEASE")
            out[name] = data
        return out

    def store(self, version: str, files: dict[str, str], contents: dict[str, bytes]) -> str:
        """Keep a release (idempotent); returns its digest. Written under a temporary name
        and renamed last: a release dir that exists is complete."""
        digest = digest_of(version, files)
        if self.has(digest):
            return digest
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.dir / f".tmp-{digest}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for name, data in contents.items():
            path = tmp / self.pkg / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
                os.fsync(f.fileno())
        _write_atomic_new(tmp / "release.json", json.dumps(
            {"version": version, "digest": digest, "files": files,
             "accepted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            indent=1, sort_keys=True).encode())
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)
        shutil.rmtree(self.dir / digest, ignore_errors=True)   # a partial one: not accepted
        os.rename(tmp, self.dir / digest)
        return digest

    def accepted(self) -> dict[str, dict[str, str]]:
        """digest -> manifest of every accepted release kept here."""
        out = {}
        for d in self.dir.glob("*/release.json") if self.dir.is_dir() else []:
            try:
                out[d.parent.name] = dict(json.loads(d.read_text())["files"])
            except (OSError, ValueError, KeyError):
                continue
        return out

    def cleanup(self) -> None:
        """Temporary release dirs a crash left behind."""
        for stale in self.dir.glob(".tmp-*") if self.dir.is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)

    def prune(self, keep: int = KEEP) -> list[str]:
        """Remove releases other than the current and previous one (keep >= 2)."""
        p = self.pointer()
        wanted = {p.current, p.previous}
        kept = sorted(self.accepted(), key=lambda d: (self.dir / d).stat().st_mtime,
                      reverse=True)
        gone = []
        for d in kept:
            if d in wanted:
                continue
            if len(wanted) < keep:
                wanted.add(d)
                continue
            shutil.rmtree(self.dir / d, ignore_errors=True)
            gone.append(d)
        return gone

    # -- at start ---------------------------------------------------------------------------

    def reconcile(self, root: Path, version: str) -> tuple[Pointer, list[str]]:
        """Settle the pointer on what is installed (an update killed between the exchange
        and the pointer). Returns the pointer and, when the installed files are no accepted
        release, the names that differ from the current one (drift: not adopted)."""
        self.cleanup()
        installed = manifest(root)
        here = digest_of(version, installed)
        p = self.pointer()
        if not p.current and not self.accepted():
            # First start with releases: what is installed is what was accepted by hand.
            self.store(version, installed, {n: (root / n).read_bytes() for n in installed})
            p.current = here
            self.save(p)
            return p, []
        if self.has(here):
            if here != p.current:
                log.warning("release pointer said %s, %s is installed: settled on it",
                            p.current[:12], here[:12])
                p.previous, p.current = (p.current if p.current != here else p.previous), here
                self.save(p)
            return p, []
        return p, differ(self.accepted().get(p.current, {}), installed)


def differ(want: dict[str, str], have: dict[str, str]) -> list[str]:
    """Names changed or missing (as is), and extra (prefixed '+')."""
    changed = sorted(n for n, sha in want.items() if have.get(n) != sha)
    return [*changed, *(f"+{n}" for n in sorted(set(have) - set(want)))]


def _write_atomic_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, data)
