"""A piece of the stack is found by its pid file: a process that has exited is not running, also while it waits,
a zombie, for the process that started it (not this one) to reap it."""

from __future__ import annotations

import subprocess
import time

from runtime.stack import _pid_alive


def test_an_exited_process_its_parent_has_not_reaped_is_not_running(tmp_path):
    # `sh` starts `sleep 0` and becomes `sleep 5`, which never reaps its child: the child stays a zombie.
    parent = subprocess.Popen(["sh", "-c", "sleep 0 & echo $!; exec sleep 5"], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        pid_file = tmp_path / "piece.pid"
        pid_file.write_text(str(child))
        deadline = time.monotonic() + 5
        while _pid_alive(pid_file) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _pid_alive(pid_file) is None
        pid_file.write_text(str(parent.pid))  # the parent runs: found
        assert _pid_alive(pid_file) == parent.pid
    finally:
        parent.kill()
        parent.wait()
