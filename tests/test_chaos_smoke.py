"""A small chaos run in CI (bench/chaos.py): two dozen households, two officers, the worker, PostgreSQL,
the Temporal server and the bank each killed with SIGKILL at least once and restarted by `stack up`, on a
stack of the run's own (a temporary state folder, free ports). Asserts the run's own checks passed, never
a wall-clock figure. Deselect with `-m "not chaos"`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.settings import ROOT

pytestmark = pytest.mark.chaos

KILLS = {"worker": "--worker-kills", "postgres": "--pg-kills", "temporal": "--temporal-kills", "bank": "--bank-kills"}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stop_leftovers(state: Path) -> list[int]:
    """SIGKILL every process a pid file of the run's state folder still names (the run stops its stack
    itself; this is for a run that was killed or hung)."""
    killed = []
    for pid_file in [*state.glob("**/*.pid"), state / "pg" / "postmaster.pid"]:
        try:
            pid = int(pid_file.read_text().splitlines()[0].strip())
        except (OSError, ValueError, IndexError):
            continue
        if pid > 1 and _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def test_a_small_chaos_run_closes_every_household_and_every_check_passes(tmp_path):
    state, out = tmp_path / "state", tmp_path / "chaos.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.chaos",
        "--households",
        "24",
        "--officers",
        "2",
        "--seed",
        "14",
        "--state-dir",
        str(state),
        "--out",
        str(out),
        "--timeout",
        "600",
    ]
    for flag in KILLS.values():
        cmd += [flag, "1"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the run stops its own stack on SIGTERM
            try:
                output, _ = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
        leftovers = _stop_leftovers(state)
    assert proc.returncode == 0, output[-6000:]
    assert not leftovers, f"the run left processes running: {leftovers}"
    record = json.loads(out.read_text())
    assert record["passed"] is True
    checks = {c["name"]: c for c in record["checks"]}
    for name, c in checks.items():
        if c["status"] == "SKIP":
            # Only the bank's own check may be skipped, and only when there is no bank process to ask.
            assert "bank" in name and not record["bank_present"], (name, c)
        else:
            assert c["status"] == "PASS", (name, c)
    assert record["figures"]["closed"] == 24
    fired = Counter(f["kind"] for f in record["faults"] if f["stack_up_rc"] == 0 and f["error"] is None)
    for kind in KILLS:
        if kind != "bank" or record["bank_present"]:
            assert fired[kind] >= 1, (kind, record["faults"])
