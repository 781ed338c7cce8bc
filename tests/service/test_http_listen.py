"""Where the HTTP side listens and who may ask it: loopback by default; any other address
only with a bearer token from an owner-only file; a wrong or missing token gets 401 and
nothing else. Runs the real `python -m ppec.service.http` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppec.core.errors import BadInput
from ppec.service.http import listen
from tests.realparts import free_port
from tests.service.http_support import fill, get

TOKEN = "s3cret-token-0123456789abcdef"


def token_file(where: Path, mode: int = 0o600, text: str = TOKEN) -> Path:
    path = where / "token"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("given", "want"), [
    ("127.0.0.1:8480", ("127.0.0.1", 8480)), (":9000", ("127.0.0.1", 9000)),
    ("[::1]:8480", ("::1", 8480)), ("localhost:1", ("localhost", 1)),
    ("127.0.0.9:65535", ("127.0.0.9", 65535)),
])
def test_loopback_needs_no_token(given: str, want: tuple[str, int]) -> None:
    assert listen.resolve(given, None) == (*want, None)


@pytest.mark.parametrize("given", ["0.0.0.0:8480", "[::]:8480", "10.1.2.3:80",
                                   "ops.example:8480"])
def test_any_other_address_without_a_token_is_refused(given: str) -> None:
    with pytest.raises(BadInput, match="is not a loopback address: give --token-file"):
        listen.resolve(given, None)


@pytest.mark.parametrize("given", ["8480", "127.0.0.1", "127.0.0.1:0x50", "127.0.0.1:70000",
                                   "127.0.0.1:", "[::1]8480"])
def test_malformed_listen_is_refused(given: str) -> None:
    with pytest.raises(BadInput, match="give HOST:PORT"):
        listen.resolve(given, None)


def test_the_token_file_must_be_its_owners_alone(tmp_path: Path) -> None:
    assert listen.resolve("0.0.0.0:8480", str(token_file(tmp_path))) == (
        "0.0.0.0", 8480, TOKEN)
    for mode in (0o640, 0o604, 0o660):
        with pytest.raises(BadInput, match=r"readable by others \(mode 0"):
            listen.resolve("0.0.0.0:8480", str(token_file(tmp_path, mode)))
    with pytest.raises(BadInput, match="at least 16 characters"):
        listen.resolve("0.0.0.0:8480", str(token_file(tmp_path, text="short")))
    with pytest.raises(BadInput, match="No such file"):
        listen.resolve("0.0.0.0:8480", str(tmp_path / "missing"))


def serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ppec.service.http", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_a_non_loopback_listen_without_a_token_does_not_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "ppec.service.http", "--db",
                           str(tmp_path / "s.db"), "--listen", "0.0.0.0:8480"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == ("error: --listen 0.0.0.0:8480 is not a loopback address: give "
                           "--token-file FILE (a bearer token, mode 600) or listen on "
                           "127.0.0.1\n")
    assert done.stdout == ""
    loose = token_file(tmp_path, 0o644)
    done = subprocess.run([sys.executable, "-m", "ppec.service.http", "--db",
                           str(tmp_path / "s.db"), "--listen", "0.0.0.0:8480",
                           "--token-file", str(loose)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "readable by others (mode 0644)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_a_clear_failure(tmp_path: Path) -> None:
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "ppec.service.http", "--db",
                               str(tmp_path / "s.db"), "--listen", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (f"error: cannot listen on 127.0.0.1:{port} (in "
                                            f"use, or not an address of this machine?)")


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[str]:
    db = tmp_path / "s.db"
    fill(db, 3)
    port = free_port("127.0.0.1")
    proc = serve("--db", str(db), "--listen", f"127.0.0.1:{port}", "--token-file",
                 str(token_file(tmp_path)))
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while "HTTP on" not in line:
        assert proc.poll() is None and line, "the server did not start"
        line = proc.stderr.readline()
    assert line.strip().endswith(f"HTTP on http://127.0.0.1:{port}/: bearer token required "
                                 f"(Authorization: Bearer …)")
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("path", ["/api/v1/hosts", "/api/v1/nothing", "/metrics", "/",
                                  "/static/ppec.css", "/api/v1/openapi.json"])
def test_without_the_token_only_401(guarded: str, path: str) -> None:
    for token in (None, "wrong-token-0123456789abcdef", TOKEN[:-1], TOKEN + "x"):
        answer = get(guarded + path, token=token)
        assert answer.status == 401, (path, token)
        assert answer.json() == {"error": {"code": "UNAUTHORIZED",
                                           "message": "a bearer token is required"}}
        assert answer.headers["www-authenticate"] == "Bearer"
    assert get(guarded + path, token=TOKEN).status == (404 if "nothing" in path else 200)


def test_a_browser_gives_the_token_once(guarded: str) -> None:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"{guarded}/vms?host=h00001&token={TOKEN}", timeout=30)
        raise AssertionError("no redirect")
    except urllib.error.HTTPError as e:
        assert e.code == 303 and e.headers["location"] == "/vms?host=h00001"
        set_cookie = e.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    cookie = set_cookie.split(";")[0]
    request = urllib.request.Request(f"{guarded}/vms", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200 and b"h00001-vm000" in r.read()
    assert get(f"{guarded}/api/v1/hosts?token={TOKEN}").status == 401  # not for the API
