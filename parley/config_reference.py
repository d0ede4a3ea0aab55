"""The configuration reference, rendered from `Settings` so it cannot drift from the code.

`python -m parley.config_reference`, run from the repository root, writes docs/configuration.md
and .env.example; `--check` only reports whether they are current (exit status 1 if not).
tests/test_config_reference.py fails when the committed files differ from what this renders.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from parley.config import Settings

COMMAND = "python -m parley.config_reference"
MARKDOWN_PATH = Path("docs/configuration.md")
ENV_EXAMPLE_PATH = Path(".env.example")
GENERATED = f"Generated from parley/config.py by `{COMMAND}`; do not edit by hand."

# Sections in the order a new deployment meets them. Every field must be placed in exactly one:
# an unplaced new field stops the generator (and so the drift test) instead of going missing.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Upstream model (OpenAI Responses API or a compatible server)",
        (
            "openai_api_key",
            "openai_base_url",
            "openai_model",
            "openai_prompt_id",
            "openai_prompt_version",
            "openai_timeout",
            "openai_max_retries",
            "openai_max_concurrency",
            "openai_rpm",
            "openai_tpm",
        ),
    ),
    (
        "Meta channels",
        (
            "meta_app_secret",
            "meta_verify_token",
            "whatsapp_access_token",
            "graph_api_base_url",
            "graph_api_version",
            "graph_timeout",
            "graph_max_attempts",
            "parley_whatsapp_send_rate",
            "parley_messenger_send_rate",
            "parley_instagram_send_rate",
            "instagram_api_base_url",
            "instagram_app_secret",
            "instagram_setup",
            "instagram_page_id",
            "instagram_access_token",
            "messenger_access_token",
        ),
    ),
    (
        "Media customers send",
        (
            "parley_media_max_bytes",
            "parley_media_timeout",
            "parley_media_concurrency",
            "parley_transcribe",
            "parley_transcribe_model",
        ),
    ),
    ("Storage and queue", ("database_url", "redis_url", "parley_retention_days")),
    (
        "Webhook inbox",
        (
            "parley_max_webhook_bytes",
            "parley_max_request_bytes",
            "parley_body_timeout",
            "parley_inbox_batch",
            "parley_inbox_timeout",
            "parley_filer_batch",
            "parley_filer_chunk",
            "parley_filer_poll_interval",
        ),
    ),
    (
        "Worker",
        (
            "parley_worker_concurrency",
            "parley_reconcile_interval",
            "parley_reconcile_after",
            "parley_queue_lease_ms",
            "parley_max_turn_attempts",
            "parley_shutdown_grace",
        ),
    ),
    (
        "Agent",
        (
            "parley_instructions",
            "parley_fallback_reply",
            "parley_unsupported_reply",
            "parley_context",
            "parley_context_tokens",
            "parley_context_max_input_tokens",
            "parley_tools",
            "parley_builtin_tools",
            "parley_max_tool_steps",
            "parley_timezone",
            "parley_prices",
        ),
    ),
    (
        "Human handoff",
        (
            "parley_handoff_webhook_url",
            "parley_handoff_webhook_secret",
            "parley_handoff_webhook_attempts",
            "parley_handoff_idle_minutes",
        ),
    ),
    (
        "Safety",
        (
            "parley_customer_messages_per_minute",
            "parley_rate_limit_reply",
            "parley_max_input_chars",
            "parley_moderation",
            "parley_moderation_reply",
            "parley_redact_cards",
        ),
    ),
    (
        "API, admin and secrets",
        (
            "parley_admin_token",
            "parley_secret_key",
            "parley_api_rate_limit",
            "parley_max_tokens_per_user",
            "parley_auth_failure_limit",
            "parley_responses_wait",
            "parley_stream_keepalive",
            "parley_response_lease_seconds",
        ),
    ),
    (
        "Logging, metrics and traces",
        (
            "parley_log_level",
            "parley_log_format",
            "parley_metrics_interval",
            "otel_exporter_otlp_endpoint",
        ),
    ),
)


@dataclass(frozen=True)
class Entry:
    """One variable as the reference shows it."""

    env: str
    description: str
    secret: bool
    value: str | None
    """The default as the environment would spell it; None when unset or secret."""


def env_name(name: str, field: FieldInfo) -> str:
    """The variable pydantic-settings reads for a field: its alias if it has one, else the
    prefixed name. Upper case by convention; matching is case-insensitive by default."""
    if isinstance(field.validation_alias, str):
        return field.validation_alias.upper()
    if field.validation_alias is not None:
        # AliasChoices or AliasPath: several or nested names, which one table row cannot show.
        raise ValueError(f"Settings.{name}: teach config_reference its variable names")
    if field.alias:
        return field.alias.upper()
    return (Settings.model_config.get("env_prefix", "") + name).upper()


def _env_value(default: Any) -> str | None:
    if default is None:
        return None
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return format(default, "g")
    return str(default)


def _entry(name: str, field: FieldInfo) -> Entry:
    secret = field.annotation is SecretStr or SecretStr in get_args(field.annotation)
    if not field.description:
        raise ValueError(f"Settings.{name} has no description")
    # A secret's default is never shown, whatever it is.
    value = None if secret else _env_value(field.get_default(call_default_factory=True))
    return Entry(env_name(name, field), field.description, secret, value)


def sections() -> list[tuple[str, list[Entry]]]:
    """Every field of `Settings`, placed in SECTIONS; a field placed nowhere, twice or not
    existing is an error naming it."""
    fields = Settings.model_fields
    placed = [name for _, names in SECTIONS for name in names]
    missing = [name for name in fields if name not in placed]
    unknown = [name for name in placed if name not in fields]
    doubled = sorted({name for name in placed if placed.count(name) > 1})
    if missing or unknown or doubled:
        raise ValueError(
            "SECTIONS in parley/config_reference.py must place every Settings field once: "
            f"missing {missing}, unknown {unknown}, doubled {doubled}"
        )
    return [(title, [_entry(name, fields[name]) for name in names]) for title, names in SECTIONS]


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return text.replace("\n", " ").replace("|", "\\|")


def _default_cell(entry: Entry) -> str:
    if entry.secret:
        return "unset (secret)"
    if entry.value is None:
        return "unset"
    if entry.value == "":
        return "empty"
    if " " in entry.value or "`" in entry.value:
        return _cell(f"“{entry.value}”")
    return f"`{_cell(entry.value)}`"


def _sources() -> str:
    """Where values come from, as `Settings.model_config` says, so this cannot drift either."""
    config = Settings.model_config
    case = "case-sensitive" if config.get("case_sensitive") else "case-insensitive"
    return (
        f"Every setting is an environment variable ({case}), also read from `{config['env_file']}`"
        "\nin the directory Parley starts in; the environment wins over the file."
    )


def render_markdown() -> str:
    lines = [
        "# Configuration",
        "",
        f"> {GENERATED}",
        "",
        _sources(),
        "[`.env.example`](../.env.example) lists every variable with the same text, commented",
        "out at its default. A secret's default is never shown.",
    ]
    for title, entries in sections():
        lines += ["", f"## {title}", "", "| variable | meaning | default |", "| --- | --- | --- |"]
        for e in entries:
            lines.append(f"| `{e.env}` | {_cell(e.description)} | {_default_cell(e)} |")
    return "\n".join(lines) + "\n"


def _dotenv_value(value: str) -> str:
    """`value` spelled so that python-dotenv reads it back unchanged once uncommented: bare
    when it is one plain word, else double-quoted with escapes (bare, a ` #…` tail would be
    cut off as a comment and surrounding quotes stripped)."""
    if value and all(c.isalnum() or c in "._-:/+,@" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)


def _env_block(entry: Entry) -> list[str]:
    about = entry.description + (" Secret." if entry.secret else "")
    wrapped = textwrap.wrap(about, width=96, break_on_hyphens=False, break_long_words=False)
    lines = [f"# {line}" for line in wrapped]
    shown = "" if entry.value is None else _dotenv_value(entry.value)
    return [*lines, f"# {entry.env}={shown}"]


def render_env_example() -> str:
    lines = [
        "# Parley's configuration: every variable, commented out at its default.",
        f"# {GENERATED}",
        "# Copy it to .env and uncomment what you change; the environment wins over .env.",
        "# One with nothing after `=` is unset by default. As a table: docs/configuration.md.",
    ]
    for title, entries in sections():
        lines += ["", f"# ---- {title} ----"]
        for entry in entries:
            lines += ["", *_env_block(entry)]
    return "\n".join(lines) + "\n"


def outputs() -> dict[Path, str]:
    """Each generated file, by its path from the repository root, with its content."""
    return {MARKDOWN_PATH: render_markdown(), ENV_EXAMPLE_PATH: render_env_example()}


def stale(root: Path) -> list[Path]:
    """The generated files under `root` that are missing or differ from what renders now."""
    return [
        path
        for path, text in outputs().items()
        if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Write docs/configuration.md and .env.example."
    )
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    root = Path.cwd()
    # Refuse to scatter files into a directory that is not Parley's checkout.
    if not (root / "parley" / "config.py").is_file():
        print("run this from the repository root (where parley/config.py is)", file=sys.stderr)
        return 2
    if args.check:
        behind = stale(root)
        for path in behind:
            print(f"{path} is out of date; run `{COMMAND}`", file=sys.stderr)
        return 1 if behind else 0
    for path, text in outputs().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
