"""structlog set-up: contextvars first (correlation, conversation, account, channel), then
secrets redacted before anything is rendered."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = frozenset(
    {
        "access_token",
        "admin_token",
        "api_key",
        "app_secret",
        "authorization",
        "bearer",
        "client_secret",
        "cookie",
        "password",
        "private_key",
        "proxy_authorization",
        "refresh_token",
        "secret",
        "secret_key",
        "set_cookie",
        "signature",
        "token",
        "verify_token",
        "x_hub_signature",
        "x_hub_signature_256",
    }
)
"""Fields whose value is a secret, by exact name (lower case, `-` read as `_`). Token counts
(`input_tokens`, `output_tokens`) and token ids (`token_id`) are not secrets and stay."""
SECRET_SUFFIXES = ("_access_token", "_api_key", "_password", "_secret", "_secret_key", "_token")
"""…and names built on them (`whatsapp_access_token`, `meta_app_secret`, `parley_admin_token`)."""

BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
IDENTIFIERS = frozenset({"account_external_id"})
"""Fields that hold a business's own ids (a phone_number_id looks like a phone number), not a
customer's: logged as they are, so that an operator can tell which account a line is about."""


EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Something shaped like a phone number: digits, maybe led by +, maybe in groups split by spaces,
# dashes or brackets, standing alone (a run of digits inside an id, a wamid or a decimal touches
# letters or dots and is left as it is). `_phone` then decides by the number of digits.
PHONE = re.compile(r"(?<![\w#.+/:-])(\+)?\d[\d ()-]{5,22}\d(?![\w]|[.:/]\d)")
# What Graph's and the upstream's error texts put before their numbers: `graph 400 131056`,
# `(#2018109)`, `code=190`, `upstream 429`.
CODE_CONTEXT = re.compile(
    r"(?:code|subcode|error|graph|upstream|status|#)[\s:=]*\(?$", re.IGNORECASE
)
GROUP_SPLIT = re.compile(r"[ ()-]+")


def _phone(match: re.Match[str]) -> str:
    """`[phone]` for an E.164 number (+ and 8 to 15 digits) or 10 to 15 digits (in one run, or
    in groups of 2 or more), unless it follows `code`, `error`, `graph`, `upstream`, `status`
    or `#` (Graph's `graph 400 2018109`, `(#131056)`).
    Error codes (100, 190, 131056, 80007), counts, status codes and dates are shorter or
    otherwise shaped, and stay."""
    text = match.group(0)
    before = match.string[max(match.start() - 12, 0) : match.start()]
    if CODE_CONTEXT.search(before):
        return text
    digits = sum(c.isdigit() for c in text)
    if match.group(1):
        return "[phone]" if 8 <= digits <= 15 else text
    if not 10 <= digits <= 15:
        return text
    groups = [g for g in GROUP_SPLIT.split(text) if g]
    return "[phone]" if all(len(g) >= 2 for g in groups) else text


def mask_pii(text: str) -> str:
    """Phone numbers and e-mail addresses in free text, masked for the logs."""
    return PHONE.sub(_phone, EMAIL.sub("[email]", text))


def is_secret(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in SECRET_KEYS or name.endswith(SECRET_SUFFIXES)


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop the value of any field named as a secret; in strings, mask bearer tokens, phone
    numbers and e-mail addresses (error texts from upstreams may quote them)."""
    for key, value in list(event.items()):
        if is_secret(key):
            event[key] = "[redacted]"
        elif isinstance(value, str) and key not in IDENTIFIERS:
            if "bearer" in value.lower():
                value = BEARER.sub(r"\1[redacted]", value)
            event[key] = mask_pii(value)
    return event


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # sys.stderr as it is when the line is written, not when logging was configured: a command
    # run under a test runner (or any caller) that swaps stderr for a while leaves no logger
    # pointing at a stream that is closed afterwards.
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """structlog for Parley's own lines, and the standard library's (uvicorn, SQLAlchemy,
    libraries) routed through the same processors, so that with `json` every line on stderr
    is one JSON object, whoever wrote it."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        redact,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries log through the standard library; keep their noise at warnings.
    root.setLevel(logging.WARNING)
    for name in ("httpx", "httpcore", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn's loggers carry handlers of their own unless it is told `log_config=None`; route
    # them to the root's, so that their lines are rendered like every other.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is at each line (see `_stderr_logger`)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)
