"""structlog set-up: contextvars first (correlation, conversation, account, channel); secrets,
phone numbers, e-mail addresses and card numbers masked as the very last step before a line is
rendered, once exceptions are formatted, for Parley's own lines and the standard library's."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
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


PII_HINT = re.compile(r"[\d@]")
"""Every phone, card and e-mail holds one: text without is returned without another scan."""
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
"""Control characters but tab and newline (tracebacks need those): a NUL or an escape sequence
from a customer's text would reach an operator's terminal as it is."""
PLAIN_KEYS = frozenset({"level", "log_level", "logger", "timestamp"})
"""Fields Parley writes itself, never customer text: not scanned."""
MIN_SECRET_CHARS = 8
"""Shorter settings values are not looked for in free text: they would mask ordinary words."""


def _phone(match: re.Match[str]) -> str:
    """`[phone]` for an E.164 number (+ and 8 to 15 digits) or 10 to 15 digits (in one run, or
    in groups of 2 or more), `[card]` for 16 to 19 digits that pass the Luhn check (a shorter
    card number is masked as a phone), unless it follows `code`, `error`, `graph`, `upstream`,
    `status` or `#` (Graph's `graph 400 2018109`, `(#131056)`).
    Error codes (100, 190, 131056, 80007), counts, status codes and dates are shorter or
    otherwise shaped, and stay."""
    text = match.group(0)
    before = match.string[max(match.start() - 12, 0) : match.start()]
    if CODE_CONTEXT.search(before):
        return text
    digits = sum(c.isdigit() for c in text)
    if match.group(1):
        return "[phone]" if 8 <= digits <= 15 else text
    if 16 <= digits <= 19:
        return _card(text)
    if not 10 <= digits <= 15:
        return text
    groups = [g for g in GROUP_SPLIT.split(text) if g]
    return "[phone]" if all(len(g) >= 2 for g in groups) else text


def _card(text: str) -> str:
    digits = [int(c) for c in reversed(text) if c.isdigit()]
    odd = sum(digits[0::2])
    even = sum(d * 2 - 9 if d > 4 else d * 2 for d in digits[1::2])
    return "[card]" if (odd + even) % 10 == 0 else text


def mask_pii(text: str) -> str:
    """Phone numbers, e-mail addresses and payment card numbers (Luhn-valid) in free text,
    masked for the logs."""
    if not PII_HINT.search(text):
        return text
    if "@" in text:
        text = EMAIL.sub("[email]", text)
    return PHONE.sub(_phone, text)


def is_secret(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in SECRET_KEYS or name.endswith(SECRET_SUFFIXES)


class Redactor:
    """The last processor before the renderer, after exceptions are formatted: every value as
    it is about to be written (strings; other objects as their `repr`, which is what the
    renderers would write; dicts and lists walked) has secrets, bearer tokens, phone numbers,
    e-mail addresses and card numbers masked. Fields named as secrets lose their value.

    Running last is the point: an exception's text and traceback (a database error quoting
    its parameters, an asyncio task's failure, an upstream's error body) exist only once
    `format_exc_info` has run, and the standard library's records (uvicorn, SQLAlchemy,
    asyncio, httpx) go through the same final processors. Masking values rather than the
    rendered line keeps JSON valid (a pattern run over escaped JSON could split an escape)
    and leaves `IDENTIFIERS` readable.

    Args:
        secrets: values known to be secret (the settings' tokens and keys), masked wherever
            they appear, as they are and as Python or JSON would quote them.
        escape_controls: write control characters as `\\xNN` (the console renderer; JSON
            escapes them itself).
    """

    def __init__(self, secrets: Iterable[str] = (), *, escape_controls: bool = False) -> None:
        forms: set[str] = set()
        for value in secrets:
            if len(value) >= MIN_SECRET_CHARS:
                forms.update({value, repr(value)[1:-1], json.dumps(value)[1:-1]})
        # Longest first, so that a secret holding another is masked whole.
        self.secrets = tuple(sorted(forms, key=len, reverse=True))
        self.escape_controls = escape_controls

    def __call__(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            if is_secret(key):
                event[key] = "[redacted]"
            elif key not in IDENTIFIERS and key not in PLAIN_KEYS:
                event[key] = self.value(value)
        return event

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            # Counts and ids are short; only a number as long as a phone's is looked at.
            if -(10**7) < value < 10**7:
                return value
            masked = self.text(str(value))
            return value if masked == str(value) else masked
        if isinstance(value, dict):
            return {
                k: "[redacted]" if isinstance(k, str) and is_secret(k) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return self.text(repr(value))

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        if "bearer" in text.lower():
            text = BEARER.sub(r"\1[redacted]", text)
        text = mask_pii(text)
        if self.escape_controls and CONTROL.search(text):
            text = CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)
        return text


redact = Redactor()
"""Masking without known secret values, for callers outside `configure_logging` (tests'
`capture_logs`)."""


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # sys.stderr as it is when the line is written, not when logging was configured: a command
    # run under a test runner (or any caller) that swaps stderr for a while leaves no logger
    # pointing at a stream that is closed afterwards.
    return structlog.PrintLogger(sys.stderr)


_writes_from = logging.NOTSET
"""The lowest level written, as `configure_logging` last set it (until then, every level)."""


def writes(level: int) -> bool:
    """Whether a line at `level` would be written. For the hottest paths only (the webhook
    door's line per request): structlog builds a bound logger for every call on a module's
    logger, even for a line its level then drops."""
    return level >= _writes_from


def reset_logging() -> None:
    """structlog's defaults back (every level written, to stdout), as before any
    `configure_logging`."""
    global _writes_from
    _writes_from = logging.NOTSET
    structlog.reset_defaults()


def configure_logging(
    level: str = "INFO", fmt: str = "console", secrets: Iterable[str] = ()
) -> None:
    """structlog for Parley's own lines, and the standard library's (uvicorn, SQLAlchemy,
    asyncio, libraries) routed through the same processors, so that with `json` every line on
    stderr is one JSON object, whoever wrote it, and every line is masked (`Redactor`) after
    its exception is formatted. `secrets`: the settings' secret values, masked wherever they
    appear."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    final = Redactor(secrets, escape_controls=fmt != "json")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    global _writes_from
    _writes_from = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, final, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_writes_from),
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
                final,
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
