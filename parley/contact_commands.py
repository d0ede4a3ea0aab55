"""`parley contacts erase`: remove one customer everywhere, straight on DATABASE_URL.

The customer is named by Parley's contact id, or by their channel and their id on it
(`--external-id`: a WhatsApp wa_id or BSUID, a Messenger PSID, an Instagram IGSID) or phone
(`--phone`); a person who wrote to several of the channel's accounts is erased on each, unless
`--account` names one. Everything of theirs goes in one transaction (see
`store.queries.erasure`); their OpenAI conversations and stored responses are queued and
deleted upstream by the running `parley serve` or `parley worker`.

Like every command but `serve`, `api` and `demo`, it neither creates nor migrates a database.
Erasing someone already erased says so and succeeds; an unknown customer is an error (exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from parley.cli_output import JsonOpt, print_json, print_table
from parley.cli_store import fail, in_store
from parley.config import Settings
from parley.errors import AccountError, AlreadyErased, ErasureError
from parley.store.models import Account, Contact
from parley.store.queries.accounts import find_account
from parley.store.queries.erasure import (
    ErasureReport,
    channel_id_hash,
    earlier_erasures,
    erase_contact,
    find_contacts,
)

REQUESTED_BY = "cli"

contacts_app = typer.Typer(help="Customers (contacts) Parley has talked to.", no_args_is_help=True)

ContactArg = Annotated[
    int | None,
    typer.Argument(
        help="Parley's contact id (or name the customer with --channel and --phone "
        "or --external-id).",
        show_default=False,
    ),
]
ChannelOpt = Annotated[
    str | None, typer.Option(help="The customer's channel: whatsapp, instagram, messenger…")
]
ExternalIdOpt = Annotated[
    str | None,
    typer.Option(
        "--external-id",
        help="The customer's id on the channel: WhatsApp wa_id or BSUID, Messenger PSID, "
        "Instagram IGSID.",
    ),
]
PhoneOpt = Annotated[
    str | None, typer.Option(help="The customer's phone number (WhatsApp); '+', spaces ignored.")
]
AccountOpt = Annotated[
    str | None,
    typer.Option(help="Only their contact on this account: channel:id, channel id or id."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Erase without asking first.")]


@dataclass
class _Found:
    """The contacts to erase, or the earlier erasures of a customer no longer here."""

    contacts: list[tuple[int, str]] = field(default_factory=list)  # (id, channel)
    earlier: list[ErasureReport] = field(default_factory=list)


@contacts_app.command("erase")
def erase(
    contact: ContactArg = None,
    channel: ChannelOpt = None,
    external_id: ExternalIdOpt = None,
    phone: PhoneOpt = None,
    account: AccountOpt = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase a customer everywhere: their conversations, messages, outbox, response records and
    inbox rows here, their OpenAI conversations and stored responses upstream. Usage sums stay;
    an audit record (no personal data) says who asked, when, and how much went."""
    customer_id = _customer_id(contact, channel, external_id, phone)
    settings = Settings()
    found = in_store(
        lambda session, s: _find(session, s, contact, channel, customer_id, account),
        settings=settings,
        refusals=(ErasureError, AccountError),
    )
    if not found.contacts:
        _already(found.earlier, as_json)
        return
    if not yes:
        ids = ", ".join(f"{cid} ({ch})" for cid, ch in found.contacts)
        typer.confirm(
            f"Erase contact {ids} with all their conversations and messages, here and "
            "upstream? This cannot be undone.",
            abort=True,
            err=True,
        )

    async def work(session: AsyncSession, settings: Settings) -> list[ErasureReport]:
        reports = []
        for contact_id, _ in found.contacts:
            try:
                reports.append(
                    await erase_contact(
                        session,
                        contact_id=contact_id,
                        requested_by=REQUESTED_BY,
                        key=settings.identity_key,
                    )
                )
            except AlreadyErased:
                continue  # erased by someone else since we looked
        return reports

    reports = in_store(work, settings=settings, refusals=(ErasureError,))
    _print(reports, as_json)


def _customer_id(
    contact: int | None, channel: str | None, external_id: str | None, phone: str | None
) -> str | None:
    """The customer's channel id the options give, after checking they name one customer."""
    given = [x for x in (contact, external_id, phone) if x is not None]
    if len(given) != 1:
        fail("name the customer by contact id, --external-id or --phone (exactly one)")
    if contact is not None:
        if channel is not None:
            fail("--channel goes with --external-id or --phone, not with a contact id")
        return None
    if channel is None:
        fail("--external-id and --phone need --channel")
    if phone is not None:
        digits = phone.replace("+", "").replace(" ", "").replace("-", "")
        if not digits.isdigit():
            fail(f"{phone!r} is not a phone number")
        return digits
    assert external_id is not None
    if not external_id.strip():
        fail("--external-id is empty")
    return external_id.strip()


async def _find(
    session: AsyncSession,
    settings: Settings,
    contact_id: int | None,
    channel: str | None,
    customer_id: str | None,
    account: str | None,
) -> _Found:
    if contact_id is not None:
        row = await session.get(Contact, contact_id)
        if row is not None:
            owner = await session.get(Account, row.account_id)
            return _Found(contacts=[(row.id, owner.channel if owner else "?")])
        earlier = await earlier_erasures(session, contact_id=contact_id)
        if not earlier:
            fail(f"no contact {contact_id}")
        return _Found(earlier=earlier)
    assert channel is not None and customer_id is not None
    account_id = (await find_account(session, ref=account)).id if account else None
    contacts = await find_contacts(
        session, channel=channel, customer_id=customer_id, account_id=account_id
    )
    if contacts:
        return _Found(contacts=[(c.id, channel) for c in contacts])
    hashed = channel_id_hash(settings.identity_key, channel=channel, customer_id=customer_id)
    earlier = await earlier_erasures(session, hashed=hashed)
    if not earlier:
        fail(f"no {channel} contact known by {customer_id!r}")
    return _Found(earlier=earlier)


def _already(earlier: list[ErasureReport], as_json: bool) -> None:
    if as_json:
        print_json({"erased": [], "already_erased": earlier})
        return
    for report in earlier:
        typer.echo(
            f"contact {report.contact_id} was already erased on "
            f"{report.erased_at:%Y-%m-%d %H:%M} UTC (by {report.requested_by})"
        )


def _print(reports: list[ErasureReport], as_json: bool) -> None:
    if as_json:
        print_json({"erased": reports, "already_erased": []})
        return
    # One column per erased contact, one row per count: narrow enough for any terminal.
    fields = (
        ("channel", "channel"),
        ("conversations", "conversations"),
        ("messages", "messages"),
        ("outbox rows", "outbox"),
        ("response records", "responses"),
        ("inbox rows", "inbox"),
        ("upstream queued", "upstream"),
    )
    print_table(
        ("erased", *(f"contact {r.contact_id}" for r in reports)),
        [(label, *(getattr(r, name) for r in reports)) for label, name in fields],
        caption="upstream deletions are made by the running `parley serve` or `parley worker`",
    )
