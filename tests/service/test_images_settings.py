"""`[images] everywhere` and the images job's `[serve]` keys: read through the operator
config's merged table, checked at start; a bad value stops `ppec serve` with exit 2 and
one line naming the key."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from ppec.core.errors import BadInput
from ppec.operator import config
from ppec.service.settings import from_config
from tests.realparts import PPEC, Cli


def test_defaults_and_a_full_images_table(tmp_path: Path) -> None:
    s = from_config(config.load(Path("/nonexistent")).raw, db="x.db")
    assert (s.images_everywhere, s.images_interval, s.image_pushes) == ((), 300, 4)
    path = tmp_path / "config.toml"
    path.write_text('[serve]\nimages_interval = 60\nimage_pushes = 8\n'
                    '[images]\neverywhere = ["debian12", "alpine-3.20", "ubuntu_24.04"]\n'
                    'push_on_create = false\n')   # the CLI's key in the same table
    cfg = config.load(path)
    s = from_config(cfg.raw, db="x.db", source=cfg.source)
    assert s.images_everywhere == ("debian12", "alpine-3.20", "ubuntu_24.04")
    assert (s.images_interval, s.image_pushes) == (60, 8)


@pytest.mark.parametrize(("raw", "message"), [
    ({"images": {"everywhere": "debian12"}}, "[images] everywhere must be a list of image"),
    ({"images": {"everywhere": ["debian12", 3]}}, "[images] everywhere must be a list"),
    ({"images": {"everywhere": ["Debian 12"]}}, "[images] everywhere: invalid image name"),
    ({"images": {"everywhere": ["deb", "deb"]}}, "names an image twice"),
    ({"images": {"everwhere": ["deb"]}}, "[images]: unknown key everwhere (everywhere?)"),
    ({"images": {"every_where": ["deb"]}}, "[images]: unknown key every_where"),
    ({"images": ["deb"]}, "[images] must be a table"),
    ({"serve": {"images_interval": 0}}, "[serve] images_interval = 0 is out of range"),
    ({"serve": {"image_pushes": 0}}, "[serve] image_pushes must be an integer from 1"),
])
def test_bad_values_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput) as e:
        from_config(raw, db="x.db", source="/etc/ppec.toml")
    assert e.value.message.startswith("config /etc/ppec.toml: ")
    assert message in e.value.message


def test_ppec_serve_refuses_a_bad_images_table_with_exit_2(cli: Cli, tmp_path: Path) -> None:
    for i, (table, message) in enumerate([
            ({"everywhere": ["debian 12"]}, "[images] everywhere: invalid image name"),
            ({"everywhere": "debian12"}, "[images] everywhere must be a list")]):
        path = tmp_path / f"config-{i}.toml"
        path.write_text(tomli_w.dumps({"images": table}))
        done = subprocess.run([PPEC, "serve", "--once"], env={**cli.env,
                              "PPEC_CONFIG": str(path)}, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
