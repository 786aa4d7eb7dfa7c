"""The Temporal client: payloads sealed with the configured keys. Everything that talks to Temporal uses it."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from core import metrics
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


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS to the Temporal frontend from the settings (Temporal's own variable names): False for plaintext
    (the embedded dev server), True for TLS trusting the system's CAs, or the CA, client pair and server name
    for mTLS. A client certificate without its key, or a file that cannot be read, is refused here, by name."""
    ca, cert, key = (
        settings.temporal_tls_server_ca_cert_path,
        settings.temporal_tls_client_cert_path,
        settings.temporal_tls_client_key_path,
    )
    if (cert is None) != (key is None):
        raise ValueError("TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH go together (mTLS)")
    wanted = (
        settings.temporal_tls
        or settings.temporal_api_key is not None
        or any((ca, cert, settings.temporal_tls_server_name))
    )
    if not wanted:
        return False
    if ca is None and cert is None and settings.temporal_tls_server_name is None:
        return True

    def read(path, name: str) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as err:
            raise ValueError(f"{name}: cannot read {path.name} ({err.strerror})") from None

    return TLSConfig(
        server_root_ca_cert=read(ca, "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
        client_cert=read(cert, "TEMPORAL_TLS_CLIENT_CERT_PATH"),
        client_private_key=read(key, "TEMPORAL_TLS_CLIENT_KEY_PATH"),
        domain=settings.temporal_tls_server_name,
    )


async def connect(
    settings: Settings, *, lazy: bool = False, keys_required: bool = True, metrics_port: int | None = None
) -> Client:
    """A client whose payloads are sealed with the configured keys, over TLS when the settings ask for it;
    with lazy=True it reaches the server only on its first call. `metrics_port` serves this process's
    Prometheus endpoint (the SDK's metrics and the engine's, core/metrics.py) from the runtime it makes."""
    converter = data_converter(settings, keys_required=keys_required)
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=converter,
        lazy=lazy,
        tls=tls_config(settings),
        api_key=api_key,
        runtime=metrics.runtime(settings.metrics_host, metrics_port),
    )
