"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked, with
`docker compose config` where a compose client is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_it_defines_every_process_of_the_system() -> None:
    assert {"web", "inference", "celery", "redis", "postgres", "migrate"} <= set(COMPOSE["services"])


def test_the_inference_worker_reserves_an_nvidia_gpu() -> None:
    devices = COMPOSE["services"]["inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_app_services_take_their_settings_from_the_environment() -> None:
    for name in ("web", "inference", "celery", "migrate"):
        env = COMPOSE["services"][name]["environment"]
        assert {"DATABASE_URL", "REDIS_URL", "BASE_MODEL"} <= set(env), name


def test_the_web_service_is_checked_through_healthz_and_every_process_restarts() -> None:
    assert "/healthz" in " ".join(COMPOSE["services"]["web"]["healthcheck"]["test"])
    for name in ("web", "inference", "celery", "redis", "postgres"):
        assert COMPOSE["services"][name]["restart"] == "unless-stopped", name


def test_replicas_of_the_worker_get_consumer_names_of_their_own() -> None:
    assert "--consumer" not in COMPOSE["services"]["inference"]["command"]


def test_the_commands_it_runs_exist() -> None:
    commands = get_commands()
    for name in ("inference", "migrate"):
        command = COMPOSE["services"][name]["command"]
        for managed in ("inference_worker", "prepare_model", "migrate"):
            if f"manage.py {managed}" in command:
                assert managed in commands


# `docker compose config` parses the file as Compose does (merge keys, interpolation, schema) and
# needs no Docker engine. Either client does: the compose plugin of `docker`, or `docker-compose`.


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


COMPOSE_CLIENT = compose_client()
needs_compose = pytest.mark.skipif(
    COMPOSE_CLIENT is None,
    reason="no compose client: neither `docker compose` nor `docker-compose` (apt-get install docker-compose)",
)


def compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE_CLIENT is not None
    # Only PATH and HOME from here: the settings the file reads come from ``env`` alone.
    environment = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    command = [*COMPOSE_CLIENT, "--file", str(ROOT / "docker-compose.yml"), *args]
    return subprocess.run(command, cwd=ROOT, env={**environment, **env}, capture_output=True, text=True, timeout=60)


@needs_compose
def test_docker_compose_config_accepts_the_file_and_resolves_the_settings() -> None:
    result = compose("config", SECRET_KEY="from-the-environment", INFERENCE_DEVICE="cuda")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert set(COMPOSE["services"]) == set(resolved)
    for name in ("web", "inference", "celery", "migrate"):
        env = resolved[name]["environment"]
        assert env["SECRET_KEY"] == "from-the-environment", name
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"] == "redis://redis:6379/0", name
    assert resolved["inference"]["environment"]["INFERENCE_DEVICE"] == "cuda"
    devices = resolved["inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


@needs_compose
def test_docker_compose_refuses_to_run_without_a_secret_key() -> None:
    result = compose("config", "--quiet")
    assert result.returncode != 0
    assert "set SECRET_KEY" in result.stderr
