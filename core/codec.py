"""Personal data is encrypted before it reaches Temporal: an AES-GCM payload codec with rotating keys.

Every payload the client or the worker sends (workflow input with the head of household's name and CCCD,
update arguments, activity inputs and results, query answers) is serialised as usual, then sealed with
AES-256-GCM under the active key. The payload's metadata says `binary/encrypted` and names the key id, so
a key that has been rotated out of active use still opens the payloads it sealed. Search attributes do not
go through codecs; that is why they carry only stage, place, group and support type.

Keys come from configuration (`PAYLOAD_KEYS`, or the file `PAYLOAD_KEYS_FILE`): one `id:key` per line or
comma, the key 32 bytes in URL-safe base64, the first one active. Rotating is writing a new first line.

The engine (worker and clients) opens only what a key of its ring sealed. Anything else, plain JSON from
someone who reached the Temporal frontend, or a payload under a key it does not hold or that was altered,
becomes a `binary/refused` payload that the payload converter refuses when it is read (core/converter.py):
raising here would fail the whole workflow task and wedge the household. The auditors' readers open histories
written before encryption was switched on, so their codec accepts plain payloads (`accept_plaintext`) and
says which key it lacks (PayloadKeyError) instead of refusing.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, PayloadCodec

from core import keyfiles
from core.converter import MISSING_KEY, REFUSED, REFUSED_REASON, SealedFailureConverter

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class PayloadKeyError(Exception):
    """A key ring that cannot be read, or a payload sealed with a key the ring does not hold."""


@dataclasses.dataclass(frozen=True)
class KeyRing:
    """Keys by id; `active` seals new payloads, every key opens what it sealed."""

    active: str
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, text: str, *, where: str = "PAYLOAD_KEYS") -> KeyRing:
        keys = keyfiles.parse(text, where=where, kind="AES-256", error=PayloadKeyError)
        return cls(active=next(iter(keys)), keys=keys)

    def dump(self) -> str:
        return keyfiles.dump(self.active, self.keys)

    def rotated(self, key_id: str | None = None) -> KeyRing:
        """A ring whose new active key is fresh; the old keys stay to open what they sealed."""
        key_id = key_id or new_key_id()
        if key_id in self.keys:
            raise PayloadKeyError(f"key id {key_id!r} is already in the ring")
        return KeyRing(active=key_id, keys={key_id: AESGCM.generate_key(bit_length=256), **self.keys})


def new_key_id() -> str:
    return f"k{datetime.now(UTC):%Y%m%d%H%M%S}"


def new_ring(key_id: str | None = None) -> KeyRing:
    key_id = key_id or new_key_id()
    return KeyRing(active=key_id, keys={key_id: AESGCM.generate_key(bit_length=256)})


def read_ring(path: Path) -> KeyRing:
    return KeyRing.parse(path.read_text(encoding="utf-8"), where=str(path.name))


def write_ring(path: Path, ring: KeyRing) -> None:
    """Write the ring readable by its owner only, replacing the file in one step."""
    keyfiles.write_secret(path, ring.dump())


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over the serialised payload; the key id is in the metadata and bound as associated data.
    With `accept_plaintext` (the auditors' readers only) plain payloads pass and a payload that does not open
    raises PayloadKeyError; without it (the engine) both are handed on refused."""

    def __init__(self, ring: KeyRing, *, accept_plaintext: bool = False) -> None:
        self.ring = ring
        self.accept_plaintext = accept_plaintext
        self._ciphers = {k: AESGCM(v) for k, v in ring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id = self.ring.active
        cipher = self._ciphers[key_id]
        sealed = []
        for p in payloads:
            nonce = secrets.token_bytes(NONCE_BYTES)
            data = nonce + cipher.encrypt(nonce, p.SerializeToString(), key_id.encode())
            sealed.append(Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=data))
        return sealed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._open(p) for p in payloads]

    def _open(self, p: Payload) -> Payload:
        if p.metadata.get("encoding") != ENCODING:
            if self.accept_plaintext:
                return p  # written before encryption was switched on: plain JSON
            return refused("not sealed: plain input is not accepted")
        key_id = p.metadata.get(KEY_ID, b"").decode()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            return self._not_opened(
                f"payload sealed with key {key_id!r}, which the key ring does not hold", missing_key=True
            )
        try:
            plain = cipher.decrypt(p.data[:NONCE_BYTES], p.data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            return self._not_opened(
                f"payload sealed with key {key_id!r} does not open: it was altered, or sealed with another key"
            )
        return Payload.FromString(plain)

    def _not_opened(self, reason: str, *, missing_key: bool = False) -> Payload:
        if self.accept_plaintext:
            raise PayloadKeyError(reason)  # a reader says which key it lacks, and goes on
        return refused(reason, missing_key=missing_key)


def refused(reason: str, *, missing_key: bool = False) -> Payload:
    """What the engine's codec hands on instead of a payload it will not open: refused when read. A key id the
    ring does not hold is marked: that is most often a process started without a rotated-in key, which the
    operator fixes, so reading it fails the workflow task (retried) instead of the workflow."""
    metadata = {"encoding": REFUSED.encode(), REFUSED_REASON: reason.encode()}
    if missing_key:
        metadata[MISSING_KEY] = b"1"
    return Payload(metadata=metadata)


def is_sealed(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


def sealed_key_ids(payloads: Iterable[Payload]) -> set[str]:
    return {p.metadata.get(KEY_ID, b"").decode() for p in payloads if is_sealed(p)}


def with_codec(converter: DataConverter, ring: KeyRing | None) -> DataConverter:
    """`converter` sealing payloads and failure messages with `ring` (unchanged without one); the engine's
    side, refusing plain payloads (`for_reading` gives the auditors')."""
    if ring is None:
        return converter
    return dataclasses.replace(
        converter, payload_codec=EncryptionCodec(ring), failure_converter_class=SealedFailureConverter
    )


def for_reading(converter: DataConverter) -> DataConverter:
    """The auditors' side of `converter`: plain payloads from before encryption accepted, a payload that does
    not open named (PayloadKeyError) rather than refused."""
    codec = converter.payload_codec
    if isinstance(codec, EncryptionCodec) and not codec.accept_plaintext:
        return dataclasses.replace(converter, payload_codec=EncryptionCodec(codec.ring, accept_plaintext=True))
    return converter
