"""Meta's X-Hub-Signature-256 over the raw body."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from parley.channels.signature import sign, verify_signature
from parley.errors import BadSignature

SECRET = "app-secret"
BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def test_sign_is_hmac_sha256_hex_with_prefix() -> None:
    expected = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET) == f"sha256={expected}"


def test_own_signature_verifies() -> None:
    verify_signature(BODY, sign(BODY, SECRET), SECRET)


def test_uppercase_hex_and_surrounding_space_verify() -> None:
    digest = sign(BODY, SECRET).removeprefix("sha256=")
    verify_signature(BODY, f" sha256={digest.upper()} ", SECRET)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha1=" + "0" * 40,
        "0" * 64,
        "sha256=",
        "sha256=" + "z" * 64,
        "sha256=" + "ab" * 31,
        "sha256=" + "0" * 64,
    ],
    ids=["missing", "empty", "sha1", "no-prefix", "no-digest", "not-hex", "short", "mismatch"],
)
def test_bad_headers_are_refused(header: str | None) -> None:
    with pytest.raises(BadSignature):
        verify_signature(BODY, header, SECRET)


def test_any_change_to_the_body_is_refused() -> None:
    header = sign(BODY, SECRET)
    with pytest.raises(BadSignature):
        verify_signature(BODY + b" ", header, SECRET)


def test_signature_under_another_secret_is_refused() -> None:
    with pytest.raises(BadSignature):
        verify_signature(BODY, sign(BODY, "other-secret"), SECRET)


def test_empty_secret_never_verifies() -> None:
    with pytest.raises(BadSignature):
        verify_signature(BODY, sign(BODY, ""), "")


def test_non_ascii_body_is_signed_as_bytes() -> None:
    body = '{"text":"olá 👋"}'.encode()
    verify_signature(body, sign(body, SECRET), SECRET)
