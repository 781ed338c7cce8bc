"""The agent daemon: JSON lines over a Unix socket, one thread per connection.

The socket is created 0660 (root, plus ``socket_group`` if configured) and every peer is
checked with SO_PEERCRED, so file permissions are not the only guard.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from filelock import FileLock, Timeout

from ppec.agent.config import AgentConfig
from ppec.agent.console import Streaming
from ppec.agent.handlers import Handler, Handlers
from ppec.core.errors import LockBusy, PpecError, ProtocolError
from ppec.core.signing import Approvers, Forbidden, check_approval, check_envelope, digest
from ppec.wire import protocol
from ppec.wire.methods import METHODS, Method, check_params

log = logging.getLogger(__name__)
_ENVELOPE = {"v", "id", "method", "params", "approval"}
# Connections the kernel queues before accept(): a fleet-wide fan-out opens one SSH
# session per operator command per host at once, and a full queue answers EAGAIN. The
# kernel caps it at net.core.somaxconn (4096 by default since Linux 5.4).
BACKLOG = max(socket.SOMAXCONN, 4096)


class AgentServer:
    def __init__(self, config: AgentConfig, handlers: Handlers,
                 approvers: Approvers | None = None) -> None:
        self.config = config
        self.ctx = handlers.ctx
        # Resolved once: a table entry without a handler stops the agent at start.
        self.handlers: dict[str, Handler] = {
            name: handlers.resolve(m.handler) for name, m in METHODS.items()}
        self.approvers = approvers
        self.path = Path(config.socket)
        # filelock's default is thread-local: each request thread gets its own claim on the
        # same flock, so threads of this process exclude each other as other processes do.
        self.host_lock = FileLock(str(config.lock_path), timeout=config.lock_timeout)
        self.allowed_uids = {0, os.getuid(), *config.allowed_uids}
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self.ctx.unlocked = self._unlocked
        # Requests being handled or answered: a restart waits for them to be answered.
        self._busy = 0
        self._idle = threading.Condition()
        self.restarting = False   # stopped because an update asked to restart

    @contextmanager
    def _unlocked(self) -> Iterator[None]:
        """Inside a locked request: let other requests change the host while this one waits
        on something slow (a guest releasing a disk). The caller re-reads its state after;
        regaining the lock is bounded by lock_timeout like any request."""
        self.host_lock.release()
        try:
            yield
        finally:
            try:
                self.host_lock.acquire()
            except Timeout:
                raise self._lock_busy() from None

    # -- socket -----------------------------------------------------------------------------

    def bind(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise PpecError(f"another agent is already serving on {self.path}",
                                code="ALREADY_RUNNING")
            self.path.unlink()   # stale socket left by a killed agent
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)    # born 0660: never a moment when it is world-writable
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        if self.config.socket_group:
            os.chown(self.path, -1, grp.getgrnam(self.config.socket_group).gr_gid)
        os.chmod(self.path, 0o660)
        sock.listen(BACKLOG)
        self._sock = sock

    def serve_forever(self) -> None:
        assert self._sock is not None, "bind() first"
        log.info("serving %s on %s", self.config.host, self.path)
        try:
            while not self._stopping.is_set():
                try:
                    conn, _ = self._sock.accept()
                except OSError as e:
                    if self._stopping.is_set():
                        break
                    # Out of descriptors, an aborted handshake: serve on, never exit.
                    log.warning("accept failed: %s", e)
                    time.sleep(0.1)
                    continue
                threading.Thread(target=self._serve_connection, args=(conn,),
                                 daemon=True).start()
        finally:
            # Here, in the serving thread, so the socket is gone before the process exits.
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def stop(self, *_: Any) -> None:
        """Wake the accept loop; it removes the socket on its way out."""
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def start_drift_checks(self) -> None:
        """Compare ledger and libvirt every ``drift_interval`` seconds, under the lock."""
        interval = self.config.drift_interval
        if interval <= 0:
            return

        def loop() -> None:
            while not self._stopping.wait(interval):
                try:
                    with self.host_lock:
                        alerts = self.handlers["drift.check"]()["alerts"]
                    if alerts:
                        log.warning("drift: %d open alert(s): %s", len(alerts), ", ".join(
                            f"{a['code']} {a['object']}" for a in alerts))
                except Exception:   # a failed check must not stop the next one
                    log.exception("drift check failed")
        threading.Thread(target=loop, name="drift", daemon=True).start()

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            # accept() is blocking in the main thread; closing the socket from a helper
            # thread wakes it.
            threading.Thread(target=self.stop, daemon=True).start()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # -- one connection ---------------------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        with conn:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", creds)
            stream = conn.makefile("rwb", buffering=0)
            if uid not in self.allowed_uids:
                log.warning("refused peer pid=%d uid=%d", pid, uid)
                _send(stream, protocol.reply_error(None, "FORBIDDEN",
                                                   f"uid {uid} may not use this agent"))
                return
            while not self._stopping.is_set():
                line = _read_line(stream)
                if line is None:
                    return
                with self._idle:
                    self._busy += 1
                switch: Streaming | None = None
                try:
                    reply, switch = (protocol.reply_error(None, line.code, line.message), None) \
                        if isinstance(line, ProtocolError) else self._dispatch(line)
                    sent = _send(stream, reply)
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
                if switch is not None:
                    # The protocol step to a byte stream (docs/design.md, "Console"): not
                    # counted as busy, so an agent update does not wait for a console.
                    if sent:
                        switch.relay(conn)
                    else:
                        switch.cancel()
                    return
                if self.ctx.restart_requested and not self.restarting:
                    # The new files are in place and the caller has its answer: stop
                    # serving; the daemon re-executes itself on the new code.
                    self.restarting = True
                    self.stop()
                    return
                if not sent:
                    return

    def _lock_busy(self) -> LockBusy:
        return LockBusy(f"host lock {self.config.lock_path} still held after "
                        f"{self.config.lock_timeout:.0f}s")

    def wait_idle(self, timeout: float) -> bool:
        """Until every request being handled has been answered (False: gave up)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def _dispatch(self, line: bytes) -> tuple[dict[str, Any], Streaming | None]:
        """The reply to one request line, and the stream it switches to, if it does."""
        msg_id: Any = None
        try:
            if self.ctx.restart_requested:
                # New files are in place and this process is about to become them: the
                # old code must not start anything more.
                raise LockBusy("the agent is restarting on updated files; try again")
            msg = protocol.decode(line)
            msg_id = msg.get("id")
            if not isinstance(msg_id, int | str) or isinstance(msg_id, bool):
                msg_id = None
                raise ProtocolError("'id' must be an integer or a string", code="BAD_REQUEST")
            unknown = sorted(set(msg) - _ENVELOPE)
            if unknown:
                raise ProtocolError(f"unknown field(s) {', '.join(unknown)}",
                                    code="BAD_REQUEST")
            if msg.get("v") != protocol.VERSION:
                raise ProtocolError(f"protocol version {msg.get('v')!r} is not supported "
                                    f"(this agent speaks v{protocol.VERSION})",
                                    code="BAD_VERSION")
            name = msg.get("method")
            method = METHODS.get(name) if isinstance(name, str) else None
            if method is None:
                raise ProtocolError(f"unknown method {name!r}", code="UNKNOWN_METHOD",
                                    details={"methods": sorted(METHODS)})
            params = msg.get("params", {})
            if not isinstance(params, dict):
                raise ProtocolError("'params' must be an object", code="BAD_REQUEST")
            clean = check_params(method, params)
            handler = self.handlers[method.name]
            if method.mutating:
                try:
                    with self.host_lock:
                        if self.ctx.restart_requested:   # queued behind the update
                            raise LockBusy("the agent is restarting on updated files; "
                                           "try again")
                        self._check_approval(method, clean, msg.get("approval"))
                        result = handler(**clean)
                except Timeout:
                    raise self._lock_busy() from None
            else:
                # Approval without the lock for a method that does not take it (a console).
                self._check_approval(method, clean, msg.get("approval"))
                result = handler(**clean)
            if isinstance(result, Streaming):
                result.request_id = msg_id
                return protocol.reply_ok(msg_id, result), result
            return protocol.reply_ok(msg_id, result), None
        except PpecError as e:
            # "kind" names the error's class, so the client keeps its exit code even for
            # codes it has never heard of.
            return protocol.reply_error(msg_id, e.code, e.message,
                                        {**e.details, "kind": type(e).code}), None
        except Exception as e:  # a bug must cost one request, never the daemon
            log.exception("internal error serving %r", line[:200])
            return protocol.reply_error(msg_id, "INTERNAL", f"internal error: {e}"), None


    def _check_approval(self, method: Method, params: dict[str, Any], approval: Any) -> None:
        """Maker-checker, enforced here whatever the client says; the nonce is spent before
        the operation runs, so one approval executes at most once."""
        if method.approval_for is None or self.approvers is None \
                or not self.approvers.needs(*method.approval_for):
            return
        if approval is None:
            raise Forbidden(f"{method.name} needs an approved request on this host "
                            f"(maker-checker); none was sent")
        env = check_envelope(approval)
        payload = env.payload
        rtype, op = method.approval_for
        check_approval(self.approvers, payload, env.maker_sig, env.checker, env.checker_sig,
                       operation=f"{rtype}.{op}", resource=method.approval_resource(params),
                       host=self.config.host)
        approved = payload.get("params", {})
        for key in method.approval_binds:
            if approved.get(key) != params.get(key):
                raise Forbidden(f"the approved request has {key}={approved.get(key)!r}, this "
                                f"call {key}={params.get(key)!r}")
        anchor = (int(env.audit["seq"]), str(env.audit["hash"])) if env.audit else None
        if not self.ctx.ledger.use_nonce(str(payload["nonce"]), digest(payload), anchor):
            raise Forbidden(f"request {payload['nonce'][:8]}… was already executed on "
                            f"{self.config.host}")


def _read_line(stream: socket.SocketIO) -> bytes | ProtocolError | None:
    """One line, or an error for an oversized one (after skipping the rest of it)."""
    try:
        line = stream.readline(protocol.MAX_LINE + 1)
    except OSError:
        return None
    if not line:
        return None
    if len(line) > protocol.MAX_LINE or not line.endswith(b"\n"):
        if not line.endswith(b"\n"):
            if len(line) <= protocol.MAX_LINE:
                return line  # last line without newline at EOF: still a request
            while True:      # drain the rest of the oversized line
                chunk = stream.readline(1 << 16)
                if not chunk or chunk.endswith(b"\n"):
                    break
        return ProtocolError(f"line longer than {protocol.MAX_LINE} bytes",
                             code="LINE_TOO_LONG")
    return line


def _send(stream: socket.SocketIO, reply: dict[str, Any]) -> bool:
    try:
        stream.write(protocol.encode(reply))
    except PpecError as e:  # a reply too large to send: say so instead
        stream.write(json.dumps(protocol.reply_error(reply.get("id"), e.code,
                                                     e.message)).encode() + b"\n")
    except OSError:
        return False
    return True


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()
