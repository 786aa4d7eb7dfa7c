"""The worker: runs household workflows, their activities and the notification dispatcher.

    python worker.py [--no-dispatcher]
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog
import typer

from core.codec import EncryptionCodec
from core.logs import configure_logging
from core.settings import get_settings
from core.temporal import ChannelNotConfigured, check_channel, connect, make_worker
from db.engine import make_engine, make_sessions
from notify.channels import make_channel
from notify.dispatcher import Dispatcher

log = structlog.get_logger("worker")


async def serve(dispatcher_on: bool, ready_file: Path | None) -> None:
    settings = get_settings()
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    worker = make_worker(client, sessions, settings)
    tasks = [asyncio.create_task(worker.run(), name="temporal-worker")]
    if dispatcher_on:
        channel = make_channel(settings.notify_channel, settings.notifications_path)
        tasks.append(asyncio.create_task(Dispatcher(sessions, channel, settings).run_forever(stop), name="dispatcher"))
    codec = client.data_converter.payload_codec
    log.info(
        "worker_started",
        task_queue=settings.temporal_task_queue,
        temporal=settings.temporal_address,
        dispatcher=dispatcher_on,
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
