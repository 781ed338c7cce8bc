"""Maker-checker: requests signed by their maker, approvals signed by a checker.

Who someone is comes only from a signature made with their SSH key (a key file or
ssh-agent, through paramiko) checked against the operators list: never from ``$USER``.
A request is a canonical JSON payload; its SHA-256 digest is what both people sign, so
any change to the payload voids both signatures. The same checks run in the CLI and, for
what a host executes, again in the agent against its own root-owned approvers file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import secrets
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppec.core.errors import BadInput, PpecError


class Forbidden(PpecError):
    code = "FORBIDDEN"


PURPOSE_REQUEST = b"ppec-request-v1:"
PURPOSE_APPROVE = b"ppec-approve-v1:"
DEFAULT_TTL = 24 * 3600.0


def key_blob(line: str) -> tuple[str, bytes]:
    parts = line.split()
    if len(parts) < 2:
        raise BadInput(f"not an SSH public key: {line[:40]!r}")
    try:
        return parts[0], base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise BadInput(f"not an SSH public key: {line[:40]!r}") from None


def blob_fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def fingerprint(line: str) -> str:
    return blob_fingerprint(key_blob(line)[1])


@dataclass(frozen=True)
class Operator:
    name: str
    key: str                       # "ssh-ed25519 AAAA…"
    roles: frozenset[str]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


@dataclass(frozen=True)
class Rule:
    operations: frozenset[str]
    approvers: frozenset[str]      # roles allowed to approve


@dataclass(frozen=True)
class Approvers:
    operators: tuple[Operator, ...] = ()
    rules: dict[str, Rule] = field(default_factory=dict)   # resource type -> rule

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "config") -> Approvers:
        def names(value: Any, what: str) -> frozenset[str]:
            # A bare string would become a set of letters and quietly change the policy.
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadInput(f"{source}: {what} must be a list of strings, "
                               f"e.g. [\"delete\"]")
            return frozenset(value)

        ops = []
        for name, o in data.get("operators", {}).items():
            if not isinstance(o, dict) or not isinstance(o.get("key"), str):
                raise BadInput(f"{source}: operator {name!r} needs a key")
            fingerprint(o["key"])
            ops.append(Operator(name, o["key"], names(o.get("roles", []),
                                                      f"operators.{name}.roles")))
        rules = {}
        for rtype, r in data.get("approval", {}).items():
            if not isinstance(r, dict):
                raise BadInput(f"{source}: [approval.{rtype}] must be a table")
            rules[rtype] = Rule(names(r.get("operations", []), f"approval.{rtype}.operations"),
                                names(r.get("approvers", []), f"approval.{rtype}.approvers"))
        return cls(tuple(ops), rules)

    @classmethod
    def load(cls, path: Path, *, require_root: bool = False) -> Approvers:
        st = path.stat()
        if require_root and (st.st_uid != 0 or st.st_mode & 0o022):
            raise PpecError(f"{path} must be owned by root and writable by root only",
                            code="APPROVERS_UNSAFE")
        try:
            return cls.from_mapping(tomllib.loads(path.read_text()), str(path))
        except tomllib.TOMLDecodeError as e:
            raise BadInput(f"{path}: {e}") from None

    def needs(self, rtype: str, operation: str) -> bool:
        rule = self.rules.get(rtype)
        return rule is not None and operation in rule.operations

    def named(self, name: str) -> Operator | None:
        return next((o for o in self.operators if o.name == name), None)

    def with_key(self, key_fingerprint: str) -> list[Operator]:
        return [o for o in self.operators if o.fingerprint == key_fingerprint]

    def to_toml_mapping(self) -> dict[str, Any]:
        return {"operators": {o.name: {"key": o.key, "roles": sorted(o.roles)}
                              for o in self.operators},
                "approval": {t: {"operations": sorted(r.operations),
                                 "approvers": sorted(r.approvers)}
                             for t, r in self.rules.items()}}


# -- payloads ------------------------------------------------------------------------------


def canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


def digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(payload)).hexdigest()


def new_payload(operation: str, rtype: str, resource: str, maker: Operator,
                params: dict[str, Any] | None = None, host: str = "",
                ttl: float = DEFAULT_TTL, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {"operation": operation, "type": rtype, "resource": resource, "host": host,
            "params": params or {}, "maker": maker.name, "maker_key": maker.fingerprint,
            "created": now, "expires": now + ttl, "nonce": secrets.token_hex(16)}


# -- signing -------------------------------------------------------------------------------


class Signer:
    """The operator's private key: a key file, or the first ssh-agent key that is one of
    the registered operators."""

    def __init__(self, identity: str | None = None) -> None:
        self.identity = identity or os.environ.get("PPEC_IDENTITY") or ""

    def _keys(self) -> list[Any]:
        import paramiko
        if self.identity:
            try:
                return [paramiko.PKey.from_path(self.identity)]
            except (OSError, paramiko.SSHException) as e:
                raise BadInput(f"cannot read identity {self.identity}: {e}") from None
        return list(paramiko.Agent().get_keys())

    def whoami(self, approvers: Approvers) -> tuple[Operator, Any]:
        for key in self._keys():
            line = f"{key.get_name()} {key.get_base64()}"
            found = approvers.with_key(fingerprint(line))
            if len(found) == 1:
                return found[0], key
            if len(found) > 1:
                raise Forbidden(f"key {fingerprint(line)} is registered for "
                                f"{', '.join(o.name for o in found)}: one key, one person")
        where = self.identity or "ssh-agent"
        raise Forbidden(f"no key from {where} belongs to a registered operator (see "
                        f"[operators] in the config); who you are is proven by your key, "
                        f"not by $USER")


def sign(key: Any, purpose: bytes, hexdigest: str) -> str:
    msg = key.sign_ssh_data(purpose + hexdigest.encode())
    return base64.b64encode(msg.asbytes()).decode()


def verify(op: Operator, purpose: bytes, hexdigest: str, signature: str) -> bool:
    import paramiko
    kind, blob = key_blob(op.key)
    try:
        pub = paramiko.PKey.from_type_string(kind, blob)
        return bool(pub.verify_ssh_sig(purpose + hexdigest.encode(),
                                       paramiko.Message(base64.b64decode(signature))))
    except Exception:   # a malformed signature is simply not a valid one
        return False


# -- the shapes ----------------------------------------------------------------------------

# What an approval envelope and its payload hold, and of which JSON type: anything else
# is refused (FORBIDDEN, naming the field) before a rule reads it. "number" is a JSON
# number (int or float, finite; not a boolean).
ENVELOPE_FIELDS: dict[str, str] = {"payload": "object", "maker_sig": "string",
                                   "checker": "string", "checker_sig": "string",
                                   "audit": "object"}
# ``audit``: the operator's audit chain head (its newest entry, the execution's own) that
# the agent records beside the spent nonce: an anchor outside the store (docs/design.md).
# Optional, so an envelope from a ppec without anchors still executes.
ENVELOPE_OPTIONAL = frozenset({"audit"})
AUDIT_FIELDS: dict[str, str] = {"seq": "integer", "hash": "string"}
PAYLOAD_FIELDS: dict[str, str] = {
    "operation": "string", "type": "string", "resource": "string", "host": "string",
    "params": "object", "maker": "string", "maker_key": "string", "created": "number",
    "expires": "number", "nonce": "string"}
PAYLOAD_OPTIONAL = frozenset({"host", "params"})


@dataclass(frozen=True)
class Envelope:
    """An approval as a client sends it to the agent, its shape checked."""

    payload: dict[str, Any]
    maker_sig: str
    checker: str
    checker_sig: str
    audit: dict[str, Any] | None = None


def _is(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _check_fields(data: dict[str, Any], fields: dict[str, str], optional: frozenset[str],
                  what: str) -> None:
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        raise Forbidden(f"{what} has unknown field(s) {', '.join(unknown)}")
    for key, kind in fields.items():
        if key not in data:
            if key in optional:
                continue
            raise Forbidden(f"{what} lacks {key!r}")
        if not _is(data[key], kind):
            article = "an" if kind in ("object", "integer") else "a"
            raise Forbidden(f"{what} field {key!r} must be {article} {kind}, not "
                            f"{_json_type(data[key])}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number" if math.isfinite(value) else "non-finite number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def check_payload(payload: Any) -> dict[str, Any]:
    """A request payload with exactly the known fields, each of its JSON type."""
    if not isinstance(payload, dict):
        raise Forbidden(f"request payload must be an object, not {_json_type(payload)}")
    _check_fields(payload, PAYLOAD_FIELDS, PAYLOAD_OPTIONAL, "request payload")
    return payload


def check_envelope(approval: Any) -> Envelope:
    """An approval envelope as sent to the agent: its fields and their types, no others."""
    if not isinstance(approval, dict):
        raise Forbidden(f"approval must be an object, not {_json_type(approval)}")
    _check_fields(approval, ENVELOPE_FIELDS, ENVELOPE_OPTIONAL, "approval")
    head = approval.get("audit")
    if head is not None:
        _check_fields(head, AUDIT_FIELDS, frozenset(), "approval audit head")
    return Envelope(check_payload(approval["payload"]), approval["maker_sig"],
                    approval["checker"], approval["checker_sig"], head)


# -- the rules -----------------------------------------------------------------------------


def check_request(approvers: Approvers, payload: dict[str, Any], maker_sig: str) -> Operator:
    maker = approvers.named(str(payload.get("maker", "")))
    if maker is None:
        raise Forbidden(f"maker {payload.get('maker')!r} is not a registered operator")
    if maker.fingerprint != payload.get("maker_key"):
        raise Forbidden(f"request names {maker.name}'s key as "
                        f"{payload.get('maker_key')}, but {maker.name}'s key is "
                        f"{maker.fingerprint}")
    if not verify(maker, PURPOSE_REQUEST, digest(payload), maker_sig):
        raise Forbidden("the maker's signature does not match the request (was it edited?)")
    return maker


def check_approval(approvers: Approvers, payload: dict[str, Any], maker_sig: str,
                   checker_name: str, checker_sig: str, *, now: float | None = None,
                   operation: str | None = None, resource: str | None = None,
                   host: str | None = None) -> Operator:
    """Every rule, in order; the first broken one is the refusal. Returns the checker."""
    check_payload(payload)
    if operation is not None and payload["operation"] != operation:
        raise Forbidden(f"approval is for {payload['operation']}, not {operation}")
    rtype, _, op = str(payload["operation"]).partition(".")
    rule = approvers.rules.get(rtype)
    # The type decides who may approve: it must be the operation's own, and the operation
    # one the policy names, or a vm.delete could be dressed as an ip request.
    if payload["type"] != rtype or rule is None or op not in rule.operations:
        raise Forbidden(f"request type {payload['type']!r} does not match operation "
                        f"{payload['operation']!r} under the approval policy")
    if resource is not None and payload["resource"] != resource:
        raise Forbidden(f"approval is for {payload['type']} {payload['resource']}, "
                        f"not {resource}")
    if host is not None and payload.get("host") != host:
        raise Forbidden(f"approval is for host {payload.get('host')}, not {host}")
    now = time.time() if now is None else now
    if now > float(payload["expires"]):
        raise Forbidden(f"request expired {now - float(payload['expires']):.0f} s ago")
    maker = check_request(approvers, payload, maker_sig)
    checker = approvers.named(checker_name)
    if checker is None:
        raise Forbidden(f"checker {checker_name!r} is not a registered operator")
    if checker.name == maker.name:
        raise Forbidden(f"{maker.name} made this request and cannot approve it")
    if checker.fingerprint == maker.fingerprint:
        raise Forbidden(f"{checker.name} signs with the maker's key ({maker.fingerprint}): "
                        f"the same person cannot approve under a second name")
    allowed = rule.approvers
    if not checker.roles & allowed:
        raise Forbidden(f"{checker.name} (roles: {', '.join(sorted(checker.roles)) or 'none'}) "
                        f"may not approve {payload['type']} requests (needs: "
                        f"{', '.join(sorted(allowed)) or 'nobody is allowed'})")
    if not verify(checker, PURPOSE_APPROVE, digest(payload), checker_sig):
        raise Forbidden(f"{checker.name}'s approval signature does not match this request "
                        f"(a different request, or the payload was edited)")
    return checker
