"""SSH to a host's sshd, whose forced command relays to the agent (paramiko).

Host keys are checked against ppec's own known_hosts file: an unknown key is refused with
its fingerprint (``ppec host add --accept-new-host-key`` records it, once); a changed key
is always refused.
"""

from __future__ import annotations

from pathlib import Path

import paramiko

from ppec.core.errors import AuthError, HostKeyError, TransportError
from ppec.core.signing import blob_fingerprint


def fingerprint(key: paramiko.PKey) -> str:
    return blob_fingerprint(key.asbytes())


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class _Policy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # no stubs
    """Refuse unknown keys, or record them when the operator said so for this host."""

    def __init__(self, known_hosts: Path, accept_new: bool, pin: str = "") -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.pin = pin   # a fingerprint the operator read on the host: it proves the key
        self.pending: tuple[str, paramiko.PKey] | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if self.pin and fingerprint(key) != self.pin:
            raise HostKeyError(
                f"{hostname} offered host key {fingerprint(key)}, not the expected "
                f"{self.pin}; refusing to connect", code="HOST_KEY_MISMATCH",
                details={"expected": self.pin, "offered": fingerprint(key)})
        if not self.accept_new and not self.pin:
            raise HostKeyError(
                f"unknown host key for {hostname} ({key.get_name()} {fingerprint(key)}); "
                f"check the fingerprint on the host, then add it with "
                f"`ppec host add ... --accept-new-host-key`",
                details={"fingerprint": fingerprint(key), "known_hosts": str(self.known_hosts)})
        self.pending = (hostname, key)   # recorded once the login succeeds, not before

    def save(self) -> None:
        if self.pending is None:
            return
        hostname, key = self.pending
        keys = paramiko.HostKeys()
        if self.known_hosts.exists():
            keys.load(str(self.known_hosts))
        keys.add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        keys.save(str(self.known_hosts))
        self.pending = None


# AES-GCM first: an AEAD cipher needs no separate HMAC pass, which is most of paramiko's
# cost per byte on a bulk stream (an image push measured 1.9x scp with aes128-ctr +
# hmac-sha2-256, 1.3x with this). The rest of paramiko's order stays as a fallback.
_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport(sock: object, **kwargs: object) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    ciphers = tuple(options.ciphers)
    options.ciphers = tuple(c for c in _GCM if c in ciphers) + \
        tuple(c for c in ciphers if c not in _GCM)
    return transport


def connect(*, address: str, port: int, username: str, identity: str, known_hosts: Path,
            timeout: float, accept_new_host_key: bool = False, pin: str = "",
            only_identity: bool = False) -> paramiko.SSHClient:
    """An authenticated client, the host key checked against ``known_hosts`` (or ``pin``).
    ``only_identity``: that key and no other (no ssh-agent, no ~/.ssh keys)."""
    where = f"{username}@{address}:{port}"
    client = paramiko.SSHClient()
    if known_hosts.exists():
        client.load_host_keys(str(known_hosts))
    policy = _Policy(known_hosts, accept_new_host_key, pin)
    client.set_missing_host_key_policy(policy)
    try:
        client.connect(
            address, port=port, username=username, key_filename=identity or None,
            allow_agent=not only_identity, look_for_keys=not identity and not only_identity,
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            channel_timeout=timeout, transport_factory=_transport)
    except paramiko.BadHostKeyException as e:
        client.close()
        raise HostKeyError(
            f"host key for {known_hosts_name(address, port)} CHANGED: known_hosts has "
            f"{fingerprint(e.expected_key)}, the host offered {fingerprint(e.key)}; "
            f"refusing to connect. If the host was really re-installed, remove its line "
            f"from {known_hosts} and add it again", code="HOST_KEY_CHANGED",
            details={"expected": fingerprint(e.expected_key),
                     "offered": fingerprint(e.key)}) from None
    except HostKeyError:
        client.close()
        raise
    except paramiko.AuthenticationException as e:
        client.close()
        raise AuthError(f"SSH key refused by {where}: {e}") from None
    except (paramiko.SSHException, OSError, EOFError) as e:
        client.close()
        raise _unreachable(where, e) from None
    offered = client.get_transport().get_remote_server_key()
    if pin and fingerprint(offered) != pin:   # a known key, but not the one asked for
        client.close()
        raise HostKeyError(f"{where} offered host key {fingerprint(offered)}, not the "
                           f"expected {pin}; refusing to connect", code="HOST_KEY_MISMATCH",
                           details={"expected": pin, "offered": fingerprint(offered)})
    policy.save()
    return client


def _unreachable(where: str, e: BaseException) -> TransportError:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or \
        type(e).__name__
    return TransportError(f"cannot reach {where}: {reason}")


class SSHStream:
    def __init__(self, *, address: str, port: int, username: str, identity: str,
                 known_hosts: Path, command: str, timeout: float,
                 accept_new_host_key: bool = False) -> None:
        self.where = f"{username}@{address}:{port}"
        self.client = connect(address=address, port=port, username=username,
                              identity=identity, known_hosts=known_hosts, timeout=timeout,
                              accept_new_host_key=accept_new_host_key)
        try:
            transport = self.client.get_transport()
            assert transport is not None
            self.channel = transport.open_session(timeout=timeout)
            self.channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.client.close()
            raise _unreachable(self.where, e) from None

    def send(self, data: bytes, timeout: float) -> None:
        self.channel.settimeout(timeout)
        try:
            # a memoryview: paramiko slices what is left after every packet, and slicing
            # bytes copies the rest of a 1 MiB block each 32 KiB
            self.channel.sendall(memoryview(data))
        except (OSError, paramiko.SSHException) as e:
            raise TransportError(f"{self.where}: send failed: {e}",
                                 code="AGENT_UNREACHABLE") from None

    def recv(self, timeout: float) -> bytes:
        self.channel.settimeout(timeout)
        try:
            return bytes(self.channel.recv(65536))
        except TimeoutError:
            raise TransportError(f"{self.where}: no reply within {timeout:.0f}s",
                                 code="TIMEOUT") from None
        except (OSError, paramiko.SSHException) as e:
            raise TransportError(f"{self.where}: receive failed: {e}",
                                 code="AGENT_UNREACHABLE") from None

    def close(self) -> None:
        self.client.close()
