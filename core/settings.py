"""The one configuration object. Defaults match docker-compose.yml as seen from the host."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Same names as docker-compose.yml's environment blocks.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "households"
    temporal_ui_url: str = "http://127.0.0.1:8080"
    database_url: str = "postgresql://housing:housing@127.0.0.1:5432/housing"

    # Embedded stack (used when TEMPORAL_ADDRESS / DATABASE_URL are not set explicitly).
    state_dir: Path = ROOT / ".state"

    # Notification outbox dispatcher.
    notify_channel: str = Field(default="file", description="file | log")
    notify_file: Path | None = None
    notify_batch_size: int = 200
    notify_poll_seconds: float = 1.0
    notify_max_attempts: int = 8

    # Payment channel. The simulated bank answers after a delay and fails this share of first attempts.
    payment_channel: str = Field(default="simulated", description="simulated (the only channel shipped)")
    payment_channel_user: str = "kenh.thanhtoan"  # the system user that records the channel's answers
    payment_delay_seconds: float = 0.5
    payment_fail_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    # Payload encryption (core/codec.py). PAYLOAD_KEYS inline ("id:base64-key" per comma, first active) wins
    # over the key file; the embedded stack creates the file in the state folder on first start.
    payload_encryption: bool = True
    payload_keys: str = ""
    payload_keys_file: Path | None = None

    db_pool_size: int = 10
    # Worker processes 'stack up' starts on the one task queue. One Python process gives at most one core,
    # so a machine with more cores than that gets more workers; only the first drains the outbox.
    worker_processes: int = Field(default=1, ge=1, le=64)

    # The web app. Cookies are sent over HTTPS only unless switched off for plain-HTTP development
    # (browsers treat http://localhost as secure, so the demo keeps it on).
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_secure_cookie: bool = True
    # Test each pooled connection with a round trip before use. Off by default: an activity that meets a
    # connection PostgreSQL has dropped fails and is retried by Temporal, and the ping costs three round
    # trips (begin, select, rollback) on every checkout, about a fifth of a transition's SQL traffic.
    db_pre_ping: bool = False
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON unless stderr is a terminal

    def explicitly_set(self, name: str) -> bool:
        return name in self.model_fields_set

    @property
    def asyncpg_url(self) -> str:
        """SQLAlchemy URL with the asyncpg driver, whatever scheme the operator wrote."""
        url = self.database_url
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix):]
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url!r}")

    @property
    def payload_keys_path(self) -> Path:
        return self.payload_keys_file or self.state_dir / "payload-keys"

    @property
    def notifications_path(self) -> Path:
        return self.notify_file or self.state_dir / "notifications.jsonl"


@lru_cache
def get_settings() -> Settings:
    return Settings()
