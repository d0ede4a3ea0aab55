"""Log redaction: secrets by their field's exact name, phone numbers by their shape. Token
counts, token ids, Graph error codes and other numbers stay readable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.observability.logging import mask_pii, redact

GRAPH_CODES = [131056, 131026, 131047, 131000, 130429, 100, 190, 4, 10, 80007, 2018109]
codes = st.sampled_from(GRAPH_CODES) | st.integers(min_value=0, max_value=999_999)
counts = st.integers(min_value=0, max_value=999_999_999)


@pytest.mark.parametrize(
    "key",
    [
        "access_token",
        "app_secret",
        "authorization",
        "Authorization",
        "api_key",
        "password",
        "secret",
        "token",
        "verify_token",
        "signature",
        "x-hub-signature-256",
        "cookie",
        "whatsapp_access_token",
        "meta_app_secret",
        "parley_admin_token",
    ],
)
def test_secret_fields_are_redacted(key: str) -> None:
    assert redact(None, "info", {key: "s3cr3t-value"})[key] == "[redacted]"


@pytest.mark.parametrize(
    "key",
    [
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "token_id",
        "tokens",
    ],
)
def test_token_counts_and_ids_stay(key: str) -> None:
    assert redact(None, "info", {key: 1234})[key] == 1234
    assert redact(None, "info", {key: "42"})[key] == "42"


@settings(deadline=None)
@given(code=codes, status=st.sampled_from([400, 401, 403, 429, 500]))
def test_graph_error_codes_survive(code: int, status: int) -> None:
    for text in (
        f"graph {status} {code}: (#{code}) Message failed to send",
        f"recipient throttled (graph {status} {code}/2494010: pair rate)",
        f"error code={code} subcode: {code}",
        f"(#{code}) Invalid parameter",
    ):
        assert mask_pii(text) == text
        assert redact(None, "error", {"reason": text})["reason"] == text


@settings(deadline=None)
@given(count=counts, other=counts)
def test_counts_survive(count: int, other: int) -> None:
    text = f"filed {count} messages in {other} ms, attempt 3 of 5, 2026-11-30 21:03:02"
    assert mask_pii(text) == text


@st.composite
def e164(draw: st.DrawFn) -> str:
    """+, a country code and a subscriber number: 8 to 15 digits in all, maybe grouped."""
    country = str(draw(st.integers(min_value=1, max_value=999)))
    rest = draw(
        st.text("0123456789", min_size=max(8 - len(country), 4), max_size=15 - len(country))
    )
    groups = [rest[i : i + 3] for i in range(0, len(rest), 3)]
    separator = draw(st.sampled_from(["", " ", "-"]))
    return f"+{country}{' ' if separator else ''}{separator.join(groups)}"


@settings(deadline=None)
@given(number=e164(), code=codes)
def test_e164_numbers_are_masked(number: str, code: int) -> None:
    text = f"graph 400 {code}: cannot send to {number} right now"
    masked = mask_pii(text)
    assert number not in masked and "[phone]" in masked
    assert f"graph 400 {code}:" in masked


@settings(deadline=None)
@given(digits=st.text("0123456789", min_size=10, max_size=15))
def test_bare_long_numbers_are_masked(digits: str) -> None:
    assert mask_pii(f"customer {digits} wrote") == "customer [phone] wrote"


@settings(deadline=None)
@given(
    token=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-", min_size=8)
)
def test_bearer_tokens_are_masked(token: str) -> None:
    out = redact(None, "info", {"header": f"Authorization: Bearer {token}"})
    assert token not in out["header"] and "[redacted]" in out["header"]


def test_ids_and_business_numbers_stay() -> None:
    event = {
        "correlation_id": "f9764015033e45f5a38f64f9ab795bb5",
        "channel_message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        "account_external_id": "106540352242922",
        "timestamp": "2026-11-23T11:06:51.394341Z",
    }
    assert redact(None, "info", dict(event)) == event
