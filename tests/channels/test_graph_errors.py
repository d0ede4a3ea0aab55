"""graph_errors: every Graph code Parley acts on, the same whether it came in a send's answer
or in a failed status webhook."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from parley.channels import graph_errors, registry
from parley.errors import FailureKind

WHATSAPP = registry.get("whatsapp")

CASES = [
    # (code, subcode, HTTP status, kind, retryable)
    (130429, None, 400, FailureKind.THROTTLED, True),
    (4, None, 400, FailureKind.THROTTLED, True),
    (80007, None, 400, FailureKind.THROTTLED, True),
    (131056, None, 400, FailureKind.RECIPIENT_THROTTLED, True),
    (131000, None, 500, FailureKind.TRANSIENT, True),
    (2, None, 503, FailureKind.TRANSIENT, True),
    (131016, None, 503, FailureKind.TRANSIENT, True),
    (131047, None, 400, FailureKind.WINDOW_CLOSED, False),
    (10, 2018109, 400, FailureKind.WINDOW_CLOSED, False),
    (10, 2018278, 400, FailureKind.WINDOW_CLOSED, False),
    (131026, None, 400, FailureKind.UNDELIVERABLE, False),
    (551, None, 400, FailureKind.UNDELIVERABLE, False),
    (131030, None, 400, FailureKind.INVALID_RECIPIENT, False),
    (100, 2018001, 400, FailureKind.INVALID_RECIPIENT, False),
    (190, None, 401, FailureKind.TOKEN, False),
    (100, None, 400, FailureKind.REJECTED, False),
    (10, None, 403, FailureKind.REJECTED, False),
    (131049, None, 400, FailureKind.REJECTED, False),
]


def graph_body(code: int, subcode: int | None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": code,
        "message": f"(#{code}) something",
        "type": "OAuthException",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


@pytest.mark.parametrize(("code", "subcode", "status", "kind", "retryable"), CASES)
def test_in_a_send_answer(
    code: int, subcode: int | None, status: int, kind: FailureKind, retryable: bool
) -> None:
    answer = httpx.Response(status, json=graph_body(code, subcode))
    error = WHATSAPP.classify_error(answer, token="secret-token")
    assert (error.kind, error.retryable, error.code) == (kind, retryable, str(code))
    assert str(error).startswith(graph_errors.READABLE[kind])


@pytest.mark.parametrize(("code", "subcode", "status", "kind", "retryable"), CASES)
def test_in_a_failed_status(
    code: int, subcode: int | None, status: int, kind: FailureKind, retryable: bool
) -> None:
    report = {
        "code": code,
        "title": "Title from Meta",
        "message": "Message from Meta",
        "error_data": {"details": "Details from Meta"},
    }
    if subcode is not None:
        report["error_subcode"] = subcode
    error = WHATSAPP.classify_status([report])
    assert (error.kind, error.retryable, error.code) == (kind, retryable, str(code))
    assert str(error) == (
        f"{graph_errors.READABLE[kind]} (graph {code}{f'/{subcode}' if subcode else ''}: "
        "Title from Meta: Details from Meta)"
    )


def test_a_window_error_is_told_by_its_text_when_the_subcode_is_new() -> None:
    answer = httpx.Response(
        400, json={"error": {"code": 10, "message": "Message sent outside of allowed window."}}
    )
    assert WHATSAPP.classify_error(answer, token="secret-token").kind == FailureKind.WINDOW_CLOSED


def test_a_status_without_errors_is_final() -> None:
    error = WHATSAPP.classify_status([])
    assert (error.kind, error.retryable) == (FailureKind.REJECTED, False)


def test_5xx_without_a_code_and_429_are_retried() -> None:
    assert graph_errors.classify(code=None, status=502) == FailureKind.TRANSIENT
    assert graph_errors.classify(code=None, status=429) == FailureKind.THROTTLED
    assert graph_errors.classify(code=None, status=400) == FailureKind.REJECTED
