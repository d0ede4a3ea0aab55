"""`parley conversations …` and `parley usage`: read conversations, take one over, answer the
customer as a person and hand it back, straight on DATABASE_URL; and the usage per day,
account and model.

These commands neither create nor migrate a database (see `cli_store`). A reply is queued in
the outbox: the running `parley serve` or `parley worker` sends it with the channel's rules. A
hand-back with `--answer-pending` leaves the unanswered messages to the agent, which the
running worker's reconciler finds within PARLEY_RECONCILE_AFTER seconds.
"""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels.render import render_text
from parley.cli_output import JsonOpt, plain, print_json, print_table, when
from parley.cli_store import fail, in_store
from parley.config import Settings
from parley.errors import AccountError, ConversationError
from parley.store.queries import conversations as queries
from parley.store.queries.accounts import find_account
from parley.store.queries.conversations import ConversationFilter, ConversationRow, CursorInvalid
from parley.store.queries.handoff import ModeChange, hand_back, hand_to_human, record_operator_reply
from parley.store.queries.usage import daily_usage

conversations_app = typer.Typer(
    help="Conversations: list, read, take over, reply as a person, hand back.",
    no_args_is_help=True,
)
usage_app = typer.Typer(help="Requests, tokens and cost per UTC day, account and model.")
console = Console()
REFUSALS = (ConversationError, AccountError, CursorInvalid)

ConversationArg = Annotated[int, typer.Argument(help="The conversation's id.", min=1)]
AccountOpt = Annotated[
    str | None, typer.Option("--account", help="channel:id, the channel's id, or Parley's id.")
]
OperatorOpt = Annotated[
    str | None, typer.Option("--as", help="The operator's name (default: your login name).")
]


def _operator(name: str | None) -> str:
    if name:
        return name[:128]
    try:
        return getpass.getuser()[:128]
    except (KeyError, OSError):
        return "operator"


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r} is not an ISO 8601 date or time")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _account_id(session: AsyncSession, ref: str | None) -> int | None:
    return (await find_account(session, ref=ref)).id if ref is not None else None


# --- reading ------------------------------------------------------------------------------------


@conversations_app.command("list")
def list_conversations(
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    account: AccountOpt = None,
    mode: Annotated[str | None, typer.Option(help="agent or human.")] = None,
    waiting: Annotated[
        bool, typer.Option("--waiting", help="Only those waiting for a person.")
    ] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only those with a failure.")] = False,
    since: Annotated[str | None, typer.Option(help="Active since (ISO 8601, UTC).")] = None,
    search: Annotated[
        str | None, typer.Option("--search", "-q", help="Contact name, phone, handle or id.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Conversations, latest activity first."""
    if mode not in (None, "agent", "human"):
        fail("--mode is agent or human")
    moment = _since(since)

    async def work(session: AsyncSession, settings: Settings) -> queries.Page[ConversationRow]:
        where = ConversationFilter(
            channel=channel,
            account_id=await _account_id(session, account),
            mode=mode,
            waiting=True if waiting else None,
            failed=True if failed else None,
            since=moment,
            q=search,
        )
        return await queries.list_conversations(session, where=where, limit=limit, cursor=cursor)

    page = in_store(work, refusals=REFUSALS)
    if json_output:
        print_json({"data": page.items, "next_cursor": page.next_cursor})
        return
    print_table(
        ("id", "channel", "account", "contact", "mode", "assignee", "last", "preview", "flags",
         "msgs"),
        [_table_row(r) for r in page.items],
        caption=f"next: --cursor {page.next_cursor}" if page.next_cursor else None,
    )  # fmt: skip


def _table_row(row: ConversationRow) -> list[object]:
    contact = row.contact_name or row.contact_username or row.contact_phone
    flags = " ".join(f for f, on in (("waiting", row.waiting), ("failed", row.failed)) if on)
    return [
        row.id,
        row.channel,
        row.account_name or row.account_external_id,
        contact or row.contact_external_id,
        row.mode,
        row.assignee,
        when(row.last_message_at),
        (row.last_message_preview or "")[:40],
        flags,
        row.message_count,
    ]


@conversations_app.command("show")
def show_conversation(
    conversation_id: ConversationArg,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Messages shown.")] = 500,
    json_output: JsonOpt = False,
) -> None:
    """A conversation and its transcript, with each message's status, tokens and cost."""

    async def work(
        session: AsyncSession, settings: Settings
    ) -> tuple[ConversationRow | None, list[queries.TranscriptMessage]]:
        row = await queries.conversation_row(session, conversation_id=conversation_id)
        messages = await queries.transcript(session, conversation_id=conversation_id, limit=limit)
        return row, messages

    row, messages = in_store(work, refusals=REFUSALS)
    if row is None:
        fail(f"no conversation {conversation_id}")
    if json_output:
        print_json({"conversation": row, "messages": messages})
        return
    details = plain(row)
    for key in ("id", "channel", "mode", "assignee", "mode_changed_at", "mode_reason", "waiting"):
        console.print(f"[bold]{key}[/bold]: {details[key]}")
    console.print(f"[bold]contact[/bold]: {row.contact_name or '-'} ({row.contact_external_id})")
    print_table(
        ("#", "when", "from", "status", "text", "tokens in/out", "USD", "ms"),
        [
            [
                m.sequence_no,
                when(m.created_at),
                m.operator or m.sender,
                m.status,
                (m.text or f"[{m.kind}]")[:80],
                f"{m.input_tokens}/{m.output_tokens}" if m.input_tokens is not None else None,
                m.cost_usd,
                m.latency_ms,
            ]
            for m in messages
        ],
    )


# --- a person answers -----------------------------------------------------------------------


def _print_change(change: dict[str, Any], json_output: bool, what: str) -> None:
    if json_output:
        print_json(change)
        return
    typer.echo(what)


@conversations_app.command("takeover")
def take_over(
    conversation_id: ConversationArg,
    operator: OperatorOpt = None,
    reason: Annotated[str | None, typer.Option(help="Why (sent with the handoff notice).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """A person answers from now on: the agent stops, its unsent replies are withdrawn."""
    name = _operator(operator)

    async def work(session: AsyncSession, settings: Settings) -> ModeChange:
        return await hand_to_human(
            session,
            conversation_id=conversation_id,
            assignee=name,
            reason=reason or "taken over by an operator",
            notify=settings.parley_handoff_webhook_url is not None,
        )

    change = in_store(work, refusals=REFUSALS)
    _print_change(
        {"conversation_id": conversation_id, "assignee": name, "withdrawn": change.withdrawn},
        json_output,
        f"conversation {conversation_id} is {name}'s; {change.withdrawn} agent replies withdrawn",
    )


@conversations_app.command("reply")
def reply(
    conversation_id: ConversationArg,
    text: Annotated[str, typer.Argument(help="What to send; '-' reads it from stdin.")],
    operator: OperatorOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Answer the customer as a person (the conversation must be in human mode)."""
    body = (sys.stdin.read() if text == "-" else text).strip()
    if not body:
        fail("nothing to send")
    name = _operator(operator)

    async def work(session: AsyncSession, settings: Settings) -> list[queries.TranscriptMessage]:
        row = await queries.conversation_row(session, conversation_id=conversation_id)
        if row is None:
            fail(f"no conversation {conversation_id}")
        ids = await record_operator_reply(
            session,
            conversation_id=conversation_id,
            operator=name,
            parts=render_text(row.channel, body),
        )
        return await queries.messages_by_id(session, ids=ids)

    stored = in_store(work, refusals=REFUSALS)
    if json_output:
        print_json({"conversation_id": conversation_id, "messages": stored})
        return
    typer.echo(f"queued {len(stored)} message(s) to conversation {conversation_id}")


@conversations_app.command("handback")
def hand_back_to_agent(
    conversation_id: ConversationArg,
    answer_pending: Annotated[
        bool,
        typer.Option(
            "--answer-pending", help="Let the agent answer what nobody answered (default: not)."
        ),
    ] = False,
    operator: OperatorOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """The agent answers again, from the customer's next message on."""
    name = _operator(operator)

    async def work(session: AsyncSession, settings: Settings) -> ModeChange:
        return await hand_back(
            session, conversation_id=conversation_id, by=name, answer_pending=answer_pending
        )

    change = in_store(work, refusals=REFUSALS)
    _print_change(
        {"conversation_id": conversation_id, "mode": "agent", "pending": change.pending},
        json_output,
        f"conversation {conversation_id} is the agent's again ({change.pending} unanswered "
        + ("left for it)" if answer_pending else "closed)"),
    )


# --- usage --------------------------------------------------------------------------------------


@usage_app.callback(invoke_without_command=True)
def usage(
    since: Annotated[str | None, typer.Option(help="First UTC day (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Last UTC day (YYYY-MM-DD).")] = None,
    account: AccountOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Requests, tokens and cost per UTC day, account and model, with the total."""
    first, last = _day(since, "--since"), _day(until, "--until")

    async def work(session: AsyncSession, settings: Settings) -> list[dict[str, Any]]:
        rows = await daily_usage(
            session, since=first, until=last, account_id=await _account_id(session, account)
        )
        return [
            {
                "day": r.day,
                "account_id": r.account_id,
                "model": r.model,
                "requests": r.requests,
                "input_tokens": r.input_tokens,
                "cached_tokens": r.cached_tokens,
                "output_tokens": r.output_tokens,
                "reasoning_tokens": r.reasoning_tokens,
                "cost_usd": r.cost_usd,
            }
            for r in rows
        ]

    rows = in_store(work, refusals=REFUSALS)
    if json_output:
        print_json(rows)
        return
    total = sum((r["cost_usd"] for r in rows), start=0)
    print_table(
        ("day", "account", "model", "requests", "in", "cached", "out", "reasoning", "USD"),
        [[r[k] for k in list(r)] for r in rows],
        caption=f"total: {total} USD over {sum(r['requests'] for r in rows)} requests",
    )


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not a date (YYYY-MM-DD)")
