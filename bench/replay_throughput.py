"""Replay throughput of the auditors' tool over a province-sized set of histories.

    python starter.py audit export EXPORT            # after `make demo`: 132 household histories
    python -m bench.replay_throughput EXPORT --size 6508 [--jobs 2] [--keys FILE] [--sandbox]
    python -m bench.replay_throughput EXPORT --size 0     # the export's own histories, as they are
    python -m bench.replay_throughput EXPORT --size 0 --json   # from the JSON, not the binary copies

The set is the export's household histories, copied round-robin into a scratch folder until it holds
`--size` files (6,508 = Lạng Sơn's 2025 province); with `--size 0`, the export's histories themselves
(after a driver run over the whole province: its 6,508 distinct households). Each copy is a separate file,
read and parsed from disk (the binary copy, as `audit replay --from` reads it; `--json` for the JSON) and
replayed in full, so the figure includes everything `audit replay --from` does per history. Replaying one
history does not depend on any other, so a set of copies costs what a set of distinct households with the
same paths would. Prints a table and writes the figures as JSON next to this file (results/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from auditor.archive import Archive
from auditor.replay import replay_files
from core.client import key_ring
from core.codec import read_ring
from core.settings import get_settings

HERE = Path(__file__).parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", type=Path)
    ap.add_argument("--size", type=int, default=6508)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keys", type=Path, help="payload key file (default: the configured one)")
    ap.add_argument("--sandbox", action="store_true", help="replay inside the workflow sandbox")
    ap.add_argument(
        "--json",
        action="store_true",
        help="read the JSON histories, not their binary copies (as an export of format 1 has only)",
    )
    args = ap.parse_args()

    arch = Archive.open(args.export)
    if arch.problems:
        raise SystemExit("export altered: " + "; ".join(arch.problems))
    sources = [(w, p) for w, p in arch.history_files(binary=not args.json) if w.startswith("household-")]
    if not sources:
        raise SystemExit(f"{args.export.name}: no household histories")
    ring = read_ring(args.keys) if args.keys else key_ring(get_settings())
    keys = ring.dump()
    events = sum(
        a["events"] for r, a in arch.manifest["files"].items() if r.startswith("histories/household-") and "events" in a
    )
    console = Console()
    with tempfile.TemporaryDirectory(prefix="replay-set-") as tmp:
        files = list(sources) if args.size == 0 else []
        for i in range(args.size):
            wid, src = sources[i % len(sources)]
            dst = Path(tmp) / f"{i:05d}-{src.name}"
            shutil.copyfile(src, dst)
            files.append((wid, dst))
        size_mb = sum(p.stat().st_size for _, p in files) / 1e6
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        with Progress(
            TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("", total=len(files))
            report = await replay_files(
                files, keys, jobs=args.jobs, sandbox=args.sandbox, on_done=lambda n: bar.advance(task, n)
            )
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version()},
        "set": {
            "histories": len(files),
            "distinct": len(sources),
            "mb": round(size_mb, 1),
            "events_per_history": round(events / len(sources), 1),
        },
        "jobs": args.jobs,
        "sandbox": args.sandbox,
        "read_from": ", ".join(sorted({p.suffix[1:] for _, p in sources})),
        "seconds": round(seconds, 1),
        "histories_per_second": round(len(files) / seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "ms_cpu_per_history": round(cpu / len(files) * 1000, 1),
        "failures": len(report.failures),
    }
    table = Table("figure", "value", title="audit replay --from: throughput")
    for k, v in (
        ("histories", f"{len(files):,} ({len(sources)} distinct, {size_mb:,.0f} MB of {result['read_from']})"),
        ("events per history (mean)", result["set"]["events_per_history"]),
        ("processes", args.jobs),
        ("wall time", f"{seconds:,.1f} s"),
        ("histories per second", result["histories_per_second"]),
        ("CPU per history", f"{result['ms_cpu_per_history']} ms"),
        ("not reproduced", len(report.failures)),
    ):
        table.add_row(k, str(v))
    console.print(table)
    out = HERE / "results" / f"replay-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    console.print(f"written to bench/results/{out.name}")


if __name__ == "__main__":
    asyncio.run(main())
