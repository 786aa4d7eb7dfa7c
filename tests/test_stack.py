"""The embedded stack: a running piece is found and reused, never started twice; env prints exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from core.settings import ROOT, Settings
from runtime.stack import DURABILITY, EmbeddedPostgres, EmbeddedTemporal, Stack, free_port, port_open
from tests.conftest import TEST_KEYS_FILE, wait_until


def test_the_temporal_dev_server_is_reused_not_started_twice(tmp_path):
    server = EmbeddedTemporal(tmp_path / "temporal", "127.0.0.1", free_port(), ui_port=None)
    try:
        assert server.start() is True
        pid = server.pid_file.read_text()
        assert server.running() and port_open(server.host, server.port)
        assert server.start() is False, "a running server is reused"
        assert server.pid_file.read_text() == pid
        assert (tmp_path / "temporal" / "temporal.db").exists(), "state persists to a SQLite file"
        assert "--search-attribute" in server.command() and "Stage=Keyword" in server.command()
    finally:
        assert server.stop() is True
    assert not server.running()
    assert server.stop() is False


OLD_NON_DURABLE = "\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"


def test_the_embedded_postgres_is_durable_and_corrects_a_folder_initialised_without_fsync(tmp_path):
    """A fresh cluster keeps every acknowledged commit; a folder an older version set up with fsync off is
    corrected when it starts, and a running one on the next start (the settings are reloaded)."""
    pg = EmbeddedPostgres(tmp_path / "pg", "127.0.0.1", free_port(), "housing", "housing", "housing")
    conf = pg.data_dir / "postgresql.conf"

    def shown() -> dict[str, str]:
        return {name: pg.psql(f"SHOW {name}") for name in DURABILITY}

    durable = dict.fromkeys(DURABILITY, "on")
    try:
        assert pg.start() is True
        assert shown() == durable
        pg.stop()
        conf.write_text(conf.read_text() + OLD_NON_DURABLE)  # as the stack wrote it before
        assert pg.start() is True
        assert shown() == durable
        assert "fsync = off" not in conf.read_text()
        conf.write_text(conf.read_text() + OLD_NON_DURABLE)
        pg.psql("SELECT pg_reload_conf()")
        assert shown() == dict.fromkeys(DURABILITY, "off"), "the old lines took effect while running"
        assert pg.start() is False, "a running server is reused"
        assert wait_for_settings(shown, durable)
        assert re.findall(r"^fsync = .*$", conf.read_text(), re.M) == ["fsync = on"], "replaced, never stacked"
    finally:
        pg.destroy()


async def test_every_acknowledged_commit_survives_a_postmaster_killed_mid_write(tmp_path):
    """Commits acknowledged one by one, then `kill -9` of the postmaster while a writer is still going:
    the restart (stale postmaster.pid, backends still letting go) recovers every acknowledged row."""
    import asyncio
    import signal

    import asyncpg

    pg = EmbeddedPostgres(tmp_path / "pg", "127.0.0.1", free_port(), "housing", "housing", "housing")
    try:
        pg.start()
        conn = await asyncpg.connect(pg.url)
        await conn.execute("CREATE TABLE acked (n int PRIMARY KEY)")
        acked = 0
        busy = asyncio.Event()

        async def write() -> None:
            nonlocal acked
            while True:
                await conn.execute("INSERT INTO acked VALUES ($1)", acked + 1)
                acked += 1
                if acked == 300:
                    busy.set()

        writer = asyncio.create_task(write())
        await asyncio.wait_for(busy.wait(), 60)
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        try:
            await asyncio.wait_for(writer, 30)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError):
            pass  # the writer's connection is gone with the server
        assert not pg.running() and (pg.data_dir / "postmaster.pid").exists(), "a stale pid file is left"
        assert pg.start() is True
        conn2 = await asyncpg.connect(pg.url)
        assert await conn2.fetchval("SELECT count(*) FROM acked WHERE n <= $1", acked) == acked
        await conn2.close()
    finally:
        pg.destroy()


def test_a_pid_file_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
    """A pid recorded before a reboot or long ago may since belong to some other program: that program
    began after the pid file was written, so the stack does not take it for its own piece."""
    from runtime.stack import _pid_alive

    pid_file = tmp_path / "worker.pid"
    pid_file.write_text(str(os.getpid()))
    assert _pid_alive(pid_file) == os.getpid()
    an_hour_ago = pid_file.stat().st_mtime - 3600
    os.utime(pid_file, (an_hour_ago, an_hour_ago))
    assert _pid_alive(pid_file) is None


def test_only_an_explicit_setting_makes_the_embedded_postgres_non_durable(tmp_path):
    assert Stack(Settings(state_dir=tmp_path)).postgres().durable is True
    assert Stack(Settings(state_dir=tmp_path, pg_durable=False)).postgres().durable is False
    assert "fsync = off" in EmbeddedPostgres(tmp_path, "h", 1, "u", "p", "d", durable=False).settings_block()


def wait_for_settings(shown, expected: dict[str, str], seconds: float = 10) -> bool:
    """pg_reload_conf signals the postmaster; a new session sees the settings once it has re-read them."""
    import time

    deadline = time.monotonic() + seconds
    while shown() != expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_external_servers_are_not_started(tmp_path):
    s = Settings(
        database_url="postgresql://u:p@db.example:5432/x", temporal_address="temporal.example:7233", state_dir=tmp_path
    )
    stack = Stack(s)
    assert not stack.embedded_db and not stack.embedded_temporal
    assert Stack(Settings(state_dir=tmp_path)).embedded_db


def test_status_names_each_piece_that_is_down_and_leaves_external_servers_unjudged(tmp_path):
    s = Settings(
        database_url="postgresql://u:p@db.example:5432/x",
        temporal_address="temporal.example:7233",
        bank_url="http://bank.example:8070",
        state_dir=tmp_path,
    )
    stack = Stack(s)
    assert [(p.name, p.state) for p in stack.pieces()] == [
        ("PostgreSQL", "external"),
        ("Temporal", "external"),
        ("bank", "external"),
        ("worker", "stopped"),
        ("web app", "stopped"),
    ]
    assert stack.down() == ["worker", "web app"] and stack.down(with_processes=False) == []
    assert Stack(Settings(state_dir=tmp_path)).down(with_processes=False) == ["PostgreSQL", "Temporal", "bank"]


def test_stack_env_prints_shell_exports():
    env = {**os.environ, "DATABASE_URL": "postgresql://a:b@h:1/d", "TEMPORAL_ADDRESS": "h:2"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), "stack", "env"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert "export DATABASE_URL=postgresql://a:b@h:1/d" in lines
    assert "export TEMPORAL_ADDRESS=h:2" in lines


async def test_the_stack_starts_as_many_workers_as_asked_and_stops_every_one(client, settings, tmp_path):
    """WORKER_PROCESSES=2: two real worker processes poll the one task queue, only the first drains the
    outbox, and 'stack down' finds and stops both by their pid files."""
    queue = f"test-{uuid.uuid4()}"
    s = settings.model_copy(update={"state_dir": tmp_path, "worker_processes": 2, "temporal_task_queue": queue})
    stack = Stack(s)
    env = {
        "DATABASE_URL": s.database_url,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_TASK_QUEUE": queue,
        "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE),
        "PAYLOAD_KEYS": "",
        "STATE_DIR": str(tmp_path),
        "PAYMENT_CHANNEL": "bank",
    }
    workers = stack.workers()
    assert [w.name for w in workers] == ["worker", "worker-2"]
    try:
        assert all(w.start(env) for w in workers)
        assert [w.number for w in stack.running_workers()] == [1, 2]
        assert not any(w.start(env) for w in workers), "running workers are reused, not started twice"

        async def pollers() -> set[str]:
            request = DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
            answer = await client.workflow_service.describe_task_queue(request)
            found = {p.identity for p in answer.pollers}
            return found if len(found) == 2 else set()

        assert len(await wait_until(pollers, 30)) == 2
        started = {w.name: _started_event(w.log_file) for w in workers}
        assert started["worker"]["dispatcher"] is True and started["worker-2"]["dispatcher"] is False
    finally:
        for w in stack.running_workers():
            assert w.stop() is True
    assert stack.running_workers() == []


def _started_event(log_file) -> dict:
    for line in log_file.read_text().splitlines():
        if line.startswith("{") and (event := json.loads(line)).get("event") == "worker_started":
            return event
    raise AssertionError(f"no worker_started event in {log_file.name}")
