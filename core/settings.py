"""The one configuration object. Defaults match docker-compose.yml as seen from the host."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, DotEnvSettingsSource, SecretsSettingsSource, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # HOUSING_ENV_FILE, read when the settings are made, names another file than .env (the test suite
        # points it at nothing, for itself and the commands it starts).
        env_file = os.environ.get("HOUSING_ENV_FILE", ".env")
        dotenv = DotEnvSettingsSource(settings_cls, env_file=env_file, env_file_encoding="utf-8")
        # SECRETS_DIR (compose: /run/secrets): a setting may also come from a file of that folder named as the
        # setting (database_url, database_owner_url, temporal_api_key), so no password sits in the environment.
        secrets_dir = os.environ.get("SECRETS_DIR")
        files = SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir) if secrets_dir else file_secret_settings
        return init_settings, env_settings, dotenv, files

    # Same names as docker-compose.yml's environment blocks.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "households"
    temporal_ui_url: str = "http://127.0.0.1:8080"
    # TLS to Temporal, under the names Temporal's CLI and SDK read (envconfig): a server CA to trust, a client
    # certificate and key for mTLS, the name the server's certificate carries, or an API key (Temporal Cloud).
    # Any of them switches TLS on; TEMPORAL_TLS=true alone trusts the system's CAs.
    temporal_tls: bool = False
    temporal_tls_server_ca_cert_path: Path | None = None
    temporal_tls_client_cert_path: Path | None = None
    temporal_tls_client_key_path: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: SecretStr | None = None
    # Prometheus metrics (the SDK's runtime telemetry and the engine's own counters, core/metrics.py), served
    # at http://METRICS_HOST:<port>/metrics: METRICS_PORT for a worker (the embedded stack's worker n takes
    # METRICS_PORT + n - 1), WEB_METRICS_PORT for the web app. Unset: no endpoint.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    web_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # How long Temporal keeps a closed workflow's history. The stack sets it on the namespace (embedded and
    # compose); the archive sweep copies every closed history into `workflow_histories` long before that.
    temporal_retention_days: int = Field(default=30, ge=1, le=3650)
    # The archive sweep (archive/sweep.py): a Temporal schedule the worker keeps, every this many seconds.
    archive_interval_seconds: int = Field(default=300, ge=10, le=86400)
    # The application's login (worker, web app, commands): a role that owns nothing and holds only the
    # privileges migration 0007 grants it (no UPDATE/DELETE on the audit log or the ledger's transfers).
    database_url: str = "postgresql://housing_app:housing_app@127.0.0.1:5432/housing"
    # The schema owner's login, for migrations only (`starter.py migrate`, `stack up`); never given to the
    # worker or the web app. When only DATABASE_URL is set, migrations run as DATABASE_URL's role (one role
    # owning everything, as before 0007: then nothing is granted and the application is the owner).
    database_owner_url: str = "postgresql://housing:housing@127.0.0.1:5432/housing"

    # Embedded stack (used when TEMPORAL_ADDRESS / DATABASE_URL are not set explicitly).
    state_dir: Path = ROOT / ".state"
    # The embedded stack serves DATABASE_URL and TEMPORAL_ADDRESS itself even when they are set, on the host
    # and port they name: a second stack of its own beside the developer's (bench/chaos.py runs one).
    embedded_stack: bool = False
    # fsync, synchronous_commit and full_page_writes of the embedded PostgreSQL. Off only for a throwaway
    # cluster in the test suite: off, a crash loses commits the engine has already reported.
    pg_durable: bool = True

    # Notification outbox dispatcher.
    notify_channel: str = Field(default="file", description="file | log")
    notify_file: Path | None = None
    notify_batch_size: int = 200
    notify_poll_seconds: float = 1.0
    notify_max_attempts: int = 8

    # Payment channel. No default: the worker refuses to start without one ('stack up', the demo and the
    # tests set it). "bank": the bank at BANK_URL (the simulated one is `python -m finance.bank`), which calls
    # back PAYMENT_CALLBACK_URL (default: the web app's /api/channel/callback) signed with the shared secret.
    payment_channel: str = Field(default="", description="bank (the HTTP bank at BANK_URL)")
    bank_url: str = "http://127.0.0.1:8070"
    payment_callback_url: str = ""
    payment_callback_secret: str = ""
    payment_callback_secret_file: Path | None = None
    # The simulated bank's flags when 'stack up' starts it: it answers after a delay and fails this share
    # of first attempts.
    payment_channel_user: str = "kenh.thanhtoan"  # the system user that records the channel's answers
    payment_delay_seconds: float = 0.5
    payment_fail_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    # Payload encryption (core/codec.py). PAYLOAD_KEYS inline ("id:base64-key" per comma, first active) wins
    # over the key file; the embedded stack creates the file in the state folder on first start.
    payload_encryption: bool = True
    payload_keys: str = ""
    payload_keys_file: Path | None = None

    # Signed action assertions (core/signing.py). A front door (web app, command line) signs with the ring
    # SIGNING_KEYS inline or the file (the embedded stack creates it); the simulated bank signs its answers
    # with its own ring. The worker holds neither: it verifies with the public keys in `signing_keys`.
    signing_keys: str = ""
    signing_keys_file: Path | None = None
    bank_signing_keys_file: Path | None = None
    # The witness (archive/witness.py): the worker signs checkpoints of the audit chains' heads and of the
    # archive with this ring, which the database never holds; each checkpoint is also written to
    # WITNESS_DIR (with the public key, witness-key.pub) for the operator to publish. `audit verify` checks
    # against the public key in WITNESS_DIR (or WITNESS_PUBLIC_KEY_FILE), never against the database.
    witness_keys_file: Path | None = None
    witness_dir: Path | None = None
    witness_public_key_file: Path | None = None
    witness_interval_hours: float = Field(default=24.0, gt=0)  # a checkpoint at least this often
    # The key shared with the other programmes to match CCCD by keyed hash (core/matching.py): MATCH_KEY_PATH
    # names its file (default: match-key in the state folder, which the embedded stack creates; `keys match-key`).
    match_key_file: Path | None = Field(default=None, validation_alias=AliasChoices("match_key_path", "match_key_file"))
    # The Temporal Web UI's origin, allowed (CORS) to call the web app's /codec endpoints.
    codec_cors_origins: str = ""
    # An officer's API token for scripts that run `starter.py ... --as USER` without a prompt.
    housing_token: str = ""

    db_pool_size: int = 10
    # Worker processes 'stack up' starts on the one task queue. One Python process gives at most one core,
    # so a machine with more cores than that gets more workers; only the first drains the outbox.
    worker_processes: int = Field(default=1, ge=1, le=64)

    # The web app. Cookies are sent over HTTPS only unless switched off for plain-HTTP development
    # (browsers treat http://localhost as secure, so the demo keeps it on).
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_secure_cookie: bool = True
    # The web app's own HTTPS (compose publishes it beyond the host): a certificate and its key.
    web_tls_cert_path: Path | None = None
    web_tls_key_path: Path | None = None
    # The largest request body the web app reads (a step's form with its attachments, 10 MB each).
    web_max_request_bytes: int = Field(default=32 * 2**20, ge=2**16)
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
        return _asyncpg(self.database_url, "DATABASE_URL")

    @property
    def owner_url(self) -> str:
        """The URL migrations connect with: DATABASE_OWNER_URL, unless only DATABASE_URL was set."""
        if self.explicitly_set("database_url") and not self.explicitly_set("database_owner_url"):
            return self.database_url
        return self.database_owner_url

    @property
    def owner_asyncpg_url(self) -> str:
        return _asyncpg(self.owner_url, "DATABASE_OWNER_URL")

    @property
    def app_role(self) -> str:
        """The role the application logs in as (DATABASE_URL's user), to which the migrations grant."""
        return _user(self.database_url)

    @property
    def owner_role(self) -> str:
        return _user(self.owner_url)

    @property
    def payload_keys_path(self) -> Path:
        return self.payload_keys_file or self.state_dir / "payload-keys"

    @property
    def signing_keys_path(self) -> Path:
        return self.signing_keys_file or self.state_dir / "signing-keys"

    @property
    def bank_signing_keys_path(self) -> Path:
        return self.bank_signing_keys_file or self.state_dir / "bank-signing-keys"

    @property
    def witness_keys_path(self) -> Path:
        return self.witness_keys_file or self.state_dir / "witness-keys"

    @property
    def match_key_path(self) -> Path:
        return self.match_key_file or self.state_dir / "match-key"

    @property
    def witness_path(self) -> Path:
        """Where checkpoints are published (a folder the operator copies out)."""
        return self.witness_dir or self.state_dir / "witness"

    @property
    def witness_public_key_path(self) -> Path:
        return self.witness_public_key_file or self.witness_path / "witness-key.pub"

    @property
    def codec_origins(self) -> list[str]:
        """Origins whose pages may call /codec (default: the Temporal Web UI's)."""
        found = [o.strip().rstrip("/") for o in self.codec_cors_origins.split(",") if o.strip()]
        return found or [self.temporal_ui_url.rstrip("/")]

    @property
    def callback_secret_path(self) -> Path:
        return self.payment_callback_secret_file or self.state_dir / "bank-callback-secret"

    def callback_secret(self) -> str:
        """The secret shared with the bank (inline, else the file; empty when neither is there)."""
        if self.payment_callback_secret:
            return self.payment_callback_secret
        path = self.callback_secret_path
        return path.read_text().strip() if path.exists() else ""

    @property
    def callback_url(self) -> str:
        return self.payment_callback_url or f"http://{self.web_host}:{self.web_port}/api/channel/callback"

    @property
    def notifications_path(self) -> Path:
        return self.notify_file or self.state_dir / "notifications.jsonl"


def _asyncpg(url: str, name: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"{name} must be a postgresql:// URL, got {url!r}")


def _user(url: str) -> str:
    user = urlsplit(url).username
    if not user:
        raise ValueError("a database URL must name its user (the role it logs in as)")
    return unquote(user)


@lru_cache
def get_settings() -> Settings:
    return Settings()
