"""docker-compose.yml, read as the engineer who would run it: the file is valid for docker compose, Temporal is
the version the tests run, set up by its admin tools with 512 shards and mTLS, the Web UI cannot change a
workflow, nothing but the web app is published beyond the host, no password sits in the file, and every
setting the services are given is one the application reads. No Docker engine is needed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from core.settings import Settings
from runtime.secrets import OWNERS
from runtime.stack import binary
from tests.test_image import ROOT, sent

COMPOSE = ROOT / "docker-compose.yml"
APP = ("migrate", "worker", "worker-more", "web")


def _tool() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if os.environ.get("SKIP_COMPOSE") == "1" and not os.environ.get("CI"):
        pytest.skip("docker-compose is not installed (make test installs Debian's)")
    pytest.fail("docker-compose is not installed: `make test` installs Debian's package")


@pytest.fixture(scope="module")
def compose() -> dict:
    """The file as docker compose resolves it (anchors merged, variables given their defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "COMPOSE_"))}
    out = subprocess.run([*_tool(), "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_docker_compose_config_accepts_the_file() -> None:
    out = subprocess.run([*_tool(), "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def _versions() -> dict[str, str]:
    text = subprocess.run([str(binary("temporal")), "--version"], capture_output=True, text=True).stdout
    server, ui = re.search(r"Server (\S+), UI (\S+)\)", text).groups()
    return {"server": server, "ui": ui}


def test_temporal_is_the_tested_version_set_up_by_its_admin_tools_with_512_shards_and_mtls(compose) -> None:
    services, tested = compose["services"], _versions()
    images = {name: s.get("image", "") for name, s in services.items()}
    assert not any("auto-setup" in i for i in images.values())
    assert images["temporal"] == f"temporalio/server:{tested['server']}"
    assert images["temporal-schema"] == images["temporal-setup"] == f"temporalio/admin-tools:{tested['server']}"
    assert images["temporal-ui"] == f"temporalio/ui:{tested['ui']}"
    temporal = services["temporal"]["environment"]
    assert temporal["NUM_HISTORY_SHARDS"] == "512"
    assert temporal["TEMPORAL_TLS_REQUIRE_CLIENT_AUTH"] == "true"
    assert "update-schema" in " ".join(services["temporal-schema"]["command"])
    assert (
        "TEMPORAL_RETENTION_DAYS" in COMPOSE.read_text() and "--retention" in services["temporal-setup"]["command"][0]
    )
    ui = services["temporal-ui"]["environment"]
    assert ui["TEMPORAL_DISABLE_WRITE_ACTIONS"] == "true" and ui["TEMPORAL_CODEC_ENDPOINT"].endswith("/codec")
    for name in APP:
        env = services[name]["environment"]
        assert env["TEMPORAL_TLS_CLIENT_CERT_PATH"].startswith("/run/secrets/"), name


def _published(service: dict) -> list[tuple[str | None, str]]:
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip"), str(p.get("published"))))
        else:
            parts = str(p).split(":")
            out.append((parts[0] if len(parts) == 3 else None, parts[-2] if len(parts) > 1 else parts[0]))
    return out


def test_only_the_web_app_is_published_beyond_the_host(compose) -> None:
    open_ports = [
        (name, port)
        for name, s in compose["services"].items()
        for host, port in _published(s)
        if host not in ("127.0.0.1", "::1")
    ]
    assert open_ports == [("web", "8000")]
    web = compose["services"]["web"]["environment"]
    assert web["WEB_TLS_CERT_PATH"] and web["WEB_TLS_KEY_PATH"]  # and served over HTTPS


def test_no_password_or_key_is_written_in_the_file_and_every_secret_stays_out_of_git_and_the_image(compose) -> None:
    for name, s in compose["services"].items():
        env = s.get("environment") or {}
        inline = [
            k
            for k, v in env.items()
            if re.search(r"(PASSWORD|PWD|SECRET|_KEY)$", k) and not str(v).startswith("/run/secrets/")
        ]
        assert inline == [], f"{name}: {inline}"
        urls = [v for v in env.values() if re.search(r"://[^/@\s]+:[^/@\s]+@", str(v))]
        assert urls == [], f"{name}: a URL with a password"
    gitignored = (ROOT / ".gitignore").read_text().splitlines()
    for secret in compose["secrets"].values():
        path = os.path.relpath(secret["file"], ROOT)
        assert path.startswith("secrets/") and "secrets/" in gitignored and not sent(path), path
    app_db = compose["services"]["app-db"]["environment"]
    assert app_db["HOUSING_APP_USER"] != app_db["POSTGRES_USER"]  # the application's login is not the superuser
    held = {name: {_source(s) for s in compose["services"][name].get("secrets", [])} for name in compose["services"]}
    assert all("database_url" in held[name] for name in APP)
    assert [name for name, secrets in held.items() if "database_owner_url" in secrets] == ["migrate"]


def _source(secret: str | dict) -> str:
    return secret["source"] if isinstance(secret, dict) else secret


def test_every_setting_given_to_the_application_is_one_it_reads(compose) -> None:
    known = {name.upper() for name in Settings.model_fields} | {"SECRETS_DIR"}
    for name in APP:
        unknown = set(compose["services"][name]["environment"]) - known
        assert unknown == set(), f"{name}: {sorted(unknown)} are not settings (a typo is silently ignored)"


def test_the_roles_script_reads_its_passwords_from_the_secrets() -> None:
    script = (ROOT / "deploy/postgres-init/10-roles.sh").read_text()
    assert "_FILE" in script and "NOSUPERUSER" in script
    assert subprocess.run(["sh", "-n", str(ROOT / "deploy/postgres-init/10-roles.sh")]).returncode == 0


def test_compose_secrets_makes_every_secret_the_file_names_once_and_privately(compose, tmp_path) -> None:
    folder = tmp_path / "secrets"
    run = [sys.executable, str(ROOT / "starter.py"), "keys", "compose-secrets", "--dir", str(folder)]
    env = {**os.environ, "HOUSING_ENV_FILE": ""}
    first = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    wanted = {os.path.relpath(s["file"], ROOT / "secrets") for s in compose["secrets"].values()}
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} >= wanted
    private = [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith((".pub", ".pem"))]
    assert private and all(p.stat().st_mode & 0o077 == 0 for p in private)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    again = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "none (all were there)" in again.stdout
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # nothing replaced
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SECRETS_DIR", str(folder))
        mp.setenv("HOUSING_ENV_FILE", "")
        mp.delenv("DATABASE_URL", raising=False)
        read = Settings()
    password = (folder / "app-db-app-password").read_text()
    assert read.database_url == f"postgresql://housing_app:{password}@app-db:5432/housing"


# The user each image runs as when it reads its secrets. The postgres image reads POSTGRES_PASSWORD_FILE as root
# before it drops to its user (999), which then runs the init script.
READER = {name: 10001 for name in ("migrate", "bank", "worker", "worker-more", "web")}
READER |= {name: 1000 for name in ("temporal", "temporal-schema", "temporal-setup", "temporal-ui")}
READER |= {"app-db": 999, "temporal-db": 0}


def test_each_private_secret_belongs_to_the_one_user_that_reads_it(compose) -> None:
    owners = OWNERS
    files = {name: os.path.relpath(s["file"], ROOT / "secrets") for name, s in compose["secrets"].items()}
    wrong = []
    for service, s in compose["services"].items():
        for secret in s.get("secrets", []):
            path = files[_source(secret)]
            if path.endswith((".pem", ".pub")) or READER[service] == 0:
                continue
            if path == "app-db-superuser-password":
                continue  # read as root by the postgres image's entrypoint
            if owners.get(path) != READER[service]:
                wrong.append(f"{service} (uid {READER[service]}) reads {path}, owned by {owners.get(path)}")
    assert wrong == []
