"""What signing and verifying one step costs, in CPU, on this machine.

    python -m bench.signing_cost [--n 20000]

Per step the engine's path adds: the front door's digest and signature (`sign_input`), the update
validator's verification (`workflows.authn.check_step`: digest, key lookup, Ed25519 verify), and the
recording activity's second verification (the same, plus one indexed SELECT of the key that the driver's
end-to-end figure includes). This measures the pure-CPU parts one by one over a lifecycle step's real input
(a commune officer's verify with two evidence references), so the end-to-end figure of `bench.driver` can be
read against them. Prints a table and writes the figures as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from core.signing import PublicKey, TrustedKeys, new_ring, sign_input
from models.actions import VerifyInput
from models.actor import Actor, Jurisdiction
from models.assertion import OFFICERS, input_digest
from workflows import authn

RESULTS = Path(__file__).parent / "results"


def _per_op(fn, n: int) -> float:
    """Microseconds per call of `fn`, best of three rounds of `n`."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    n = ap.parse_args().n
    ring = new_ring("bench")
    now = datetime.now(UTC)
    keys = TrustedKeys.of([PublicKey("bench", OFFICERS, ring.public(), now - timedelta(days=1))])
    actor = Actor(
        user_id="x.thanhpholangson.maipha",
        role="commune_officer",
        agency="UBND xã Mai Pha",
        jurisdiction=Jurisdiction(province="Lạng Sơn", district="Thành phố Lạng Sơn", commune="Mai Pha"),
    )
    inp = VerifyInput(actor=actor, evidence=["BB-RA-SOAT/LS270-00001", "BB-BINH-XET/LS270-00001"])
    wf = "household-LS270-00001"
    signed = sign_input(ring, inp, workflow_id=wf, step="verify", user_id=actor.user_id, now=now)

    figures = {
        "input digest (SHA-256 of the canonical JSON)": _per_op(lambda: input_digest(inp), n),
        "front door: digest + sign": _per_op(
            lambda: sign_input(ring, inp, workflow_id=wf, step="verify", user_id=actor.user_id, now=now), n
        ),
        "engine: check_step (digest + verify + one-time id)": _per_op(
            lambda: authn.check_step(signed, workflow_id=wf, step="verify", now=now, seen=(), keys=keys), n
        ),
    }
    # A household's path: 12 officers' steps signed once, verified twice (validator, activity).
    sign, verify = figures["front door: digest + sign"], figures["engine: check_step (digest + verify + one-time id)"]
    path_ms = (sign + 2 * verify) * 12 / 1000
    table = Table("operation", "µs per call", title=f"Signing cost ({n:,} calls, best of 3)")
    for name, us in figures.items():
        table.add_row(name, f"{us:,.1f}")
    table.add_row("[bold]a household's 11 steps (sign once, verify twice)[/]", f"{path_ms * 1000:,.0f}")
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"signing-cost-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "n": n,
                "us_per_call": figures,
                "household_path_ms": path_ms,
                "machine": platform.platform(),
                "python": platform.python_version(),
            },
            indent=2,
        )
    )
    print(f"written: {out.relative_to(Path(__file__).parent.parent)}")


if __name__ == "__main__":
    main()
