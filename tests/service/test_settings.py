"""`[serve]` from the operator config: defaults, a full table, and the config loader
keeping the table (it does not know it) for the service to check."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppec.core.errors import BadInput
from ppec.operator import config
from ppec.service.settings import NotifierSpec, from_config


def test_defaults_without_a_serve_table() -> None:
    s = from_config(config.load(Path("/nonexistent")).raw, db="x.db")
    assert (s.snapshot_interval, s.drift_interval, s.agent_check_interval) == (30, 60, 300)
    assert (s.workers, s.jitter, s.backoff_base, s.backoff_cap) == (32, 0.1, 5, 300)
    assert s.notifiers == () and s.retry_every == 30 and s.listen == "127.0.0.1:8480"


def test_a_full_table_through_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[serve]\nsnapshot_interval = 10\ndrift_interval = 20\n'
                    'agent_check_interval = 600\njitter = 0.2\nworkers = 8\n'
                    'backoff_base = 2\nbackoff_cap = 60\n'
                    '[[serve.notifier]]\ntype = "webhook"\nurl = "https://hooks.example/x"\n'
                    'timeout = 3\nretries = 5\n'
                    '[[serve.notifier]]\ntype = "command"\nargv = ["logger", "-t", "ppec"]\n')
    cfg = config.load(path)
    s = from_config(cfg.raw, db="x.db", source=cfg.source)
    assert (s.snapshot_interval, s.drift_interval, s.agent_check_interval) == (10, 20, 600)
    assert (s.workers, s.jitter, s.backoff_base, s.backoff_cap) == (8, 0.2, 2, 60)
    assert s.retry_every == 10
    assert s.notifiers == (
        NotifierSpec("webhook", url="https://hooks.example/x", timeout=3, retries=5),
        NotifierSpec("command", argv=("logger", "-t", "ppec")))


@pytest.mark.parametrize(("table", "message"), [
    ({"jitter": 0.9}, "[serve] jitter = 0.9 is out of range (0 to 0.5)"),
    ({"backoff_base": 10, "backoff_cap": 5}, "backoff_cap must not be below backoff_base"),
    ({"workers": True}, "workers must be an integer"),
    ({"notifier": {"type": "webhook"}}, "array of tables"),
    ({"notifier": [{"type": "webhook", "url": "http://x", "retries": -1}]}, "retries must"),
    ({"notifier": [{"type": "command", "argv": ["x"], "url": "http://x"}]},
     "unknown key(s) url for type command"),
])
def test_bad_values_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput) as e:
        from_config({"serve": table}, db="x.db", source="/etc/ppec.toml")
    assert e.value.message.startswith("config /etc/ppec.toml: ")
    assert message in e.value.message
