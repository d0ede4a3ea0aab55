"""structlog set-up: contextvars first (correlation, conversation, account, channel), then
secrets redacted before anything is rendered."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SENSITIVE_KEYS = re.compile(
    r"(token|secret|password|authorization|api_key|signature)", re.IGNORECASE
)
BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
IDENTIFIERS = frozenset({"account_external_id"})
"""Fields that hold a business's own ids (a phone_number_id looks like a phone number), not a
customer's: logged as they are, so that an operator can tell which account a line is about."""


EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A phone number: 8+ digits, maybe with +, spaces or dashes, standing alone; a run of digits
# inside an id (hex, wamid) touches letters and is left as it is.
PHONE = re.compile(r"(?<![\w.])\+?\d[\d -]{6,}\d(?![\w])")


def mask_pii(text: str) -> str:
    """Phone numbers and e-mail addresses in free text, masked for the logs."""
    return PHONE.sub("[phone]", EMAIL.sub("[email]", text))


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop the value of any field named like a secret; in strings, mask bearer tokens, phone
    numbers and e-mail addresses (error texts from upstreams may quote them)."""
    for key, value in list(event.items()):
        if SENSITIVE_KEYS.search(key):
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
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            redact,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library; keep their noise at warnings.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
    for name in ("httpx", "httpcore", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
