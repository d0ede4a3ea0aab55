"""Log redaction: secrets by their field's exact name, phone numbers by their shape. Token
counts, token ids, Graph error codes and other numbers stay readable."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.observability.logging import Redactor, mask_pii, redact

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


def luhn_completed(digits: str) -> str:
    """`digits` with the check digit that makes it a valid card number."""
    for check in "0123456789":
        number = digits + check
        total = sum(
            (d * 2 - 9 if d > 4 else d * 2) if i % 2 else d
            for i, d in enumerate(int(c) for c in reversed(number))
        )
        if total % 10 == 0:
            return number
    raise AssertionError("unreachable")


@settings(deadline=None)
@given(
    digits=st.text("0123456789", min_size=15, max_size=18),
    separator=st.sampled_from(["", " ", "-"]),
)
def test_card_numbers_are_masked(digits: str, separator: str) -> None:
    number = luhn_completed(digits)
    grouped = separator.join(number[i : i + 4] for i in range(0, len(number), 4))
    assert mask_pii(f"paid with {grouped} today") == "paid with [card] today"


def test_order_numbers_and_ids_that_fail_luhn_stay() -> None:
    order = "1234567890123456"  # 16 digits, not Luhn-valid
    assert mask_pii(f"order {order}") == f"order {order}"
    assert mask_pii("trace 4bf92f3577b34da6a3ce929d0e0e4736") == (
        "trace 4bf92f3577b34da6a3ce929d0e0e4736"
    )


def test_values_are_masked_as_they_would_be_written() -> None:
    """Numbers as long as a phone's, nested fields, objects by their repr; secret values
    given to the redactor wherever they appear, as is and quoted."""

    class Customer:
        def __repr__(self) -> str:
            return "Customer(email='jane@example.com')"

    secret = 'sk-live-"quoted"\\value'
    redactor = Redactor([secret, "short"])
    event = redactor(
        None,
        "error",
        {
            "event": "failed",
            "wa_id": 14155550100,
            "attempt": 3,
            "ratio": 0.5,
            "ok": True,
            "body": {"to": ["jane@example.com"], "access_token": "x"},
            "customer": Customer(),
            "exception": f"ValueError({secret!r}) and {json.dumps(secret)} and short",
        },
    )
    assert event["wa_id"] == "[phone]"
    assert (event["attempt"], event["ratio"], event["ok"]) == (3, 0.5, True)
    assert event["body"] == {"to": ["[email]"], "access_token": "[redacted]"}
    assert event["customer"] == "Customer(email='[email]')"
    # Values under 8 characters are not looked for: they would mask ordinary words.
    assert event["exception"] == "ValueError('[redacted]') and \"[redacted]\" and short"


def test_control_characters_are_escaped_for_the_console_only() -> None:
    line = {"event": "text\x00with\x1b[31m escapes\tand\nlines"}
    console = Redactor(escape_controls=True)(None, "info", dict(line))
    assert console["event"] == "text\\x00with\\x1b[31m escapes\tand\nlines"
    assert Redactor()(None, "info", dict(line)) == line
