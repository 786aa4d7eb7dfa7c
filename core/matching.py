"""Matching households across programmes without sharing their CCCD numbers: the keyed hash of a CCCD.

Programmes that hold the same key (the match key, exchanged between them once, never with the lists) can each
hash their beneficiaries' CCCD with HMAC-SHA256 and hand over only the hashes: equal hashes are the same
citizen, and without the key a hash cannot be turned back into the number by trying the 10^12 possible
CCCDs (a plain SHA-256 could be, in hours). The number is normalised first, so "0201 2345 6789" and
"020123456789" give the same hash on both sides.

The key file holds one URL-safe base64 key (`#` comments allowed), read as the other secret files are
(core/keyfiles.py) and written readable by its owner only. Changing the key changes every hash: the lists
already exchanged would match nothing, so the key is made once and kept, like the witness's ring."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import uuid
from pathlib import Path

from core.keyfiles import b64, unb64, write_secret

MIN_KEY_BYTES = 32
NEW_KEY_BYTES = 32
CCCD = re.compile(r"^[0-9]{12}$")
HMAC_HEX = re.compile(r"^[0-9a-f]{64}$")


class MatchKeyError(ValueError):
    """The match key file is missing, malformed or too short (the message names the file)."""


def normalise_cccd(cccd: str) -> str:
    """The CCCD as 12 ASCII digits (spaces, as lists often group the number, removed); ValueError otherwise.
    Eleven digits is said as such: a spreadsheet that read the column as a number dropped the leading zero."""
    text = "".join(str(cccd).split())
    if CCCD.match(text):
        return text
    if re.fullmatch(r"[0-9]{11}", text):
        raise ValueError("11 digits, a CCCD has 12 (leading zero lost? keep the column as text)")
    raise ValueError("a CCCD is exactly 12 digits")


def digest(key: bytes, cccd: str) -> str:
    """HMAC-SHA256 of the normalised CCCD under `key`, as 64 lowercase hex digits."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a match key has at least {MIN_KEY_BYTES} bytes")
    return hmac.new(key, normalise_cccd(cccd).encode("ascii"), hashlib.sha256).hexdigest()


def normalise_hmac(text: str) -> str:
    """A keyed hash another programme sent, as 64 lowercase hex digits; ValueError otherwise."""
    value = str(text).strip().lower()
    if not HMAC_HEX.match(value):
        raise ValueError("a keyed hash is 64 hexadecimal digits (HMAC-SHA256)")
    return value


def read_key(path: Path) -> bytes:
    """The key in the file: one URL-safe base64 line of at least 32 bytes; MatchKeyError names the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise MatchKeyError(f"{Path(path).name}: cannot read the match key ({err.strerror or err})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise MatchKeyError(f"{Path(path).name}: expected one line with the match key, found {len(lines)}")
    try:
        key = unb64(lines[0])
    except ValueError:
        raise MatchKeyError(f"{Path(path).name}: the match key is not URL-safe base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise MatchKeyError(f"{Path(path).name}: the match key has {len(key)} bytes, at least {MIN_KEY_BYTES} needed")
    return key


def key_if_present(path: Path) -> bytes | None:
    """The key when its file exists (an import keys the households it registers with it), else None: a stack
    with no registry yet imports as before, and `registry key-households` keys those households later."""
    return read_key(path) if Path(path).exists() else None


def new_key() -> str:
    """The text of a new key file (a fresh 32-byte key), to write with core.keyfiles.write_secret."""
    return (
        "# The programmes' shared key for matching CCCD by keyed hash (HMAC-SHA256). Give it only to the\n"
        "# programmes that exchange lists with this one; a new key matches none of the lists made before.\n"
        f"{b64(secrets.token_bytes(NEW_KEY_BYTES))}\n"
    )


def ensure_key(path: Path) -> bool:
    """Create the key file (owner-only) when it is missing; True if it was made. A file there is never
    replaced (a new key would match none of the lists exchanged); two processes at once end with one key."""
    path = Path(path)
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}-{uuid.uuid4().hex}.new")
    write_secret(tmp, new_key())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
