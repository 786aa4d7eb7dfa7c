"""The embedded stack: a running piece is found and reused, never started twice; env prints exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from core.settings import ROOT, Settings
from core.stack import EmbeddedTemporal, Stack, free_port, port_open
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


def test_external_servers_are_not_started(tmp_path):
    s = Settings(database_url="postgresql://u:p@db.example:5432/x", temporal_address="temporal.example:7233",
                 state_dir=tmp_path)  # fmt: skip
    stack = Stack(s)
    assert not stack.embedded_db and not stack.embedded_temporal
    assert Stack(Settings(state_dir=tmp_path)).embedded_db


def test_stack_env_prints_shell_exports():
    env = {**os.environ, "DATABASE_URL": "postgresql://a:b@h:1/d", "TEMPORAL_ADDRESS": "h:2"}
    done = subprocess.run([sys.executable, str(ROOT / "starter.py"), "stack", "env"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60, check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    assert "export DATABASE_URL=postgresql://a:b@h:1/d" in lines
    assert "export TEMPORAL_ADDRESS=h:2" in lines


async def test_the_stack_starts_as_many_workers_as_asked_and_stops_every_one(client, settings, tmp_path):
    """WORKER_PROCESSES=2: two real worker processes poll the one task queue, only the first drains the
    outbox, and 'stack down' finds and stops both by their pid files."""
    queue = f"test-{uuid.uuid4()}"
    s = settings.model_copy(update={"state_dir": tmp_path, "worker_processes": 2, "temporal_task_queue": queue})
    stack = Stack(s)
    env = {"DATABASE_URL": s.database_url, "TEMPORAL_ADDRESS": client.service_client.config.target_host,
           "TEMPORAL_TASK_QUEUE": queue, "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE), "PAYLOAD_KEYS": "",
           "STATE_DIR": str(tmp_path)}  # fmt: skip
    workers = stack.workers()
    assert [w.name for w in workers] == ["worker", "worker-2"]
    try:
        assert all(w.start(env) for w in workers)
        assert [w.number for w in stack.running_workers()] == [1, 2]
        assert not any(w.start(env) for w in workers), "running workers are reused, not started twice"

        async def pollers() -> set[str]:
            request = DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=queue),
                                               task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)  # fmt: skip
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
