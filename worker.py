"""The worker: runs household workflows, their activities and the notification dispatcher.

python worker.py [--no-dispatcher]
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog
import typer

from archive.schedule import ensure_schedule
from archive.source import open_archive
from archive.witness import load_witness
from core import signing
from core.client import connect
from core.codec import EncryptionCodec
from core.logs import configure_logging
from core.settings import get_settings
from db import signing_keys
from db.engine import Sessions, make_engine, make_sessions
from notify.channels import make_channel
from notify.dispatcher import Dispatcher
from runtime.worker import ChannelNotConfigured, check_channel, make_worker

log = structlog.get_logger("worker")
KEY_REFRESH_SECONDS = 60  # a key registered (or retired) in `signing_keys` is seen within a minute


async def trust_signing_keys(sessions: Sessions) -> int:
    """Install the public keys the update validators verify with (they cannot read the database)."""
    async with sessions() as session:
        keys = await signing_keys.load(session)
    signing.trust(keys)
    return len(keys.keys)


async def refresh_signing_keys(sessions: Sessions, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), KEY_REFRESH_SECONDS)
        except TimeoutError:
            try:
                await trust_signing_keys(sessions)
            except Exception as err:  # noqa: BLE001 (keep the keys we have; try again next minute)
                log.warning("signing_keys_not_refreshed", error=repr(err))


async def serve(dispatcher_on: bool, ready_file: Path | None) -> None:
    settings = get_settings()
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    client = await connect(settings, metrics_port=settings.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    keys = await trust_signing_keys(sessions)
    # The witness signs checkpoints after each sweep with a ring the database never holds (none: no witness).
    witness = load_witness(settings, sessions, open_archive(sessions, settings))
    worker = make_worker(client, sessions, settings, witness=witness)
    # The archive sweep's schedule: every worker keeps it (creating it once), so closed histories are copied
    # out of Temporal whichever workers run.
    created = await ensure_schedule(client, settings)
    tasks = [
        asyncio.create_task(worker.run(), name="temporal-worker"),
        asyncio.create_task(refresh_signing_keys(sessions, stop), name="signing-keys"),
    ]
    if dispatcher_on:
        channel = make_channel(settings.notify_channel, settings.notifications_path)
        tasks.append(asyncio.create_task(Dispatcher(sessions, channel, settings).run_forever(stop), name="dispatcher"))
    codec = client.data_converter.payload_codec
    log.info(
        "worker_started",
        task_queue=settings.temporal_task_queue,
        temporal=settings.temporal_address,
        dispatcher=dispatcher_on,
        signing_keys=keys,
        archive_schedule="created" if created else "kept",
        witness_key=witness.ring.active if witness else None,
        payload_key=codec.ring.active if isinstance(codec, EncryptionCodec) else None,  # the id, never the key
    )
    if ready_file:
        ready_file.write_text("ready\n")
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stopper and task.exception():
            log.error("worker_task_failed", task=task.get_name(), error=repr(task.exception()))
    stop.set()
    await worker.shutdown()
    await asyncio.gather(*tasks, return_exceptions=True)
    await engine.dispose()
    log.info("worker_stopped")


def main(
    no_dispatcher: bool = typer.Option(False, "--no-dispatcher", help="Do not drain the notification outbox"),
    ready_file: Path | None = typer.Option(None, help="Written once the worker polls (used by 'stack up')"),
) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        check_channel(settings)  # refuse to start without one, before connecting to anything
    except ChannelNotConfigured as e:
        log.error("worker_refused", error=str(e))
        raise typer.Exit(2) from None
    asyncio.run(serve(not no_dispatcher, ready_file))


if __name__ == "__main__":
    typer.run(main)
