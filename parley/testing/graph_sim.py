"""A stand-in for Meta's Graph API send endpoint (`POST /{version}/{id}/messages`), for
WhatsApp Cloud API, Instagram and Messenger sends, served over real HTTP; and for the files
customers send (`GET /{version}/{media_id}` and a loopback CDN, see `graph_media`). With
``instagram_login=True`` it stands for graph.instagram.com instead, which serves only
Instagram's sends (run one of each to tell the two Instagram setups apart).

It checks what Meta checks before accepting a send (token, recipient, text length), answers
with Meta's shapes and ids, and records every request so tests can read what a customer
would have received.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from parley.testing.faults import ApiError, Recorded, Simulator, bearer_token
from parley.testing.graph_media import MediaFiles

__all__ = ["GraphSimulator"]

VERSION = re.compile(r"^v\d+\.\d+$")
WHATSAPP_TEXT_LIMIT = 4096  # characters
INSTAGRAM_TEXT_LIMIT = 1000  # UTF-8 bytes
MESSENGER_TEXT_LIMIT = 2000  # characters
SENDER_ACTIONS = {"typing_on", "typing_off", "mark_seen", "react", "unreact"}
MESSAGING_TYPES = {"RESPONSE", "UPDATE", "MESSAGE_TAG"}
MESSAGE_TAGS = {"HUMAN_AGENT", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE"}

# Graph codes per HTTP status when a test injects a status without naming a code.
DEFAULT_CODES = {400: 100, 401: 190, 403: 10, 404: 100, 429: 130429, 500: 2, 502: 2, 503: 2}
STATUS_TITLES = {
    130429: "Rate limit hit",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131000: "Something went wrong",
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131030: "Recipient phone number not in allowed list",
    2: "Service temporarily unavailable",
    4: "Too many calls",
    190: "Access token has expired",
}
DEFAULT_MESSAGES = {
    100: "(#100) Invalid parameter",
    190: "Error validating access token: Session has expired.",
    10: "(#10) Application does not have permission for this action",
    130429: "(#130429) Rate limit hit",
    2: "An unexpected error has occurred. Please retry your request later.",
}


@dataclass
class StatusFault:
    """Accept the next sends, then report them `failed` with this error in a status webhook."""

    code: int
    title: str
    details: str | None
    subcode: int | None
    remaining: int | None


class GraphSimulator(Simulator):
    def __init__(
        self,
        *,
        latency: float = 0.0,
        tokens: Collection[str] | None = None,
        send_rate: float | None = None,
        messenger_pages: Collection[str] = (),
        instagram_login: bool = False,
    ) -> None:
        """`tokens`, when given, are the only access tokens accepted. `send_rate` limits
        messages per second per sending id (WhatsApp throughput, error 130429).
        Sends from ids in `messenger_pages` get Messenger's 2000-character text limit;
        other `recipient.id` sends get Instagram's 1000-byte limit. `instagram_login`: be
        graph.instagram.com, which knows no WhatsApp and no pages."""
        super().__init__(latency=latency)
        self.tokens = set(tokens) if tokens is not None else None
        self.send_rate = send_rate
        self.messenger_pages = set(messenger_pages)
        self.instagram_login = instagram_login
        self._ids = itertools.count(1)
        self._sent_at: dict[str, deque[float]] = defaultdict(deque)
        self._rate_lock = threading.Lock()
        self.media = MediaFiles()
        """Files customers sent: `media.add(data, mime_type)` gives a WhatsApp media id."""
        self._status_faults: list[StatusFault] = []
        self._send_faults: list[tuple[ApiError, list[int | None]]] = []
        self._pending_statuses: list[dict[str, Any]] = []
        self.failed_later: list[str] = []
        """Ids of accepted sends reported (or to be reported) failed by a status webhook."""
        self.app = Starlette(
            routes=[
                Route(
                    "/{version}/{node}/messages", self.endpoint(self._messages), methods=["POST"]
                ),
                Route("/cdn/media/{key}", self.endpoint(self.media.download), methods=["GET"]),
                Route("/{version}/{node}", self.endpoint(self._media_lookup), methods=["GET"]),
                Route(
                    "/{path:path}",
                    self.endpoint(self._unknown),
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                ),
            ]
        )

    # --- what tests read ---------------------------------------------------------------
    @property
    def sends(self) -> list[Recorded]:
        """Accepted message sends (not read receipts, typing or other sender actions)."""
        return [r for r in self.requests if r.kind == "message" and r.status == 200]

    @property
    def receipts(self) -> list[Recorded]:
        """Accepted WhatsApp read receipts and Instagram/Messenger sender actions."""
        return [r for r in self.requests if r.kind == "receipt" and r.status == 200]

    def texts_to(self, recipient: str) -> list[str]:
        """Text bodies accepted for `recipient` (phone, BSUID or IGSID/PSID), in order."""
        return [
            text
            for r in self.sends
            if recipient in _recipients(r.json) and (text := _text(r.json)) is not None
        ]

    @property
    def media_downloads(self) -> list[Recorded]:
        """Files served by the CDN path (whatever their fault)."""
        return [r for r in self.requests if r.path.startswith("/cdn/media/")]

    async def wait_for_sends(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        return await self.wait_until(lambda: self.sends, n, timeout, "accepted sends")

    async def wait_for_receipts(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        return await self.wait_until(lambda: self.receipts, n, timeout, "accepted receipts")

    def reset_state(self) -> None:
        with self._rate_lock:
            self._sent_at = defaultdict(deque)
            self._status_faults = []
            self._send_faults = []
            self._pending_statuses = []
            self.failed_later = []
        self.media.reset()

    # --- failures of message sends only --------------------------------------------------
    def fail_sends(
        self,
        status: int,
        code: int,
        *,
        times: int | None = 1,
        message: str | None = None,
        **fields: Any,
    ) -> None:
        """The next `times` message sends (not read receipts or sender actions, which share
        the path) are refused with `status` and Graph error `code` (extra error `fields` such
        as ``error_subcode``). `times=None` means until `reset()`."""
        text = (
            message or DEFAULT_MESSAGES.get(code) or f"(#{code}) {STATUS_TITLES.get(code, 'Error')}"
        )
        error = ApiError(status, text, code=code, **fields)
        with self._rate_lock:
            self._send_faults.append((error, [times]))

    def clear_send_faults(self) -> None:
        with self._rate_lock:
            self._send_faults = []

    def _take_send_fault(self, record: Recorded) -> None:
        with self._rate_lock:
            if not self._send_faults:
                return
            error, remaining = self._send_faults[0]
            if remaining[0] is not None:
                remaining[0] -= 1
                if remaining[0] <= 0:
                    self._send_faults.pop(0)
        record.kind = "message"  # a refused send is still an attempt to send
        raise error

    def attempts_to(self, recipient: str) -> list[Recorded]:
        """Every message send to `recipient`, accepted or refused, in order."""
        return [
            r for r in self.requests if r.kind == "message" and recipient in _recipients(r.json)
        ]

    # --- failures reported later, as WhatsApp does -------------------------------------
    def fail_later(
        self,
        code: int,
        *,
        times: int | None = 1,
        title: str | None = None,
        details: str | None = None,
        error_subcode: int | None = None,
    ) -> None:
        """The next `times` WhatsApp sends are accepted (200, a wamid), then reported `failed`
        with `code` by a status webhook, which `deliver_statuses` posts: how WhatsApp reports
        most 131047, 131026 and 131049 failures. `times=None` means until `reset()`."""
        fault = StatusFault(
            code, title or STATUS_TITLES.get(code, "Error"), details, error_subcode, times
        )
        with self._rate_lock:
            self._status_faults.append(fault)

    @property
    def pending_statuses(self) -> list[dict[str, Any]]:
        """Status webhook bodies waiting for `deliver_statuses`, oldest first."""
        with self._rate_lock:
            return list(self._pending_statuses)

    async def deliver_statuses(self, url: str, app_secret: str, timeout: float = 5.0) -> list[int]:
        """POST every pending status webhook to `url`, signed with `app_secret` as Meta signs
        (``X-Hub-Signature-256``); returns the HTTP statuses Parley answered."""
        with self._rate_lock:
            pending, self._pending_statuses = self._pending_statuses, []
        answers = []
        async with httpx.AsyncClient(timeout=timeout) as client:
            for payload in pending:
                body = json.dumps(payload).encode()
                digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
                headers = {
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": f"sha256={digest}",
                }
                answers.append((await client.post(url, content=body, headers=headers)).status_code)
        return answers

    def _report_later(self, node: str, wamid: str, recipient: str) -> None:
        with self._rate_lock:
            fault = next(iter(self._status_faults), None)
            if fault is None:
                return
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._status_faults.remove(fault)
            self.failed_later.append(wamid)
            self._pending_statuses.append(_failed_status(node, wamid, recipient, fault))

    # --- API shape ---------------------------------------------------------------------
    def error_body(
        self, status: int, *, code: int | str | None, message: str | None, **fields: Any
    ) -> dict[str, Any]:
        code = code if code is not None else DEFAULT_CODES.get(status, 1)
        error: dict[str, Any] = {
            "message": message or DEFAULT_MESSAGES.get(int(code), "An unknown error occurred"),
            "type": fields.pop("type", "OAuthException"),
            "code": code,
        }
        error.update({k: v for k, v in fields.items() if v is not None})
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
        return {"error": error}

    # --- handlers ----------------------------------------------------------------------
    async def _unknown(self, request: Request, record: Recorded) -> Response:
        raise ApiError(
            400, f"Unknown path components: {request.url.path}", code=2500, type="OAuthException"
        )

    async def _media_lookup(self, request: Request, record: Recorded) -> Response:
        if not VERSION.match(request.path_params["version"]):
            return await self._unknown(request, record)
        self._authorize(request)
        return await self.media.lookup(request, record)

    async def _messages(self, request: Request, record: Recorded) -> Response:
        self._authorize(request)
        version = request.path_params["version"]
        if not VERSION.match(version):
            raise ApiError(400, f"Unknown path components: /{version}", code=2500)
        body = record.json
        if not isinstance(body, dict):
            raise ApiError(400, "(#100) The parameter messaging_product is required.", code=100)
        node = request.path_params["node"]
        if self.instagram_login and "messaging_product" in body:
            raise ApiError(400, "(#100) Param messaging_product is not supported", code=100)
        if body.get("messaging_product") == "whatsapp":
            answer = self._whatsapp(node, body, record)
        elif "messaging_product" in body:
            raise ApiError(400, "(#100) Param messaging_product must be 'whatsapp'", code=100)
        else:
            answer = self._messenger(node, body, record)
        record.answer = answer
        return JSONResponse(answer)

    def _authorize(self, request: Request) -> None:
        # Graph also takes the token as a query parameter.
        token = bearer_token(request) or request.query_params.get("access_token")
        if token is None:
            raise ApiError(
                401, "An active access token must be used to query information.", code=190
            )
        if self.tokens is not None and token not in self.tokens:
            raise ApiError(401, "Invalid OAuth access token - Cannot parse access token", code=190)

    def _whatsapp(self, node: str, body: dict[str, Any], record: Recorded) -> dict[str, Any]:
        if body.get("status") == "read":
            if not body.get("message_id"):
                raise ApiError(400, "(#100) The parameter message_id is required.", code=100)
            record.kind = "receipt"
            return {"success": True}
        to, bsuid = body.get("to"), body.get("recipient")
        if not to and not bsuid:
            raise ApiError(400, "(#100) The parameter to is required.", code=100)
        _check_whatsapp_content(body)
        self._take_send_fault(record)
        self._check_rate(node)
        record.kind = "message"
        contact: dict[str, Any] = {"input": to or bsuid}
        if to:
            contact["wa_id"] = re.sub(r"\D", "", str(to))
        if bsuid:
            contact["user_id"] = bsuid
        wamid = f"wamid.HBgL{next(self._ids):010d}{secrets.token_hex(10).upper()}"
        self._report_later(node, wamid, str(to or bsuid))
        return {"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": wamid}]}

    def _messenger(self, node: str, body: dict[str, Any], record: Recorded) -> dict[str, Any]:
        recipient = body.get("recipient")
        if not isinstance(recipient, dict) or not recipient.get("id"):
            raise ApiError(400, "(#100) The parameter recipient is required", code=100)
        action = body.get("sender_action")
        if action is not None:
            if action not in SENDER_ACTIONS:
                raise ApiError(400, f"(#100) Invalid sender_action: {action}", code=100)
            record.kind = "receipt"
            return {"recipient_id": recipient["id"]}
        _check_messaging_type(body)
        self._check_message(node, body.get("message"))
        self._take_send_fault(record)
        self._check_rate(node)
        record.kind = "message"
        mid = f"mid.${next(self._ids):010d}{secrets.token_hex(12)}"
        return {"recipient_id": recipient["id"], "message_id": mid}

    def _check_message(self, node: str, message: Any) -> None:
        if not isinstance(message, dict) or not (message.get("text") or message.get("attachment")):
            raise ApiError(
                400, "(#100) The parameter message must have text or attachment", code=100
            )
        text = message.get("text")
        if text is None:
            return
        if not isinstance(text, str):
            raise ApiError(400, "(#100) Param message[text] must be a string", code=100)
        if node in self.messenger_pages and not self.instagram_login:
            too_long = len(text) > MESSENGER_TEXT_LIMIT
            limit = f"{MESSENGER_TEXT_LIMIT} characters"
        else:
            too_long = len(text.encode()) > INSTAGRAM_TEXT_LIMIT
            limit = f"{INSTAGRAM_TEXT_LIMIT} bytes"
        if too_long:
            raise ApiError(
                400, f"(#100) Length of param message[text] must be at most {limit}", code=100
            )

    def _check_rate(self, node: str) -> None:
        if not self.send_rate:
            return
        now = time.monotonic()
        with self._rate_lock:
            sent = self._sent_at[node]
            while sent and now - sent[0] >= 1.0:
                sent.popleft()
            if len(sent) >= self.send_rate:
                raise ApiError(
                    400,
                    "(#130429) Rate limit hit: Cloud API message throughput has been reached.",
                    code=130429,
                    error_data={"messaging_product": "whatsapp", "details": "Throughput reached"},
                )
            sent.append(now)


def _failed_status(node: str, wamid: str, recipient: str, fault: StatusFault) -> dict[str, Any]:
    """WhatsApp's ``failed`` status webhook for `wamid`, in the shape of Meta's samples."""
    error: dict[str, Any] = {"code": fault.code, "title": fault.title, "message": fault.title}
    if fault.details:
        error["error_data"] = {"details": fault.details}
    if fault.subcode is not None:
        error["error_subcode"] = fault.subcode
    recipient_key = (
        "recipient_user_id"
        if recipient.count(".") == 1 and recipient[:2].isalpha()
        else "recipient_id"
    )
    status = {
        "id": wamid,
        "status": "failed",
        "timestamp": str(int(time.time())),
        recipient_key: recipient,
        "errors": [error],
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": node},
        "statuses": [status],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }


def _check_messaging_type(body: dict[str, Any]) -> None:
    """The Send API's envelope around a message: its type, tag and quoted message."""
    kind = body.get("messaging_type")
    if kind is not None and kind not in MESSAGING_TYPES:
        raise ApiError(400, f"(#100) Invalid messaging_type: {kind}", code=100)
    tag = body.get("tag")
    if kind == "MESSAGE_TAG" and tag not in MESSAGE_TAGS:
        raise ApiError(400, "(#100) Param tag must be a valid message tag", code=100)
    if tag is not None and kind != "MESSAGE_TAG":
        raise ApiError(400, "(#100) Param tag requires messaging_type MESSAGE_TAG", code=100)
    reply_to = body.get("reply_to")
    if reply_to is not None and not (isinstance(reply_to, dict) and reply_to.get("mid")):
        raise ApiError(400, "(#100) The parameter reply_to[mid] is required", code=100)


def _check_whatsapp_content(body: dict[str, Any]) -> None:
    context = body.get("context")
    if context is not None and not (isinstance(context, dict) and context.get("message_id")):
        raise ApiError(400, "(#100) The parameter context['message_id'] is required.", code=100)
    kind = body.get("type", "text")
    if kind != "text":
        if not isinstance(body.get(kind), dict):
            raise ApiError(400, f"(#100) The parameter {kind} is required.", code=100)
        return
    text = body.get("text")
    text_body = text.get("body") if isinstance(text, dict) else None
    if not isinstance(text_body, str) or not text_body:
        raise ApiError(400, "(#100) The parameter text['body'] is required.", code=100)
    if len(text_body) > WHATSAPP_TEXT_LIMIT:
        raise ApiError(
            400,
            f"(#100) Param text['body'] must be at most {WHATSAPP_TEXT_LIMIT} characters long.",
            code=100,
        )


def _recipients(body: Any) -> set[str]:
    """Every id the send was addressed by: WhatsApp may name both a phone and a BSUID."""
    if not isinstance(body, dict):
        return set()
    if body.get("messaging_product") == "whatsapp":
        return {str(v) for v in (body.get("to"), body.get("recipient")) if v}
    recipient = body.get("recipient")
    return {str(recipient["id"])} if isinstance(recipient, dict) and "id" in recipient else set()


def _text(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    holder = (
        body.get("text") if body.get("messaging_product") == "whatsapp" else body.get("message")
    )
    if not isinstance(holder, dict):
        return None
    value = (
        holder.get("body") if body.get("messaging_product") == "whatsapp" else holder.get("text")
    )
    return value if isinstance(value, str) else None
