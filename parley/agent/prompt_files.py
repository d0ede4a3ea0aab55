"""Prompt files: a version of a prompt written as YAML, or as Markdown with YAML front matter.

```yaml
name: support                 # default: the file's name without its suffix
description: Front-line support
model: gpt-5-mini             # default: OPENAI_MODEL
temperature: 0.3              # any model setting, here or under `settings:`
variables: {tone: warm}       # defaults for {{tone}}
note: shorter greetings       # what changed in this version
instructions: |
  You help {{customer_name}} on {{channel}}…
```

In a ``.md`` file the same keys go in the front matter, and the body is the instructions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from parley.errors import PromptInvalid
from parley.store.queries.prompts import MODEL_SETTINGS, VersionFields

KEYS = frozenset({"name", "description", "instructions", "model", "settings", "variables", "note"})


@dataclass(frozen=True, slots=True)
class PromptFile:
    name: str
    description: str | None
    fields: VersionFields


def load_prompt_file(path: Path) -> PromptFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptInvalid(f"cannot read {path}: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        data = _mapping(text, path)
    elif suffix == ".md":
        data = _markdown(text, path)
    else:
        raise PromptInvalid(f"{path}: a prompt file is .yaml, .yml or .md")
    return parse_prompt(data, default_name=path.stem, source=str(path))


def parse_prompt(data: dict[str, Any], *, default_name: str, source: str) -> PromptFile:
    """A prompt from the keys of a file (see the module's docstring)."""
    unknown = sorted(set(data) - KEYS - MODEL_SETTINGS)
    if unknown:
        raise PromptInvalid(f"{source}: unknown keys {unknown}")
    instructions = data.get("instructions")
    if not isinstance(instructions, str) or not instructions.strip():
        raise PromptInvalid(f"{source}: `instructions` must be non-empty text")
    settings = data.get("settings") or {}
    variables = data.get("variables") or {}
    if not isinstance(settings, dict) or not isinstance(variables, dict):
        raise PromptInvalid(f"{source}: `settings` and `variables` must be mappings")
    settings = {**settings, **{k: v for k, v in data.items() if k in MODEL_SETTINGS}}
    return PromptFile(
        name=str(data.get("name") or default_name),
        description=_optional(data.get("description")),
        fields=VersionFields(
            instructions=instructions.strip() + "\n",
            model=_optional(data.get("model")),
            settings=settings,
            variables={str(k): "" if v is None else str(v) for k, v in variables.items()},
            note=_optional(data.get("note")),
        ),
    )


def _mapping(text: str, path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise PromptInvalid(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise PromptInvalid(f"{path}: expected a mapping of keys")
    return data


def _markdown(text: str, path: Path) -> dict[str, Any]:
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {"instructions": text}
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            front = _mapping("".join(lines[1:index]), path)
            if "instructions" in front:
                raise PromptInvalid(f"{path}: the body is the instructions; remove the key")
            return {**front, "instructions": "".join(lines[index + 1 :])}
    raise PromptInvalid(f"{path}: the front matter has no closing ---")


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)
