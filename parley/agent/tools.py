"""Function tools the agent may call: two built in, more declared in configuration.

`PARLEY_TOOLS` (JSON text or `@path`) is a list of
``{"name", "description", "parameters": <JSON schema>, "python": "pkg.module:function"}`` or
``{..., "http": {"url", "method": "POST", "headers": {...}}}``, each with an optional
``"timeout"`` in seconds. A tool's answer is text; a failing tool answers with its error,
which the model reads, so a broken tool never breaks a turn.

An HTTP tool's header values may name the calling user's secrets as ``{secret:NAME}``, e.g.
``"headers": {"Authorization": "Bearer {secret:crm_token}"}``: at call time each is replaced by
that user's secret NAME (set with ``PUT /v1/me/secrets/NAME``), decrypted with
PARLEY_SECRET_KEY. Only turns of the Responses API have a user; elsewhere, or when the secret
is not set, the tool answers an error and sends nothing. Values never reach the model or logs:
a value holding a control character is refused before sending (it could split the header),
and whatever the tool answers, its output or its error, has every occurrence of the values
used replaced by `[secret]` before it is stored, returned or sent upstream (`scrub`).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.llm import ToolCall
from parley.errors import ConfigurationError, SecretUnreadable
from parley.observability.metrics import count_handoff
from parley.store.crypto import SecretBox
from parley.store.queries.handoff import BY_TOOL, hand_to_human
from parley.store.queries.users import has_control_character, read_secrets

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT = 10.0
MAX_OUTPUT_CHARS = 8000
HANDOFF = "handoff_to_human"
CURRENT_TIME = "current_time"
SECRET_REFERENCE = re.compile(r"\{secret:([A-Za-z0-9_.-]+)\}")
SCRUBBED = "[secret]"
MIN_SCRUBBED = 4
"""Shorter values are not scrubbed: replacing every "ab" in an answer hides nothing worth it."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    conversation_id: int
    timezone: str = "UTC"
    user_id: int | None = None
    """The Responses API caller whose turn this is (their secrets are the tools' to use)."""


Runner = Callable[[dict[str, Any], ToolContext], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Runner
    timeout: float = DEFAULT_TIMEOUT

    def definition(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": False,
        }


@dataclass(frozen=True, slots=True)
class ToolEvent:
    """One call the model made and what the tool answered, stored as a message."""

    call: ToolCall
    output: str


@dataclass
class ToolRegistry:
    tools: dict[str, Tool] = field(default_factory=dict)

    def definitions(self) -> list[dict[str, Any]]:
        return [tool.definition() for tool in self.tools.values()]

    async def call(self, call: ToolCall, context: ToolContext) -> str:
        tool = self.tools.get(call.name)
        if tool is None:
            return f"error: there is no tool named {call.name!r}"
        try:
            arguments = json.loads(call.arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            return f"error: the arguments are not a JSON object ({exc})"
        try:
            async with asyncio.timeout(tool.timeout):
                output = await tool.run(arguments, context)
        except TimeoutError:
            log.warning("tool.timed_out", tool=call.name)
            return f"error: the tool did not answer within {tool.timeout:g} s"
        except Exception as exc:  # a tool is user code: its failure is the model's to read
            log.warning("tool.failed", tool=call.name, error=type(exc).__name__)
            return f"error: {type(exc).__name__}: {exc}"[:MAX_OUTPUT_CHARS]
        log.info("tool.called", tool=call.name)
        return output[:MAX_OUTPUT_CHARS]


def builtin_tools(
    sessions: async_sessionmaker[AsyncSession], *, notify: bool = False
) -> list[Tool]:
    async def handoff(arguments: dict[str, Any], context: ToolContext) -> str:
        # The conversation leaves the agent: the worker stops answering it from now on, and
        # (with `notify`) PARLEY_HANDOFF_WEBHOOK_URL is told by the worker's notifier.
        reason = str(arguments.get("reason", ""))[:200]
        async with sessions() as session:
            await hand_to_human(
                session,
                conversation_id=context.conversation_id,
                assignee=BY_TOOL,
                reason=reason or None,
                notify=notify,
            )
            await session.commit()
        count_handoff("agent")
        log.info("tool.handoff", reason=reason)
        return "Done: a human colleague now has this conversation. Tell the customer so, briefly."

    async def current_time(arguments: dict[str, Any], context: ToolContext) -> str:
        try:
            zone = ZoneInfo(str(arguments.get("timezone") or context.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        now = datetime.now(UTC).astimezone(zone)
        return f"{now:%A %Y-%m-%d %H:%M} ({zone.key})"

    return [
        Tool(
            HANDOFF,
            "Hand the conversation to a human colleague when the customer asks for a person, "
            "is upset, or needs something you cannot do.",
            {
                "type": "object",
                "properties": {"reason": {"type": "string", "description": "why, in a few words"}},
                "required": ["reason"],
            },
            handoff,
        ),
        Tool(
            CURRENT_TIME,
            "The current date and time in the business's time zone (or a given IANA zone).",
            {"type": "object", "properties": {"timezone": {"type": "string"}}},
            current_time,
        ),
    ]


def load_tools(
    setting: str | None,
    *,
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    builtins: str = f"{HANDOFF},{CURRENT_TIME}",
    secrets: SecretBox | None = None,
    notify_handoffs: bool = False,
) -> ToolRegistry:
    wanted = {name.strip() for name in builtins.split(",") if name.strip()}
    available = {tool.name: tool for tool in builtin_tools(sessions, notify=notify_handoffs)}
    unknown = wanted - set(available)
    if unknown:
        raise ConfigurationError(f"PARLEY_BUILTIN_TOOLS names unknown tools: {sorted(unknown)}")
    registry = ToolRegistry({name: available[name] for name in sorted(wanted)})
    for entry in _entries(setting):
        tool = _configured(entry, http, SecretReader(sessions, secrets))
        registry.tools[tool.name] = tool
    return registry


def _entries(setting: str | None) -> list[dict[str, Any]]:
    if not setting:
        return []
    text = Path(setting[1:]).read_text(encoding="utf-8") if setting.startswith("@") else setting
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"PARLEY_TOOLS is not JSON: {exc}") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigurationError("PARLEY_TOOLS must be a list of tool objects")
    return entries


def _configured(entry: dict[str, Any], http: httpx.AsyncClient, reader: SecretReader) -> Tool:
    try:
        name, description = str(entry["name"]), str(entry.get("description", ""))
        parameters = entry.get("parameters") or {"type": "object", "properties": {}}
        timeout = float(entry.get("timeout", DEFAULT_TIMEOUT))
        if "python" in entry:
            run = _python_runner(str(entry["python"]))
        elif "http" in entry:
            run = _http_runner(dict(entry["http"]), http, reader)
        else:
            raise ConfigurationError(f"tool {name!r} needs `python` or `http`")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"PARLEY_TOOLS entry is incomplete: {exc}") from exc
    return Tool(name, description, parameters, run, timeout)


def _python_runner(target: str) -> Runner:
    module_name, _, attribute = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"tool target {target!r} cannot be imported: {exc}") from exc

    async def run(arguments: dict[str, Any], context: ToolContext) -> str:
        if inspect.iscoroutinefunction(function):
            result = await function(**arguments)
        else:  # plain functions may block: keep them off the event loop
            result = await asyncio.to_thread(function, **arguments)
        return result if isinstance(result, str) else json.dumps(result, default=str)

    return run


def _http_runner(spec: dict[str, Any], http: httpx.AsyncClient, reader: SecretReader) -> Runner:
    url, method = str(spec["url"]), str(spec.get("method", "POST")).upper()
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    wanted = {name for value in headers.values() for name in SECRET_REFERENCE.findall(value)}

    async def run(arguments: dict[str, Any], context: ToolContext) -> str:
        sent = headers
        if wanted:
            found = await reader.read(context.user_id, wanted)
            if isinstance(found, str):
                return found
            bad = sorted(n for n, v in found.items() if has_control_character(v))
            if bad:
                return f"error: the secret(s) {', '.join(bad)} hold a control character; set again"
            sent = {k: SECRET_REFERENCE.sub(lambda m: found[m[1]], v) for k, v in headers.items()}
            values = list(found.values())
        else:
            values = []
        try:
            response = await http.request(method, url, json=arguments, headers=sent)
            response.raise_for_status()
        except Exception as exc:  # an error may quote the request's headers: scrub it here
            log.warning("tool.failed", tool=url.split("?")[0], error=type(exc).__name__)
            return scrub(f"error: {type(exc).__name__}: {exc}", values)[:MAX_OUTPUT_CHARS]
        return scrub(response.text, values)

    return run


def scrub(text: str, values: list[str]) -> str:
    """`text` with each of `values` (as is, and as Python and JSON would quote it) replaced by
    `[secret]`, longest first so that a secret holding another is hidden whole."""
    forms = {
        form
        for value in values
        if len(value) >= MIN_SCRUBBED
        for form in (value, repr(value)[1:-1], json.dumps(value)[1:-1])
    }
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, SCRUBBED)
    return text


@dataclass(frozen=True, slots=True)
class SecretReader:
    """The calling user's secrets for an HTTP tool's headers."""

    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox | None

    async def read(self, user_id: int | None, names: set[str]) -> dict[str, str] | str:
        """The values of `names`, or the error text the tool answers instead."""
        if user_id is None:
            return "error: this tool needs the caller's secrets, and this turn has no user"
        if self.box is None:
            return "error: this tool needs secrets, and the server has no PARLEY_SECRET_KEY"
        async with self.sessions() as session:
            try:
                found = await read_secrets(session, user_id=user_id, names=names, box=self.box)
            except SecretUnreadable:
                log.warning("tool.secret_unreadable", user_id=user_id)
                return "error: a secret this tool needs cannot be read; set it again"
        missing = sorted(names - set(found))
        if missing:
            return f"error: set the secret(s) {', '.join(missing)} for this tool to work"
        return found
