"""One error root for the whole project.

Library code raises these; only the CLI turns them into a message and an exit code
(`ppec.cli.run.invoke` for a command's own failure, `ppec.cli.main` for what fails before
a command runs: usage, parsing). Each error has a stable machine-readable ``code`` that also travels
over the wire protocol, so an agent's refusal keeps its meaning on the operator side.
"""

from __future__ import annotations

from typing import Any

# Exit codes from the command-line contract (README, "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_CAPACITY = 3
EXIT_PENDING = 4
EXIT_PARTIAL = 5
EXIT_DRIFT = 10


class PpecError(Exception):
    """Base of every error ppec raises on purpose."""

    code = "FAILED"
    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, code: str | None = None,
                 details: dict[str, Any] | None = None, host: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = dict(details or {})
        self.host = host

    def __str__(self) -> str:
        return f"{self.host}: {self.message}" if self.host else self.message


class BadInput(PpecError):
    """The caller asked for something malformed or impossible (exit 2)."""

    code = "BAD_INPUT"
    exit_code = EXIT_USAGE


class NotFound(BadInput):
    """A name the caller gave names nothing (an unknown host or VM)."""

    code = "NOT_FOUND"


class AlreadyExists(BadInput):
    code = "ALREADY_EXISTS"


class NoCapacity(PpecError):
    code = "NO_CAPACITY"
    exit_code = EXIT_NO_CAPACITY


class TransportError(PpecError):
    """The host or its agent could not be reached, or the connection broke."""

    code = "UNREACHABLE"


class HostKeyError(TransportError):
    code = "HOST_KEY"


class AuthError(TransportError):
    code = "AUTH_REFUSED"


class ProtocolError(PpecError):
    """A peer spoke something that is not protocol v1."""

    code = "PROTOCOL"


class HypervisorError(PpecError):
    """libvirt refused or failed; the libvirt message is kept in ``details``."""

    code = "LIBVIRT"


class StorageError(PpecError):
    code = "STORAGE"


class Conflict(PpecError):
    """The object is in a state that does not allow the operation."""

    code = "CONFLICT"


class LockBusy(PpecError):
    """The host lock was not obtained within lock_timeout."""

    code = "BUSY"


class DetachPending(PpecError):
    """The guest has not released a disk in time: out of the saved config, volume kept,
    finished by a later detach or list (exit 1)."""

    code = "DETACH_PENDING"


# Codes an agent may send back, mapped to the class the client re-raises, so that the
# exit code an operator sees does not depend on whether the check ran locally or remotely.
_BY_CODE: dict[str, type[PpecError]] = {
    cls.code: cls
    for cls in (PpecError, BadInput, NotFound, AlreadyExists, NoCapacity, TransportError,
                HostKeyError, AuthError, ProtocolError, HypervisorError, StorageError, Conflict,
                DetachPending, LockBusy)
}
_BY_CODE.update({
    "BAD_PARAMS": BadInput, "UNKNOWN_METHOD": ProtocolError, "LINE_TOO_LONG": ProtocolError,
    "BAD_JSON": ProtocolError, "FORBIDDEN": PpecError, "INTERNAL": PpecError,
    "NOT_OWNED": Conflict, "TIMEOUT": PpecError,
    # The proxy's answer when the agent behind it does not listen: unreachable, as a
    # dead agent is over a local socket.
    "AGENT_UNREACHABLE": TransportError,
})


def from_wire(error: dict[str, Any], host: str | None = None) -> PpecError:
    """Rebuild an error an agent sent, keeping its code, message and details."""
    code = str(error.get("code", "FAILED"))
    details = error.get("details")
    details = dict(details) if isinstance(details, dict) else {}
    kind = str(details.pop("kind", ""))
    cls = _BY_CODE.get(code) or _BY_CODE.get(kind) or PpecError
    return cls(str(error.get("message", "agent error")), code=code, details=details,
               host=host)
