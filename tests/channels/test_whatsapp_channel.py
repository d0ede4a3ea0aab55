"""WhatsApp through the `Channel` interface: what ingress and delivery call. Sending itself is
covered against a Graph-shaped server in test_whatsapp_send.py and end to end in ingress."""

from __future__ import annotations

import httpx
import pytest

from parley.channels import registry
from parley.channels.base import TextLimit
from parley.channels.text import CHARACTERS
from parley.config import Settings
from parley.errors import BadSignature, WebhookNotConfigured
from tests.factories import APP_SECRET, VERIFY_TOKEN, body_bytes, sample, signed_headers

CHANNEL = registry.get("whatsapp")
SETTINGS = Settings(
    _env_file=None,  # type: ignore[call-arg]
    meta_app_secret=APP_SECRET,
    meta_verify_token=VERIFY_TOKEN,
)
UNCONFIGURED = Settings(
    _env_file=None,  # type: ignore[call-arg]
    meta_app_secret=None,
    meta_verify_token=None,
)


def test_limit_is_4096_characters() -> None:
    assert CHANNEL.text_limit == TextLimit(4096, CHARACTERS)


def test_verify_checks_the_meta_signature_with_the_app_secret() -> None:
    body = body_bytes(sample("whatsapp/text.json"))
    CHANNEL.verify(body, httpx.Headers(signed_headers(body)), SETTINGS)
    with pytest.raises(BadSignature):
        CHANNEL.verify(body + b" ", httpx.Headers(signed_headers(body)), SETTINGS)
    with pytest.raises(BadSignature):
        CHANNEL.verify(body, httpx.Headers({}), SETTINGS)
    with pytest.raises(WebhookNotConfigured):
        CHANNEL.verify(body, httpx.Headers(signed_headers(body)), UNCONFIGURED)


@pytest.mark.parametrize(
    ("params", "answer"),
    [
        ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "7"}, "7"),
        ({"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "7"}, None),
        ({"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "7"}, None),
        ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}, None),
        ({"hub.challenge": "7"}, None),
    ],
)
def test_handshake(params: dict[str, str], answer: str | None) -> None:
    assert CHANNEL.handshake(params, SETTINGS) == answer


def test_handshake_is_refused_without_a_verify_token() -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "7"}
    assert CHANNEL.handshake(params, UNCONFIGURED) is None


def test_parse_reads_the_webhook() -> None:
    parsed = CHANNEL.parse(body_bytes(sample("whatsapp/text.json")))
    assert [m.channel for m in parsed.messages] == ["whatsapp"]


def test_render_formats_then_splits_within_4096_characters() -> None:
    answer = "\n\n".join(f"## Part {n}\n\n**Note** {n}: " + "word " * 150 for n in range(12))
    parts = CHANNEL.render(answer)
    assert len(parts) > 1
    assert all(0 < len(part) <= 4096 for part in parts)
    assert parts[0].startswith("*Part 0*\n\n*Note* 0:")
    assert not any("**" in part or "##" in part for part in parts)


def graph_answer(status: int, code: int | None = None, **headers: str) -> httpx.Response:
    error = {"message": "Invalid OAuth access token EAAG-t", "code": code} if code else {}
    return httpx.Response(status, json={"error": error}, headers=headers)


@pytest.mark.parametrize(
    ("failure", "retryable", "retry_after", "status", "code"),
    [
        (graph_answer(500, 1), True, None, 500, "1"),
        (graph_answer(429, **{"Retry-After": "7"}), True, 7.0, 429, None),
        (graph_answer(400, 130429), True, None, 400, "130429"),
        (graph_answer(400, 131026), False, None, 400, "131026"),
        (graph_answer(401, 190), False, None, 401, "190"),
        (httpx.ConnectError("refused"), True, None, None, None),
        (httpx.ReadTimeout("slow"), True, None, None, None),
        (httpx.UnsupportedProtocol("ftp"), False, None, None, None),
    ],
)
def test_classify_error(
    failure: httpx.Response | httpx.HTTPError,
    retryable: bool,
    retry_after: float | None,
    status: int | None,
    code: str | None,
) -> None:
    error = CHANNEL.classify_error(failure, token="EAAG-t")
    assert (error.retryable, error.retry_after, error.status, error.code) == (
        retryable,
        retry_after,
        status,
        code,
    )
    assert "EAAG-t" not in str(error)
