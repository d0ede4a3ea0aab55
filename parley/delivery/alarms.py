"""Account-wide trouble reported once, not once per message: an expired or invalid access
token fails every send of its account until someone replaces it, and a log full of the same
error per message would bury the one line that says what to do."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)


class TokenAlarm:
    """Per process: an account's token failure is logged as an error the first time, and a
    recovery once, when a send with it works again."""

    def __init__(self) -> None:
        self._failing: set[int] = set()

    def failed(self, *, account_id: int, channel: str, external_id: str, reason: str) -> None:
        if account_id in self._failing:
            return
        self._failing.add(account_id)
        log.error(
            "delivery.token_rejected",
            account_id=account_id,
            account_channel=channel,
            account_external_id=external_id,
            reason=reason,
            action="replace the account's access token; its replies wait until then "
            "(at most until the customer's reply window closes)",
        )

    def worked(self, *, account_id: int) -> None:
        if account_id in self._failing:
            self._failing.discard(account_id)
            log.info("delivery.token_accepted_again", account_id=account_id)

    def failing(self, account_id: int) -> bool:
        return account_id in self._failing
