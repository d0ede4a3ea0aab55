"""Which secret signed a webhook, whether it may speak for the accounts it names, and which
handshake tokens are ours, with the accounts' own credentials beside the environment's.

The channel's default secret (META_APP_SECRET…) is tried first, then the own app secrets of the
channel's configured accounts, so a forged body costs a few HMACs and is never parsed. Once the
body is parsed, every account it names must be one its signer signs for: an account with an app
secret of its own takes only bodies signed with it, the default secret signs for every other
configured account. An account Parley does not serve (unknown on a channel with configured
accounts, or removed) is only stored, so any of the secrets may carry it: one Meta app may have
numbers that Parley was not told about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from parley.channels.base import Channel, ParsedWebhook
from parley.config import Settings
from parley.errors import BadSignature, WebhookNotConfigured
from parley.store.queries.account_directory import Directory


@dataclass(frozen=True, slots=True)
class Signer:
    """The secret a body was signed with: None for the channel's default."""

    secret: str | None = field(default=None, repr=False)


def verify(
    channel: Channel,
    body: bytes,
    headers: Mapping[str, str],
    settings: Settings,
    directory: Directory,
) -> Signer:
    """Raises:
    WebhookNotConfigured: no secret at all to check with.
    BadSignature: none of the secrets signed `body`.
    """
    try:
        channel.verify(body, headers, settings)
        return Signer()
    except (BadSignature, WebhookNotConfigured) as exc:
        refused: Exception = exc
    secrets = directory.app_secrets(channel.name)
    for secret in secrets:
        try:
            channel.verify_with(body, headers, secret)
        except BadSignature:
            continue
        return Signer(secret)
    if secrets and isinstance(refused, WebhookNotConfigured):
        raise BadSignature("no configured app secret signed the body")
    raise refused


def foreign_accounts(
    channel: Channel,
    body: bytes,
    headers: Mapping[str, str],
    signer: Signer,
    parsed: ParsedWebhook,
    directory: Directory,
) -> list[str]:
    """The accounts `parsed` speaks for that `signer` does not sign for (none, normally)."""
    named = {m.account_external_id for m in parsed.messages}
    named |= {s.account_external_id for s in parsed.statuses}
    return sorted(x for x in named if not _signs_for(channel, body, headers, signer, directory, x))


def challenge(
    channel: Channel, params: Mapping[str, str], settings: Settings, directory: Directory
) -> str | None:
    """The answer to the channel's subscription check, with META_VERIFY_TOKEN or an account's
    own verify token; None to refuse it."""
    answer = channel.handshake(params, settings)
    for token in directory.verify_tokens(channel.name):
        if answer is not None:
            break
        answer = channel.handshake_with(params, token)
    return answer


def _signs_for(
    channel: Channel,
    body: bytes,
    headers: Mapping[str, str],
    signer: Signer,
    directory: Directory,
    external_id: str,
) -> bool:
    account = directory.lookup(channel.name, external_id)
    if account is None:
        return signer.secret is None or directory.is_configured(channel.name)
    if account.removed:
        return True
    if not account.own_app_secret:
        return signer.secret is None
    if account.app_secret is None:  # stored, but not readable with this PARLEY_SECRET_KEY
        return False
    if signer.secret == account.app_secret:
        return True
    # Signed with the default secret, which may also be this account's own.
    try:
        channel.verify_with(body, headers, account.app_secret)
    except BadSignature:
        return False
    return True
