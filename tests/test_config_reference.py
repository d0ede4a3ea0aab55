"""docs/configuration.md and .env.example are generated from `Settings`: these tests keep the
committed files current and check that what they tell a user is true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from parley import config_reference
from parley.config import Settings

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = re.compile(r"^# ([A-Z][A-Z0-9_]*)=(.*)$")


def _defaults() -> dict[str, object]:
    return Settings(_env_file=None).model_dump()  # type: ignore[call-arg]


@pytest.mark.parametrize("path", sorted(config_reference.outputs()), ids=str)
def test_committed_reference_is_current(path: Path) -> None:
    committed = ROOT / path
    assert committed.is_file(), f"{path} is missing; run `{config_reference.COMMAND}`"
    assert committed.read_text(encoding="utf-8") == config_reference.outputs()[path], (
        f"{path} differs from parley/config.py; regenerate it with "
        f"`{config_reference.COMMAND}` from the repository root and commit the result"
    )


def test_every_field_has_a_description() -> None:
    bare = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not bare, f"Settings fields without a description: {bare}"


def test_every_field_is_listed_once() -> None:
    listed = [e.env for _, entries in config_reference.sections() for e in entries]
    assert sorted(listed) == sorted(name.upper() for name in Settings.model_fields)


def test_env_example_parses_to_the_defaults() -> None:
    parsed = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert parsed.model_dump() == _defaults()


def test_env_example_values_are_the_real_defaults(tmp_path: Path) -> None:
    """Uncommented, every value shown parses back to exactly the default it claims to be."""
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    assigned = [m for m in map(ASSIGNMENT.match, lines) if m]
    assert len(assigned) == len(Settings.model_fields)
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{m[1]}={m[2]}\n" for m in assigned if m[2]), encoding="utf-8")
    parsed = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert parsed.model_dump() == _defaults()


def test_secrets_show_no_value() -> None:
    secrets = {
        name.upper()
        for name, field in Settings.model_fields.items()
        if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
    }
    assert "OPENAI_API_KEY" in secrets
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    for line in lines:
        match = ASSIGNMENT.match(line)
        if match and match[1] in secrets:
            assert match[2] == "", line
    table = (ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    for name in secrets:
        assert f"| `{name}` |" in table
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert row.endswith("| unset (secret) |"), row


def test_the_command_writes_and_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_reference.main(["--check"]) == 2  # not a checkout: nothing written
    (tmp_path / "parley").mkdir()
    (tmp_path / "parley" / "config.py").write_text("", encoding="utf-8")
    assert config_reference.main(["--check"]) == 1
    assert config_reference.main([]) == 0
    assert config_reference.main(["--check"]) == 0
    (tmp_path / ".env.example").write_text("# edited by hand\n", encoding="utf-8")
    assert config_reference.main(["--check"]) == 1


def test_readme_first_variables_are_real() -> None:
    """The README's short table is written by hand: its names and shown defaults must exist."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|.*\| (.*) \|$", section, flags=re.MULTILINE)
    assert len(rows) >= 9
    fields = Settings.model_fields
    for env, default in rows:
        assert env.lower() in fields, f"README's Configuration names {env}, not a setting"
        shown = re.fullmatch(r"`(.*)`", default)
        if shown:
            assert shown[1] == str(fields[env.lower()].default), env
        else:
            assert fields[env.lower()].default is None, env
    assert "docs/configuration.md" in section and ".env.example" in section
