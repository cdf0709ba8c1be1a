"""docker-compose.yml stays valid and true to the code (no Docker engine is needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.slow  # starts docker compose twice
def test_docker_compose_config_parses() -> None:
    command = _compose_command()
    if command is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no docker compose client: .ci/run installs docker-compose")
        pytest.skip("no docker compose client on this machine")
    env = {k: v for k, v in os.environ.items() if k != "CAMLABEL_SECRET_KEY"}
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT,
                            env={**env, "CAMLABEL_SECRET_KEY": "x" * 8 + "0123456789abcdef" * 3})
    assert result.returncode == 0, result.stderr
    unset = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert unset.returncode != 0, "compose must refuse to start without CAMLABEL_SECRET_KEY"
    assert "CAMLABEL_SECRET_KEY" in unset.stderr


def test_compose_requires_a_secret_key_and_has_no_default(compose: dict) -> None:
    """No placeholder default: the key must come from the operator (anyone could sign cookies with a default)."""
    for name in ("web", "worker-gpu", "worker-cpu"):
        value = compose["services"][name]["environment"]["CAMLABEL_SECRET_KEY"]
        assert value.startswith("${CAMLABEL_SECRET_KEY:?"), value
        assert "change-me" not in value


def test_services_and_shared_volume(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "web", "worker-gpu", "worker-cpu"}
    for name in ("web", "worker-gpu", "worker-cpu"):
        assert "camlabel-data:/data" in services[name]["volumes"], name
        env = services[name]["environment"]
        assert env["CAMLABEL_DATA_DIR"] == "/data"
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["REDIS_URL"].startswith("redis://redis:6379")
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"


def test_web_migrates_then_serves_the_factory(compose: dict) -> None:
    command = " ".join(compose["services"]["web"]["command"])
    assert command.index("camlabel db upgrade") < command.index("gunicorn")
    assert "'web:create_app()'" in command
    from web import create_app  # the target gunicorn loads

    assert callable(create_app)


def test_workers_listen_on_the_queues_the_code_routes_to(compose: dict) -> None:
    from worker.queue.app import DEFAULT_QUEUES, QUEUES

    services = compose["services"]
    assert services["worker-gpu"]["command"] == ["camlabel", "worker", "--queues", "gpu"]
    assert services["worker-cpu"]["command"] == ["camlabel", "worker", "--queues", "cpu"]
    assert set(DEFAULT_QUEUES.values()) == set(QUEUES) == {"gpu", "cpu"}
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_cli_commands_used_by_compose_exist() -> None:
    from web.cli import main

    assert {"db", "worker"} <= set(main.commands)
