"""The one format of a key ring file: `id:key` per line (or comma), the key 32 bytes in URL-safe base64,
the first one active, `#` comments; written readable by its owner only. The payload keys (core/codec.py)
and the signing keys (core/signing.py) are both kept this way."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_BYTES = 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    """URL-safe base64, strictly: a character outside the alphabet is an error, not skipped."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError) as err:
        raise ValueError(f"not URL-safe base64: {err}") from None


def parse(text: str, *, where: str, kind: str, error: type[Exception]) -> dict[str, bytes]:
    """Keys by id, in file order (the first is the active one); `error(message)` names the entry at fault.
    `kind` says what the keys are for, in that message ("AES-256", "Ed25519")."""
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    entries = [e.strip() for e in re.split(r"[,\n]", "\n".join(lines)) if e.strip()]
    if not entries:
        raise error(f"{where}: no key (expected lines 'id:base64-key', the first one active)")
    keys: dict[str, bytes] = {}
    for n, entry in enumerate(entries, start=1):
        key_id, sep, encoded = entry.partition(":")
        if not sep or not ID.match(key_id):
            raise error(f"{where}, entry {n}: expected 'id:base64-key' with an id of letters, digits, '.-_'")
        try:
            key = unb64(encoded)
        except ValueError:
            raise error(f"{where}, key {key_id!r}: not base64") from None
        if len(key) != KEY_BYTES:
            raise error(f"{where}, key {key_id!r}: {len(key)} bytes, {kind} needs {KEY_BYTES}")
        if key_id in keys:
            raise error(f"{where}: key id {key_id!r} appears twice")
        keys[key_id] = key
    return keys


def dump(active: str, keys: dict[str, bytes]) -> str:
    ordered = [active] + [k for k in keys if k != active]
    return "".join(f"{k}:{b64(keys[k])}\n" for k in ordered)


def write_secret(path: Path, text: str) -> None:
    """Write `text` readable by its owner only, replacing the file in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)
