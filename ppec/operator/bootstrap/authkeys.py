"""root's ``authorized_keys`` as ppec edits it: one forced-command line for the operator
key, every other line kept byte for byte.

A line is ppec's when its key is the operator key and its options run ``ppec-agent proxy``;
such lines are replaced (never duplicated). The operator key on any other line would give
that key more than the proxy (sshd takes the first line whose key matches), so it is
refused rather than edited: ppec does not change lines it did not write.
"""

from __future__ import annotations

import shlex

from ppec.core.errors import BadInput

PROXY = "ppec-agent proxy"
_KEY_TYPES = ("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-")


def key_blob(line: str) -> str | None:
    """The base64 key of an authorized_keys line, or None for comments, blanks and lines
    this parser cannot read (kept as they are)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    try:
        tokens = shlex.split(text, comments=False, posix=True)
    except ValueError:
        return None
    for i, token in enumerate(tokens[:-1]):
        if token.startswith(_KEY_TYPES) and "=" not in token.split(",")[0]:
            return tokens[i + 1]
    return None


def forced_line(agent: str, socket: str, public_key: str) -> str:
    """The line for the operator key: only the proxy, no forwarding, no pty."""
    kind, blob = public_key.split()[:2]
    return f'restrict,command="{agent} proxy --socket {socket}" {kind} {blob} ppec-operator'


def _ours(line: str, blob: str) -> bool | None:
    """True: ppec's line for ``blob``; False: another line with ``blob``; None: not it."""
    if key_blob(line) != blob:
        return None
    return PROXY in line and "command=" in line


def _split(text: str) -> list[str]:
    return text.splitlines()


def _join(lines: list[str]) -> str:
    return "".join(f"{ln}\n" for ln in lines)


def conflicts(text: str, blob: str) -> list[int]:
    """1-based numbers of lines that give ``blob`` something other than ppec's proxy."""
    return [n for n, ln in enumerate(_split(text), 1) if _ours(ln, blob) is False]


def with_line(text: str, line: str) -> str:
    """``text`` with ``line`` as the only ppec line for its key, where the first was."""
    blob = key_blob(line)
    assert blob is not None
    bad = conflicts(text, blob)
    if bad:
        raise BadInput(f"authorized_keys line {', '.join(map(str, bad))} gives the operator "
                       f"key a login without ppec's forced command; remove it on the host "
                       f"(ppec edits only the lines it wrote)", code="AUTHORIZED_KEYS_CONFLICT")
    lines = _split(text)
    at = next((i for i, ln in enumerate(lines) if _ours(ln, blob)), len(lines))
    kept = [ln for ln in lines if not _ours(ln, blob)]
    kept.insert(min(at, len(kept)), line)
    return _join(kept)


def without(text: str, blob: str) -> str:
    """``text`` without ppec's lines for ``blob``; others untouched."""
    lines = _split(text)
    kept = [ln for ln in lines if not _ours(ln, blob)]
    return text if len(kept) == len(lines) else _join(kept)
