"""Input and result of the history archive's sweep (archive/workflow.py, archive/sweep.py)."""

from __future__ import annotations

from pydantic import BaseModel


class ArchiveSweepInput(BaseModel):
    # At most this many histories per activity attempt; the workflow runs the activity again while more wait.
    limit: int = 500
    checkpoint: bool = True  # write a witness checkpoint after the sweep (when anything changed)
    task_queue: str | None = None  # only the workflows of this task queue (None: all)


class ArchiveSweepResult(BaseModel):
    closed_seen: int = 0  # closed household and batch runs Temporal still holds
    archived_now: int = 0
    already: int = 0
    waiting: int = 0  # closed runs still not archived when the sweep ended (over the limit: the next round)
    failed: list[str] = []  # runs that could not be copied this time ("workflow-id run-id: why"); retried next sweep
    checkpoint_seq: int | None = None
