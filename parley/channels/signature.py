"""Meta's webhook verification, shared by WhatsApp, Instagram and Messenger: the signature
``X-Hub-Signature-256: sha256=<hex>`` on every POST, and the ``hub.*`` subscription handshake.

The HMAC covers the raw request bytes, so verification must run before any parsing: a JSON
round trip would change the bytes and with them the digest.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from parley.errors import BadSignature, WebhookNotConfigured

__all__ = [
    "PREFIX",
    "SIGNATURE_HEADER",
    "hub_challenge",
    "sign",
    "verify_request",
    "verify_signature",
]

PREFIX = "sha256="
SIGNATURE_HEADER = "x-hub-signature-256"
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def sign(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` header value Meta would send for `body`."""
    return PREFIX + _digest(body, secret).hex()


def verify_request(body: bytes, headers: Mapping[str, str], secret: str | None) -> None:
    """Check a webhook POST's signature header; `WebhookNotConfigured` without a `secret`."""
    if not secret:
        raise WebhookNotConfigured("no app secret to verify webhooks with")
    verify_signature(body, headers.get(SIGNATURE_HEADER), secret)


def hub_challenge(params: Mapping[str, str], verify_token: str | None) -> str | None:
    """The ``hub.challenge`` to echo when the subscription check names our `verify_token`."""
    token = params.get("hub.verify_token")
    challenge = params.get("hub.challenge")
    if (
        not verify_token
        or params.get("hub.mode") != "subscribe"
        or token is None
        or challenge is None
        or not hmac.compare_digest(token.encode(), verify_token.encode())
    ):
        return None
    return challenge


def verify_signature(body: bytes, header_value: str | None, secret: str) -> None:
    """Raise `BadSignature` unless `header_value` is Meta's signature of `body` under `secret`."""
    if not secret:
        # An empty key would let anyone forge a valid signature.
        raise BadSignature("no app secret to verify with")
    received = _received_digest(header_value)
    if not hmac.compare_digest(received, _digest(body, secret)):
        raise BadSignature("signature mismatch")


def _received_digest(header_value: str | None) -> bytes:
    if not header_value:
        raise BadSignature("missing signature header")
    value = header_value.strip()
    if value[: len(PREFIX)].lower() != PREFIX:
        raise BadSignature("signature is not sha256=")
    hex_digest = value[len(PREFIX) :]
    if not _HEX_DIGEST.fullmatch(hex_digest):
        raise BadSignature("signature is not a sha256 hex digest")
    return bytes.fromhex(hex_digest)


def _digest(body: bytes, secret: str) -> bytes:
    # The one-shot form: OpenSSL's HMAC in one call, without the HMAC object (five Python
    # calls) that `hmac.new(…).digest()` builds for every webhook.
    return hmac.digest(secret.encode(), body, "sha256")
