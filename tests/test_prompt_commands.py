"""`parley prompts …` on the store DATABASE_URL names, as an operator runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parley.cli import app
from parley.observability.logging import reset_logging


@pytest.fixture(autouse=True)
def _logging_reset() -> Iterator[None]:
    yield
    reset_logging()  # the commands configure logging for their process


PROMPT_FILE = """---
description: Front-line support
model: gpt-5-nano
temperature: 0.3
---
Help {{customer_name}} on {{channel}}.
"""


def test_load_activate_ab_rollback_and_report(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()

    def parley(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["prompts", *args])
        assert result.exit_code == code, result.output
        return result.output

    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0  # as a new user does first

    path = tmp_path / "support.md"
    path.write_text(PROMPT_FILE, encoding="utf-8")
    assert "created support v1" in parley("load", str(path))
    assert "added support v2" in parley("load", str(path))
    assert "added support v3" in parley("add-version", "support", "--instructions", "Terse.")
    assert "created other v1" in parley("create", "other", "--instructions", "Other.")
    listing = parley("list")
    assert "support" in listing and "Front-line support" in listing
    shown = parley("show", "support", "--version", "1")
    assert "gpt-5-nano" in shown and "Help {{customer_name}} on {{channel}}." in shown

    assert "support v3" in parley("activate", "support")
    assert "support v1" in parley("activate", "support", "--version", "1", "--profile", "sales")
    assert "30%" in parley("ab", "support", "--version", "2", "--percent", "30")
    assert "support v2" in parley("profiles")
    assert "stopped" in parley("ab-stop")
    assert "support v1" in parley("rollback", "--version", "1")
    assert "now answers with support v3" in parley("rollback")
    assert "handoff" in parley("report")

    listed = json.loads(parley("list", "--json"))
    assert [p["name"] for p in listed["prompts"]] == ["other", "support"]
    assert {p["name"]: p["versions"] for p in listed["prompts"]} == {"other": 1, "support": 3}
    bindings = {b["profile"]: b for b in json.loads(parley("profiles", "--json"))}
    assert bindings["default"]["prompt"] == "support" and bindings["default"]["version"] == 3
    assert bindings["sales"]["version"] == 1
    assert bindings["default"]["candidate_prompt"] is None
    report = json.loads(parley("report", "--json"))
    assert {(r["prompt"], r["version"]) for r in report} <= {
        ("support", 1),
        ("support", 2),
        ("support", 3),
        ("other", 1),
    }
    assert all(isinstance(r["cost_usd"], str) for r in report)

    assert "no prompt named 'nope'" in parley("show", "nope", code=1)
    assert "already exists" in parley("create", "other", "--instructions", "x", code=1)
    assert "between 0 and 100" in parley(
        "ab", "support", "--version", "2", "--percent", "150", code=1
    )
    assert "--file or --instructions" in parley("create", "third", code=1)
    assert "no account" in parley("activate", "support", "--account", "123", code=1)
    assert "cannot read" in parley("load", str(tmp_path / "missing.yaml"), code=1)


@pytest.mark.parametrize("args", [["list"], ["profiles", "--json"], ["report"], ["show", "x"]])
def test_no_database_is_named_not_created(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path / 'nowhere.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    result = CliRunner().invoke(app, ["prompts", *args])
    assert result.exit_code == 1
    assert f"no Parley database at {url}" in result.stderr
    assert "parley db upgrade" in result.stderr
    assert not (tmp_path / "nowhere.db").exists() and not (tmp_path / "parley.db").exists()
