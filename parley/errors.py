"""Parley's exceptions: one tree, no HTTP status on any of them; each door maps them.

ParleyError
├── BadSignature            a webhook's signature is missing or wrong
├── BadPayload              a webhook body is not JSON or not of the channel's shape
├── UnknownChannel          no channel is registered under that name
├── UpstreamError           OpenAI or a channel's API failed (retryable, retry_after)
│   ├── LLMError            the Responses API, after the SDK's own retries
│   └── ChannelSendError    a channel's send or read receipt (its `FailureKind`)
├── MediaUnavailable        a customer's file could not be fetched or is refused (reason)
├── LeaseLost               a worker's hold on a conversation expired mid-turn
├── ConversationGone        a turn's conversation expired or was erased while it ran
├── ConfigurationError      a setting is missing or contradicts another
│   ├── SecretsDisabled     a secret was to be stored or read with no PARLEY_SECRET_KEY
│   └── WebhookNotConfigured  no secret to verify a channel's webhooks with
├── SecretUnreadable        a stored secret does not decrypt (PARLEY_SECRET_KEY changed)
├── UserConflict            a user name is taken, or the last active admin would go
├── TooManyTokens           a user already has PARLEY_MAX_TOKENS_PER_USER live tokens
├── SecretInvalid           a secret's value holds a control character
├── AccountError            an accounts request that cannot be done
│   ├── AccountNotFound     no such account
│   ├── AccountConflict     the channel's id is already a configured account
│   └── AccountInvalid      a field is not valid (an unknown channel, a malformed id…)
├── ErasureError            an erasure that cannot be done
│   ├── ContactNotFound     no such contact
│   ├── AlreadyErased       the contact was erased before (`erased_at` says when)
│   └── ErasureRefused      the contact is a Responses API user's (delete the user instead)
├── ConversationError       an operator's request on a conversation that cannot be done
│   ├── ConversationNotFound  no such conversation
│   └── ConversationModeConflict  not in the mode the request needs (a reply in agent mode)
├── PromptError             a prompt registry request that cannot be done
│   ├── PromptNotFound      no such prompt, version, profile or binding
│   ├── PromptConflict      a prompt name is taken
│   └── PromptInvalid       a prompt file or field, or an A/B percentage, is not valid
└── RequestError            a Responses API request that cannot be done (message, param, code)
    ├── InvalidRequest      a field is wrong (an unknown model, a response that can't be cancelled)
    ├── NotFound            no such object for this caller
    └── Conflict            an Idempotency-Key reused with another body
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class ParleyError(Exception):
    """Base of every error Parley raises on purpose."""


class BadSignature(ParleyError):
    pass


class BadPayload(ParleyError):
    pass


class UnknownChannel(ParleyError):
    pass


class ConfigurationError(ParleyError):
    pass


class WebhookNotConfigured(ConfigurationError):
    pass


class SecretsDisabled(ConfigurationError):
    pass


class SecretUnreadable(ParleyError):
    pass


class TooManyTokens(ParleyError):
    pass


class SecretInvalid(ParleyError):
    pass


class UserConflict(ParleyError):
    pass


class AccountError(ParleyError):
    pass


class AccountNotFound(AccountError):
    pass


class AccountConflict(AccountError):
    pass


class AccountInvalid(AccountError):
    pass


class ConversationError(ParleyError):
    pass


class ConversationNotFound(ConversationError):
    pass


class ConversationModeConflict(ConversationError):
    pass


class PromptError(ParleyError):
    pass


class PromptNotFound(PromptError):
    pass


class PromptConflict(PromptError):
    pass


class PromptInvalid(PromptError):
    pass


class LeaseLost(ParleyError):
    pass


class ConversationGone(ParleyError):
    """The conversation a writer meant to add to no longer exists: retention deleted it, or
    its customer was erased, while a turn for it was running. The turn's result is dropped."""


class ErasureError(ParleyError):
    pass


class ContactNotFound(ErasureError):
    pass


class AlreadyErased(ErasureError):
    def __init__(self, message: str, *, erased_at: datetime) -> None:
        super().__init__(message)
        self.erased_at = erased_at


class ErasureRefused(ErasureError):
    pass


class MediaUnavailable(ParleyError):
    """A file a customer sent that Parley could not fetch, or refused to.

    Args:
        reason: a short, stable word for logs and for the agent (``too_large``,
            ``wrong_type``, ``host_not_allowed``, ``not_found``, ``timeout``,
            ``unavailable``, ``no_token``); never a URL or a token.
        detail: more for the log line, equally free of URLs and tokens.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class RequestError(ParleyError):
    """A request the turn logic refuses; the door that received it decides the status.

    Args:
        message: shown to the caller as it is.
        param: the request field at fault, if one is.
        code: a stable machine-readable code (``model_not_found``…).
    """

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(RequestError):
    pass


class NotFound(RequestError):
    def __init__(self, what: str, ident: str, *, param: str | None = None) -> None:
        super().__init__(f"No {what} found with id '{ident}'.", param=param, code="not_found")


class Conflict(RequestError):
    pass


class UpstreamError(ParleyError):
    """An upstream call failed.

    Args:
        message: what went wrong, safe to store (never shown to a customer).
        retryable: whether trying again later may succeed (429, 5xx, timeouts).
        retry_after: seconds the upstream asked us to wait, if it said.
        status: the HTTP status, if there was an answer.
        code: the upstream's error code (``rate_limit_exceeded``, ``131026``…).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.code = code


class LLMError(UpstreamError):
    pass


class FailureKind(StrEnum):
    """What a failed send means for what delivery does next."""

    THROTTLED = "throttled"
    """The account's send rate was exceeded: retried, and the account's sends slow down."""
    RECIPIENT_THROTTLED = "recipient_throttled"
    """Too many messages to this one customer: only their conversation waits, then retries."""
    TRANSIENT = "transient"
    """An outage or unknown error on the channel's side, or no answer: retried with backoff."""
    WINDOW_CLOSED = "window_closed"
    """The customer last wrote too long ago for a free-text reply: not retried."""
    UNDELIVERABLE = "undeliverable"
    """The customer cannot receive it (not on the app, blocked, unavailable): not retried."""
    INVALID_RECIPIENT = "invalid_recipient"
    """No such customer for this account: not retried."""
    TOKEN = "token"
    """The account's access token is expired or invalid: nothing goes out until it is fixed."""
    REJECTED = "rejected"
    """Any other refusal (bad request, permission, policy): not retried."""


RETRYABLE_KINDS = frozenset(
    {FailureKind.THROTTLED, FailureKind.RECIPIENT_THROTTLED, FailureKind.TRANSIENT}
)


class ChannelSendError(UpstreamError):
    """A send the channel refused or never answered.

    Args:
        kind: what the failure means (`FailureKind`); by default `TRANSIENT` when `retryable`,
            else `REJECTED`.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        code: str | None = None,
        kind: FailureKind | None = None,
    ) -> None:
        super().__init__(
            message, retryable=retryable, retry_after=retry_after, status=status, code=code
        )
        if kind is None:
            kind = FailureKind.TRANSIENT if retryable else FailureKind.REJECTED
        self.kind = kind
