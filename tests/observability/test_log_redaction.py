"""Logs are masked after formatting: a database error's text, an asyncio task's unretrieved
exception and a traceback holding a secret leave no phone number, e-mail address or secret on
stderr, in JSON (still one object a line) and on the console."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import textwrap
from collections.abc import Iterator

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from parley.config import Settings
from parley.observability import logging as parley_logging
from parley.observability.logging import configure_logging
from parley.store.db import create_engine
from tests.conftest import Parley
from tests.factories import APP_SECRET

PHONE = "+1 415 555 0100"
EMAIL = "jane@example.com"
CUSTOMER_TEXT = f"call me on {PHONE} or write to {EMAIL}"
SECRET = "sk-live-7f3a9c2e4b1d8f6a0c5e"


def leaks(output: str, *values: str) -> list[str]:
    """What of `values` (and the digits of PHONE, however spaced) is in `output`."""
    found = [value for value in values if value in output]
    if "4155550100" in output.replace(" ", "") or "415 555 0100" in output:
        found.append(PHONE)
    return found


def json_lines(output: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines and all(isinstance(line, dict) for line in lines)
    return lines


@pytest.fixture
def reset_logging() -> Iterator[None]:
    yield
    parley_logging.reset_logging()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h).__name__ == "_StderrHandler"]:
        root.removeHandler(handler)


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_a_database_error_quoting_a_customer_message_is_masked(
    parley: Parley,
    settings: Settings,
    reset_logging: None,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
) -> None:
    # `parley` has migrated the store. A prompt's name is unique: the second insert of the
    # customer's text is refused, on either backend.
    configure_logging("INFO", fmt, settings.secret_values())
    engine = create_engine(settings.database_url)
    insert = text("INSERT INTO prompts (name, created_at) VALUES (:name, CURRENT_TIMESTAMP)")
    try:
        async with engine.begin() as connection:
            await connection.execute(insert, {"name": CUSTOMER_TEXT})
        with pytest.raises(IntegrityError) as refused:
            async with engine.begin() as connection:
                await connection.execute(insert, {"name": CUSTOMER_TEXT})
    finally:
        await engine.dispose()
    # The statement's parameters are not in the error's text at all.
    assert "parameters hidden" in str(refused.value)
    assert EMAIL not in str(refused.value.statement)

    error = refused.value
    log = structlog.get_logger()
    try:
        # A secret of the settings in a traceback: as an upstream's error might quote it.
        raise RuntimeError(f"could not file {CUSTOMER_TEXT} for {APP_SECRET}") from error
    except RuntimeError:
        log.exception("store.refused", detail=f"{error} / {CUSTOMER_TEXT}")
        logging.getLogger("sqlalchemy.engine").error("refused %s", CUSTOMER_TEXT, exc_info=True)
    err = capsys.readouterr().err
    assert "IntegrityError" in err and "store.refused" in err
    assert leaks(err, EMAIL, APP_SECRET) == []
    assert "[email]" in err and "[phone]" in err and "for [redacted]" in err
    if fmt == "json":
        events = {line["event"]: line for line in json_lines(err)}
        assert "RuntimeError: could not file call me on [phone]" in str(
            events["store.refused"]["exception"]
        )
        assert events["refused call me on [phone] or write to [email]"]["logger"] == (
            "sqlalchemy.engine"
        )


UNRETRIEVED = """
import asyncio, gc, sys

import uvloop

from parley.cli_store import load_settings

load_settings()  # as `parley serve`, `api` and `worker` configure their logging


async def fail() -> None:
    raise ValueError(sys.argv[2].replace("<NUL>", "\\0"))


async def main() -> None:
    task = asyncio.get_running_loop().create_task(fail())
    await asyncio.wait([task])
    del task  # never awaited, never asked for its exception: the loop reports it when collected
    gc.collect()


factory = uvloop.new_event_loop if sys.argv[1] == "uvloop" else asyncio.new_event_loop
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main())
"""


@pytest.mark.parametrize(
    ("loop", "fmt"), [("asyncio", "json"), ("uvloop", "json"), ("uvloop", "console")]
)
async def test_an_unretrieved_task_exception_is_masked(
    settings_env: dict[str, str], loop: str, fmt: str
) -> None:
    # A quote, a backslash, a newline and a NUL around the e-mail address: the JSON line must
    # still parse, and the console must not get the NUL as it is.
    message = f'customer "{EMAIL}"\\\n{PHONE}\x00 via key {SECRET}'
    env = {
        **os.environ,
        **settings_env,
        "OPENAI_API_KEY": SECRET,
        "PARLEY_LOG_FORMAT": fmt,
        "PARLEY_LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(UNRETRIEVED),
        loop,
        message.replace("\x00", "<NUL>"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    err = stderr.decode()
    assert "never retrieved" in err and "ValueError" in err
    assert leaks(err, EMAIL, SECRET) == []
    assert "[email]" in err and "[phone]" in err and "[redacted]" in err
    assert "\x00" not in err and "<NUL>" not in err
    if fmt == "console":
        assert "\\x00" in err
    if fmt == "json":
        (line,) = [line for line in json_lines(err) if "never retrieved" in str(line["event"])]
        assert line["logger"] == "asyncio" and line["level"] == "error"
        assert "ValueError: customer" in str(line["exception"])
