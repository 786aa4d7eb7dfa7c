"""The engine's chores from the command line: the migrations, the demo's reference data, the notification
outbox drained now, and the web app served."""

from __future__ import annotations

import typer

from cli.command import command, database, out
from core.logs import configure_logging
from core.settings import Settings, get_settings
from db import outbox
from notify.channels import make_channel
from notify.dispatcher import Dispatcher
from operations.seed import seed_demo as seed
from runtime.migrate import migrate as apply_migrations

app = typer.Typer()


@app.command("migrate")
def migrate() -> None:
    """Apply the database migrations (alembic upgrade head) as the schema owner (DATABASE_OWNER_URL),
    granting the application's role (DATABASE_URL's user) what it needs."""
    settings = get_settings()
    apply_migrations(settings)
    one = settings.owner_role == settings.app_role
    out.print(
        f"migrations applied as {settings.owner_role}; "
        + ("one role owns and runs everything: nothing granted" if one else f"granted to {settings.app_role}")
    )


@app.command("seed-demo")
@command
async def seed_demo(settings: Settings) -> None:
    """Load the demo officers, funding sources and budget receipts (safe to re-run)."""
    async with database(settings) as sessions:
        out.print(await seed(sessions))


@app.command("notify-drain")
@command
async def notify_drain(settings: Settings) -> None:
    """Send every due notification now (the worker does this continuously)."""
    async with database(settings) as sessions:
        channel = make_channel(settings.notify_channel, settings.notifications_path)
        sent = await Dispatcher(sessions, channel, settings).drain()
        async with sessions() as session:
            counts = await outbox.counts(session)
    out.print(f"sent {sent}; outbox now {counts}")


@app.command("web")
def web_cmd(
    host: str | None = typer.Option(None, "--host", help="Default: WEB_HOST (127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="Default: WEB_PORT (8000)"),
) -> None:
    """Serve the web app and the HTTP API (OpenAPI at /docs) on the configured servers."""
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(
        "web.app:create_app",
        factory=True,
        host=host or settings.web_host,
        port=port or settings.web_port,
        log_config=None,
        # HTTPS when a certificate is configured (compose's web service); the embedded stack serves HTTP on
        # the loopback only.
        ssl_certfile=settings.web_tls_cert_path,
        ssl_keyfile=settings.web_tls_key_path,
    )
