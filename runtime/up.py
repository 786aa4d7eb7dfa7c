"""Bringing the embedded stack up, piece by piece: keys on first start, PostgreSQL, migrations, Temporal with
its search attributes and retention, the bank, the workers and the web app. Each step says what it did."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import timedelta

from archive.schedule import set_retention
from archive.witness import ensure_witness_keys
from core.client import connect
from core.codec import new_ring, write_ring
from core.formatting import days
from core.matching import ensure_key as ensure_match_key
from core.settings import Settings
from operations.signing_keys import ensure_stack_keys
from runtime.migrate import migrate as apply_migrations
from runtime.stack import Stack
from runtime.worker import ensure_search_attributes


def bring_up(stack: Stack, worker: bool) -> Iterator[str]:
    """Start every piece not running yet, yielding a line on what each is doing (`stack up`, and the demo's
    first part). Raises StackError when a piece cannot start."""
    yield from _ensure_payload_keys(stack.settings)
    if stack.embedded_db:
        started = stack.postgres().start()
        yield f"PostgreSQL  {'started' if started else 'running'} at {stack.settings.database_url}"
    else:
        yield f"PostgreSQL  external at {stack.settings.database_url}"
    apply_migrations(stack.settings)  # as the owner; the worker and web app get the application's login
    yield (
        f"Migrations  applied (alembic upgrade head) as {stack.settings.owner_role}; the application "
        f"connects as {stack.settings.app_role}"
    )
    for said in asyncio.run(ensure_stack_keys(stack.settings)):
        yield f"Keys        {said}"
    witness = ensure_witness_keys(stack.settings)
    yield (
        f"Keys        witness key {witness.active}: checkpoints and its public key published in "
        f"{stack.settings.witness_path.name}/ in the state folder"
    )
    if ensure_match_key(stack.settings.match_key_path):  # other programmes' lists are matched with it
        yield f"Keys        match key created ({stack.settings.match_key_path.name}; share it only with the programmes)"
    if stack.embedded_temporal:
        started = stack.temporal().start()
        yield (
            f"Temporal    {'started' if started else 'running'} at {stack.settings.temporal_address}, "
            f"Web UI {stack.settings.temporal_ui_url}"
        )
    else:
        yield f"Temporal    external at {stack.settings.temporal_address}"

    async def register_search_attributes() -> list[str]:
        return await ensure_search_attributes(await connect(stack.settings), stack.settings.temporal_namespace)

    added = asyncio.run(register_search_attributes())
    if added:
        yield f"Temporal    search attributes registered: {', '.join(added)}"

    async def keep_histories() -> timedelta:
        client = await connect(stack.settings, keys_required=False)
        keep = timedelta(days=stack.settings.temporal_retention_days)
        return await set_retention(client, stack.settings.temporal_namespace, keep)

    yield (
        f"Temporal    retention {days(asyncio.run(keep_histories()))} on namespace "
        f"{stack.settings.temporal_namespace} (TEMPORAL_RETENTION_DAYS); closed histories are archived "
        f"every {stack.settings.archive_interval_seconds} s"
    )
    yield from _ensure_callback_secret(stack.settings)
    if stack.embedded_bank:
        bank = stack.bank()
        started = bank.start(stack.env())
        yield (
            f"Bank        {'started' if started else 'running'} at {bank.url} (simulated; its book in "
            "bank/ in the state folder)"
        )
    else:
        yield f"Bank        external at {stack.settings.bank_url}"
    if worker:
        for each in stack.workers():
            started = each.start(stack.env())
            yield f"Worker      {'started' if started else 'running'} (log: {each.log_file.name} in the state folder)"
        web = stack.web()
        started = web.start(stack.env())
        yield f"Web app     {'started' if started else 'running'} at {web.url} (API docs {web.url}/docs)"


def _ensure_payload_keys(settings: Settings) -> Iterator[str]:
    """The embedded stack's first start creates its payload key; configured keys are left alone."""
    path = settings.payload_keys_path
    if settings.payload_keys or not settings.payload_encryption or path.exists():
        return
    ring = new_ring()
    write_ring(path, ring)
    yield (
        f"Keys        payload key {ring.active} created ({path.name} in the state folder; keep a copy: "
        "without it the histories cannot be read)"
    )


def _ensure_callback_secret(settings: Settings) -> Iterator[str]:
    """The embedded stack's first start creates the secret the bank signs its callbacks with."""
    path = settings.callback_secret_path
    if settings.payment_callback_secret or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secrets.token_urlsafe(32) + "\n")
    yield f"Keys        payment callback secret created ({path.name} in the state folder)"
