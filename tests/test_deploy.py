"""The deployment files, checked without Docker: the image's entry point and health check run
as the image would run them, and compose.yaml wires real `parley` commands in the right order."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from parley.testing import wait_until_ready
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def dockerfile() -> str:
    # Continuation lines joined, as Docker reads them.
    return (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")


def instruction(name: str, stage: str | None = None) -> str:
    """The last `name` instruction's arguments (of the final stage: the image that runs)."""
    found = re.findall(rf"^{name}\s+(.+)$", stage or final_stage(), flags=re.MULTILINE)
    assert found, f"no {name} in the Dockerfile"
    return str(found[-1]).strip()


def final_stage() -> str:
    return re.split(r"^FROM\s", dockerfile(), flags=re.MULTILINE)[-1]


def exec_form(arguments: str) -> list[str]:
    """An instruction in exec form (a JSON array), as Docker runs it without a shell."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value)
    return value


async def run(*command: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> int:
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=60)


def test_the_image_is_slim_and_runs_as_nobody_in_particular() -> None:
    stage = final_stage()
    assert re.match(r"python:3\.1[1-9][.\w-]*-slim\b", stage), stage.splitlines()[0]
    user = instruction("USER")
    assert user not in ("root", "0") and user.split(":")[0] != "0"
    assert exec_form(instruction("ENTRYPOINT")) == ["parley"]
    assert exec_form(instruction("CMD"))[:1] in (["serve"], ["api"])
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", ".env", "*.db"} <= set(ignored)


async def test_the_entry_point_and_health_check_work_as_the_image_runs_them(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    entrypoint = exec_form(instruction("ENTRYPOINT"))
    command = exec_form(instruction("CMD"))
    health = exec_form(instruction("HEALTHCHECK").split("CMD", 1)[1].strip())
    # The image's PATH starts with the virtualenv's bin, as this one's does here.
    env = {**os.environ, **settings_env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    assert await run(*entrypoint, "--help", env=env) == 0

    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *entrypoint,
        *command,
        "--port",
        str(port),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    probe = [part.replace(":8000/", f":{port}/") for part in health]
    assert probe != health, "the health check no longer asks port 8000"
    try:
        url = f"http://127.0.0.1:{port}"
        assert await wait_until_ready(url, alive=lambda: server.returncode is None)
        assert await run(*probe, env=env) == 0
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), timeout=30)
    assert await run(*probe, env=env) != 0  # nothing listens any more: unhealthy


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_compose_has_the_services_in_order() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["redis"] == {"condition": "service_healthy"}
    assert services["api"]["ports"] == ["8000:8000"]
    for name in ("migrate", "api", "worker"):
        service = services[name]
        assert (
            service["build"] == "." and {"path": ".env", "required": False} in (service["env_file"])
        )
        environment = service["environment"]
        assert environment["DATABASE_URL"].startswith("postgresql://parley:")
        assert environment["DATABASE_URL"].endswith("@postgres:5432/parley")
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert services["worker"]["healthcheck"] == {"disable": True}  # it serves no HTTP


@pytest.mark.parametrize("service", ["migrate", "api", "worker"])
async def test_each_service_runs_a_real_parley_command(service: str) -> None:
    """The command with `--help`: Typer rejects an unknown command or option before it
    would print the help."""
    command = compose()["services"][service]["command"]
    assert isinstance(command, list)
    entrypoint = exec_form(instruction("ENTRYPOINT"))
    assert await run(str(BIN / entrypoint[0]), *command, "--help") == 0
    assert await run(str(BIN / entrypoint[0]), *command, "--no-such-option", "--help") != 0
