"""The release store and version order on their own (no agent process)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ppec.agent.releases import Releases
from ppec.core.errors import BadInput
from ppec.wire import bundle


def _pkg(root: Path, files: dict[str, bytes]) -> dict[str, str]:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return bundle.manifest(root)


@pytest.mark.parametrize(("low", "high"), [
    ("0.9", "0.10"), ("0.1.0", "0.1.1"), ("0.0.9", "0.1.0"), ("1.0rc1", "1.0"),
    ("1.0", "1.0.1"), ("2", "10"), ("1.0a", "1.0b")])
def test_versions_compare_as_versions(low: str, high: str) -> None:
    assert bundle.version_key(low) < bundle.version_key(high)
    assert not bundle.version_key(high) < bundle.version_key(low)


def test_store_is_complete_or_absent_and_prune_keeps_current_and_previous(
        tmp_path: Path) -> None:
    r = Releases(tmp_path / "state")
    digests = []
    for i in range(4):
        files = {"__init__.py": f"v{i}".encode()}
        manifest = {n: bundle.sha256(d) for n, d in files.items()}
        digests.append(r.store(f"0.{i}", manifest, files))
        assert r.store(f"0.{i}", manifest, files) == digests[-1]   # idempotent
    assert set(r.accepted()) == set(digests)
    p = r.pointer()
    p.current, p.previous = digests[3], digests[1]
    r.save(p)
    assert set(r.prune()) == {digests[0], digests[2]}
    assert set(r.accepted()) == {digests[1], digests[3]}
    assert r.contents(digests[1]) == {"__init__.py": b"v1"}
    # A half-written release (a crash before the rename) is no release; start removes it.
    (r.dir / f".tmp-{'e' * 64}-1" / "ppec").mkdir(parents=True)
    r.cleanup()
    assert not list(r.dir.glob(".tmp-*"))
    # A release file edited under the state dir is refused, not installed.
    (r.files_dir(digests[1]) / "__init__.py").write_bytes(b"evil")
    with pytest.raises(Exception, match="does not match its manifest"):
        r.contents(digests[1])


def test_reconcile_adopts_once_settles_after_an_exchange_and_never_adopts_drift(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "site" / "ppec"
    one = _pkg(root, {"__init__.py": b"a", "x.py": b"1"})
    r = Releases(tmp_path / "state")
    p, drift = r.reconcile(root, "0.1")
    d1 = bundle.digest("0.1", one)
    assert (p.current, drift) == (d1, [])
    two = _pkg(root, {"x.py": b"2"})
    d2 = r.store("0.2", two, {n: (root / n).read_bytes() for n in two})
    # Killed after the exchange, before the pointer: the installed release wins.
    with caplog.at_level(logging.WARNING):
        p, drift = r.reconcile(root, "0.2")
    assert (p.current, p.previous, drift) == (d2, d1, [])
    assert "settled on it" in caplog.text
    # An edit by hand: reported, not adopted.
    (root / "y.py").write_bytes(b"new")
    (root / "x.py").write_bytes(b"3")
    p, drift = r.reconcile(root, "0.2")
    assert p.current == d2 and drift == ["x.py", "+y.py"]
    assert set(r.accepted()) == {d1, d2}
    # A corrupt pointer is logged and rebuilt from what is installed.
    (root / "y.py").unlink()
    (root / "x.py").write_bytes(b"2")
    r.pointer_path.write_text("{not json")
    p, drift = r.reconcile(root, "0.2")
    assert (p.current, drift) == (d2, [])
    assert json.loads(r.pointer_path.read_text())["current"] == d2


def test_bundle_limits() -> None:
    with pytest.raises(BadInput, match="larger than the limit"):
        bundle.unpack("A" * (bundle.MAX_BUNDLE_CHARS + 1))


def test_the_operator_refuses_to_pack_an_oversized_bundle(tmp_path: Path) -> None:
    import os
    (tmp_path / "big.py").write_bytes(os.urandom(700_000))   # ~933 000 base64 characters
    with pytest.raises(BadInput, match="larger than the limit") as e:
        bundle.pack(tmp_path, ["big.py"])
    assert e.value.code == "BUNDLE_TOO_LARGE"
