"""TLS to Temporal: the client the worker, the web app and the commands use speaks mTLS when the settings name
a CA and a client pair, and is refused without its certificate or when it trusts another CA.

The dev server speaks plaintext only, so a TLS terminator that demands a client certificate from the
development CA (as compose's frontend does) stands in front of it; behind it is the real server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from core.client import connect, tls_config
from core.settings import Settings
from runtime.tls import make_dev_ca


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def mtls_front(certs: Path, upstream: str) -> AsyncIterator[str]:
    host, port = upstream.rsplit(":", 1)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certs / "ca.pem")
    ctx.load_cert_chain(certs / "temporal.pem", certs / "temporal.key")
    ctx.verify_mode = ssl.CERT_REQUIRED  # mTLS: no client certificate from this CA, no connection
    ctx.set_alpn_protocols(["h2"])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    make_dev_ca(folder)
    return folder


def _tls(settings: Settings, address: str, certs: Path, **changes) -> Settings:
    fields = {
        "temporal_address": address,
        "temporal_tls_server_ca_cert_path": certs / "ca.pem",
        "temporal_tls_client_cert_path": certs / "client.pem",
        "temporal_tls_client_key_path": certs / "client.key",
        "temporal_tls_server_name": "temporal",
    }
    return settings.model_copy(update=fields | changes)


async def test_the_client_reaches_temporal_over_mtls(client, settings, certs) -> None:
    async with mtls_front(certs, client.service_client.config.target_host) as address:
        secured = await connect(_tls(settings, address, certs))
        assert await secured.service_client.check_health()
        described = await secured.workflow_service.get_system_info(GetSystemInfoRequest())
        assert described.server_version


async def test_without_its_certificate_or_trusting_another_ca_the_client_is_refused(
    client, settings, certs, tmp_path
) -> None:
    other = tmp_path / "other"
    make_dev_ca(other, ca_name="Someone else's CA")
    async with mtls_front(certs, client.service_client.config.target_host) as address:
        no_cert = _tls(settings, address, certs, temporal_tls_client_cert_path=None, temporal_tls_client_key_path=None)
        with pytest.raises(RuntimeError, match="connect|Connection|transport|tls|handshake"):
            await connect(no_cert)
        foreign = _tls(
            settings,
            address,
            certs,
            temporal_tls_client_cert_path=other / "client.pem",
            temporal_tls_client_key_path=other / "client.key",
        )
        with pytest.raises(RuntimeError, match="connect|Connection|transport|tls|handshake"):
            await connect(foreign)
        wrong_ca = _tls(settings, address, certs, temporal_tls_server_ca_cert_path=other / "ca.pem")
        with pytest.raises(RuntimeError, match="connect|Connection|transport|tls|handshake|certificate"):
            await connect(wrong_ca)


def test_tls_settings_are_read_by_their_names_and_refused_when_half_given(settings, certs) -> None:
    assert tls_config(settings) is False  # the embedded dev server: plaintext
    assert tls_config(settings.model_copy(update={"temporal_tls": True})) is True  # the system's CAs
    full = tls_config(_tls(settings, "x:1", certs))
    assert full.client_cert == (certs / "client.pem").read_bytes() and full.domain == "temporal"
    with pytest.raises(ValueError, match="TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"):
        tls_config(_tls(settings, "x:1", certs, temporal_tls_client_key_path=None))
    with pytest.raises(ValueError, match="TEMPORAL_TLS_SERVER_CA_CERT_PATH: cannot read"):
        tls_config(_tls(settings, "x:1", certs, temporal_tls_server_ca_cert_path=certs / "missing.pem"))
    env = {"TEMPORAL_TLS_CLIENT_CERT_PATH": "/c.pem", "TEMPORAL_TLS_SERVER_NAME": "temporal", "HOUSING_ENV_FILE": ""}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        read = Settings()
    assert read.temporal_tls_client_cert_path == Path("/c.pem") and read.temporal_tls_server_name == "temporal"


def test_the_dev_ca_writes_private_keys_and_refuses_to_replace_itself(certs) -> None:
    for key in certs.glob("*.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key.name
    with pytest.raises(FileExistsError, match="ca.pem exists"):
        make_dev_ca(certs)
