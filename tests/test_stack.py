"""The embedded stack: a running piece is found and reused, never started twice; env prints exports."""

from __future__ import annotations

import os
import subprocess
import sys

from core.settings import ROOT, Settings
from core.stack import EmbeddedTemporal, Stack, free_port, port_open


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
