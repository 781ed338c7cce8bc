"""Reading a console log by lines and by cursor: real files, rotated as virtlogd does it
(x.log renamed to x.log.0, a new x.log), truncated, cut mid-character."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppec.agent import consolelog
from ppec.agent.consolelog import MAX_CHUNK, complete_utf8, since, tail
from ppec.core.errors import BadInput


def test_tail_gives_the_last_lines_and_a_cursor_at_the_end(tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    got = tail(log, 3)
    assert got["text"] == "line 997\nline 998\nline 999\n"
    assert got["cursor"].startswith(f"{log.stat().st_ino}:{log.stat().st_size}:")
    assert not got["truncated"] and not got["more"]
    with log.open("ab") as f:
        f.write(b"line 1000\npartial")
    got = since(log, got["cursor"])
    assert got["text"] == "line 1000\npartial"
    assert since(log, got["cursor"])["text"] == ""
    # A last line without its newline counts as a line.
    assert tail(log, 2)["text"] == "line 1000\npartial"


def test_tail_of_a_missing_or_short_log(tmp_path: Path) -> None:
    missing = tail(tmp_path / "none.log", 10)
    assert missing["text"] == "" and missing["cursor"].startswith("0:0:")
    log = tmp_path / "vm.log"
    log.write_bytes(b"one\ntwo\n")
    assert tail(log, 10)["text"] == "one\ntwo\n"
    # A log that appears after a cursor taken while it was missing: read from its start.
    assert since(log, missing["cursor"])["text"] == "one\ntwo\n"


def test_long_output_comes_in_chunks_and_long_lines_are_cut(tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    data = b"x" * (MAX_CHUNK * 2 + 10) + b"\nend\n"
    log.write_bytes(data)
    whole = tail(log, 0)
    parts = [whole["text"]]
    while whole["more"]:
        whole = since(log, whole["cursor"])
        parts.append(whole["text"])
    assert "".join(parts).encode() == data and len(parts) == 3
    cut = tail(log, 2)
    assert cut["truncated"] and cut["text"].endswith("\nend\n")
    assert len(cut["text"]) <= MAX_CHUNK


def test_a_rotated_log_is_read_to_its_end_before_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    log.write_bytes(b"old 1\n")
    cursor = tail(log, 10)["cursor"]
    with log.open("ab") as f:
        f.write(b"old 2\n")
    os.rename(log, tmp_path / "vm.log.0")     # what virtlogd does at max_size
    log.write_bytes(b"new 1\n")
    got = since(log, cursor)
    assert got["text"] == "old 2\n" and got["more"] and not got["reset"]
    got = since(log, got["cursor"])
    assert got["text"] == "new 1\n" and not got["reset"]


def test_a_log_replaced_or_cut_short_says_reset(tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    log.write_bytes(b"first life\n")
    cursor = tail(log, 10)["cursor"]
    log.unlink()
    log.write_bytes(b"second life\n")   # a new file, not a rotation: bytes were missed
    got = since(log, cursor)
    assert got["text"] == "second life\n" and got["reset"]
    log.write_bytes(b"x\n")             # same file cut short
    got = since(log, got["cursor"])
    assert got["text"] == "x\n" and got["reset"]


def test_a_character_cut_by_the_writer_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    euro = "€".encode()
    log.write_bytes(b"price " + euro[:2])
    got = tail(log, 1)
    assert got["text"] == "price "
    with log.open("ab") as f:
        f.write(euro[2:] + b"\n")
    assert since(log, got["cursor"])["text"] == "€\n"


@given(st.text(max_size=40), st.integers(min_value=0, max_value=3))
def test_complete_utf8_drops_exactly_an_unfinished_last_character(text: str, cut: int) -> None:
    data = text.encode()
    last = len(text[-1].encode()) if text else 0
    cut = min(cut, max(last - 1, 0))       # bytes of the last character not yet written
    kept = complete_utf8(data[:len(data) - cut])
    assert kept == (text[:-1].encode() if cut else data)
    kept.decode()                          # whole characters only


@pytest.mark.parametrize("cursor", ["", "x", "1:", ":1", "1:2", "1:-2:00000000",
                                    "1:2:xyz", "1:2:3:4", "9" * 50 + ":1:00000000"])
def test_a_bad_cursor_is_refused(tmp_path: Path, cursor: str) -> None:
    with pytest.raises(BadInput, match="bad log cursor"):
        consolelog.since(tmp_path / "vm.log", cursor)
