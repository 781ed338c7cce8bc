"""The plain table writer prints exactly what rich prints, or declines."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ppec.cli import output
from ppec.cli.output import plain_table

CELLS = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=14) \
    | st.sampled_from(["-", "yes", "12.5", "é", "日本", "a\tb", "two\nlines", ""])


def rich_table(grid: list[list[str]], width: int) -> str:
    """As ppec.cli.output.emit_table has rich render it, into a string."""
    out = io.StringIO()
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in grid[0]:
        table.add_column(header)
    for row in grid[1:]:
        table.add_row(*(Text(c) for c in row))
    Console(file=out, width=width, no_color=True, highlight=False, soft_wrap=False,
            force_terminal=False).print(table)
    return out.getvalue()


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(st.lists(CELLS, min_size=n, max_size=n), min_size=1, max_size=6),
    st.integers(20, 120))))
def test_plain_table_is_what_rich_prints(case: tuple[list[list[str]], int]) -> None:
    grid, width = case
    plain = plain_table(grid, width)
    widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
    if all(c.isascii() and c.isprintable() for row in grid for c in row) and \
            min(widths) > 0 and sum(widths) + 2 * len(widths) < width:
        assert plain is not None   # the common case is taken: the writer is not idle
    if plain is not None:
        assert plain == rich_table(grid, width)


def test_plain_table_declines_what_it_cannot_lay_out() -> None:
    assert plain_table([["A"], ["x" * 30]], 20) is None          # rich would wrap
    assert plain_table([["A"], ["日本"]], 80) is None             # wide characters
    assert plain_table([["A", "B"], ["1", "2"]], 80) == "A  B\n1  2\n"


def test_host_list_in_a_pipe_loads_no_rich(tmp_path: os.PathLike[str]) -> None:
    env = {**os.environ, "XDG_DATA_HOME": f"{tmp_path}/d", "XDG_CONFIG_HOME": f"{tmp_path}/c"}
    env.pop("PPEC_DB", None)
    code = ("import sys; sys.argv=['ppec', 'host', 'list']\n"
            "from ppec.cli.main import main\n"
            "try: main()\nexcept SystemExit: pass\n"
            "sys.stderr.write(f'RICH={\"rich\" in sys.modules}')")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert "RICH=False" in done.stderr, done.stderr[-400:]
    assert done.stdout.startswith("HOST  ADDRESS")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
               max_size=120), st.integers(20, 120))
def test_plain_line_is_what_rich_prints(message: str, width: int) -> None:
    """emit_line writes a line itself only when rich would print the same."""
    out = io.StringIO()
    Console(file=out, width=width, no_color=True, highlight=False, soft_wrap=False,
            force_terminal=False).print(message)
    plain = output.plain_line(message, width)
    if plain is not None:
        assert plain == out.getvalue()
    assert output.plain_line("attached vdb to web-1 on bm-01", 80) is not None
