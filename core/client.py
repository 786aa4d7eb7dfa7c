"""The Temporal client: payloads sealed with the configured keys. Everything that talks to Temporal uses it."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.converter import DataConverter

from core.codec import KeyRing, PayloadKeyError, read_ring, with_codec
from core.converter import DATA_CONVERTER
from core.settings import Settings


def key_ring(settings: Settings, *, required: bool = True) -> KeyRing | None:
    """The payload keys from the settings. Missing keys are an error unless encryption is switched off or
    the caller can work on ciphertext (`required=False`: the auditors' tools without the key)."""
    if settings.payload_keys:
        return KeyRing.parse(settings.payload_keys)
    path = settings.payload_keys_path
    if path.exists():
        return read_ring(path)
    if required and settings.payload_encryption:
        raise PayloadKeyError(
            f"no payload key: set PAYLOAD_KEYS or PAYLOAD_KEYS_FILE, or create one with "
            f"'python starter.py keys new' (it writes {path.name} in the state folder)"
        )
    return None


def data_converter(settings: Settings, *, keys_required: bool = True) -> DataConverter:
    return with_codec(DATA_CONVERTER, key_ring(settings, required=keys_required))


async def connect(settings: Settings, *, lazy: bool = False, keys_required: bool = True) -> Client:
    """A client whose payloads are sealed with the configured keys; with lazy=True it reaches the server
    only on its first call."""
    converter = data_converter(settings, keys_required=keys_required)
    return await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace, data_converter=converter, lazy=lazy
    )
