"""`parley accounts …`: the WhatsApp numbers, Instagram accounts and Facebook pages Parley
serves, each with its own credentials and settings, straight on DATABASE_URL.

These commands neither create nor migrate a database: they name the one they would use and stop
when it is missing or behind (`parley db upgrade`). Secrets are never printed back, only as set
or not with a fingerprint; give them as ``-`` to read them from stdin (one line each, in the
order token, app secret, verify token) or with ``--token-env`` and the like, so that they stay
out of the shell's history. Errors go to stderr with exit status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels import registry
from parley.cli_output import JsonOpt, print_json
from parley.cli_store import fail, in_store
from parley.config import Settings
from parley.errors import AccountError, SecretsDisabled
from parley.store.crypto import SecretBox, secret_box
from parley.store.migrate import shown_url
from parley.store.queries import accounts as queries
from parley.store.queries.accounts import UNSET, AccountFields, AccountView, SecretState, Unset

T = TypeVar("T")

accounts_app = typer.Typer(
    help="Accounts: WhatsApp numbers, Instagram accounts and Facebook pages, each with its own "
    "credentials.",
    no_args_is_help=True,
)
console = Console()

AccountArg = Annotated[
    str, typer.Argument(help="The account: channel:id, its channel id, or Parley's id.")
]
NameOpt = Annotated[str | None, typer.Option(help="Display name (the prompts' {{account}}).")]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="Access token to send with; '-' reads stdin.")
]
TokenEnvOpt = Annotated[
    str | None, typer.Option("--token-env", help="Read the access token from this variable.")
]
AppSecretOpt = Annotated[
    str | None,
    typer.Option(
        "--app-secret", help="App secret signing its webhooks, if not META_APP_SECRET; '-': stdin."
    ),
]
AppSecretEnvOpt = Annotated[
    str | None, typer.Option("--app-secret-env", help="Read the app secret from this variable.")
]
VerifyTokenOpt = Annotated[
    str | None,
    typer.Option("--verify-token", help="Webhook handshake token besides META_VERIFY_TOKEN."),
]
VerifyTokenEnvOpt = Annotated[
    str | None,
    typer.Option("--verify-token-env", help="Read the verify token from this variable."),
]
ProfileOpt = Annotated[
    str | None, typer.Option(help="Agent profile whose prompt answers (default: 'default').")
]
ModelOpt = Annotated[
    str | None, typer.Option(help="Model where the prompt names none (default: OPENAI_MODEL).")
]
SendRateOpt = Annotated[
    float | None, typer.Option(help="Messages per second (default: the channel's).")
]
UNSETTABLE = {
    "token": "access_token",
    "app-secret": "app_secret",
    "verify-token": "verify_token",
    "name": "name",
    "profile": "profile",
    "model": "model",
    "send-rate": "send_rate",
}


# --- running in the store -------------------------------------------------------------------


def _run(
    work: Callable[[AsyncSession, SecretBox | None], Awaitable[T]],
    settings: Settings | None = None,
) -> T:
    """Run `work` in one transaction on DATABASE_URL, committed if it returns."""

    async def with_box(session: AsyncSession, settings: Settings) -> T:
        return await work(session, secret_box(settings.secret("parley_secret_key")))

    return in_store(with_box, settings=settings, refusals=(AccountError, SecretsDisabled))


# --- secrets in ---------------------------------------------------------------------------


def _secret(value: str | None, variable: str | None, option: str) -> str | Unset:
    """A secret from the option itself, from stdin when it is '-', or from an environment
    variable; UNSET when none of them is given."""
    if value is not None and variable is not None:
        fail(f"give --{option} or --{option}-env, not both")
    if variable is not None:
        found = os.environ.get(variable)
        if not found:
            fail(f"{variable} is not set or empty (--{option}-env)")
        return found
    if value == "-":
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            fail(f"no {option} on stdin")
        return line
    return UNSET if value is None else value


def _fields(
    *,
    name: str | None,
    token: str | None,
    token_env: str | None,
    app_secret: str | None,
    app_secret_env: str | None,
    verify_token: str | None,
    verify_token_env: str | None,
    profile: str | None,
    model: str | None,
    send_rate: float | None,
    enabled: bool | None,
    unset: list[str],
) -> AccountFields:
    given: dict[str, Any] = {
        "access_token": _secret(token, token_env, "token"),
        "app_secret": _secret(app_secret, app_secret_env, "app-secret"),
        "verify_token": _secret(verify_token, verify_token_env, "verify-token"),
        "name": UNSET if name is None else name,
        "profile": UNSET if profile is None else profile,
        "model": UNSET if model is None else model,
        "send_rate": UNSET if send_rate is None else send_rate,
        "enabled": UNSET if enabled is None else enabled,
    }
    for option in unset:
        field = UNSETTABLE.get(option)
        if field is None:
            fail(f"--unset takes one of {', '.join(UNSETTABLE)}, not {option!r}")
        if given[field] is not UNSET:
            fail(f"--unset {option} and a new value for it at once")
        given[field] = None
    return AccountFields(**given)


# --- output -------------------------------------------------------------------------------


def _secret_text(state: SecretState, fallback: str) -> str:
    if not state.set:
        return f"not set (uses {fallback})" if fallback else "not set"
    if not state.readable:
        return "set, unreadable with this PARLEY_SECRET_KEY"
    return f"set (fingerprint {state.fingerprint})"


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"


def _print_account(view: AccountView) -> None:
    token_default = f"{view.channel.upper()}_ACCESS_TOKEN"
    table = Table("", "", show_header=False, box=None)
    rows = [
        ("id", str(view.id)),
        ("channel", view.channel),
        ("external id", view.external_id),
        ("name", view.name or "-"),
        ("status", view.status),
        ("profile", view.profile or "default"),
        ("model", view.model or "(prompt's, else OPENAI_MODEL)"),
        ("send rate", f"{view.send_rate:g}/s" if view.send_rate else "(channel default)"),
        ("access token", _secret_text(view.access_token, token_default)),
        ("app secret", _secret_text(view.app_secret, "META_APP_SECRET")),
        ("verify token", _secret_text(view.verify_token, "META_VERIFY_TOKEN")),
        ("created", _when(view.created_at)),
        ("updated", _when(view.updated_at)),
    ]
    if view.removed_at is not None:
        rows.append(("removed", _when(view.removed_at)))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    console.print(table)


def _mark(state: SecretState) -> str:
    return "set" if state.set else "-"


# --- commands -----------------------------------------------------------------------------


@accounts_app.command("add")
def add(
    channel: Annotated[str, typer.Option(help="whatsapp, instagram, messenger…")],
    external_id: Annotated[
        str, typer.Option("--id", help="phone_number_id, Instagram account id or page id.")
    ],
    name: NameOpt = None,
    token: TokenOpt = None,
    token_env: TokenEnvOpt = None,
    app_secret: AppSecretOpt = None,
    app_secret_env: AppSecretEnvOpt = None,
    verify_token: VerifyTokenOpt = None,
    verify_token_env: VerifyTokenEnvOpt = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    send_rate: SendRateOpt = None,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Store its messages but do not answer yet.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Configure an account. Unless it has its own, it sends with <CHANNEL>_ACCESS_TOKEN and
    its webhooks are signed with META_APP_SECRET. Once a channel has an account, messages to
    ids that are not among its accounts are stored and never answered."""
    values = _fields(
        name=name,
        token=token,
        token_env=token_env,
        app_secret=app_secret,
        app_secret_env=app_secret_env,
        verify_token=verify_token,
        verify_token_env=verify_token_env,
        profile=profile,
        model=model,
        send_rate=send_rate,
        enabled=not disabled,
        unset=[],
    )

    async def work(session: AsyncSession, box: SecretBox | None) -> tuple[AccountView, bool]:
        account, existed = await queries.add_account(
            session,
            channel=channel,
            external_id=external_id,
            values=values,
            box=box,
            channels=registry.names(),
        )
        return queries.describe(account, box), existed

    view, existed = _run(work)
    if as_json:
        print_json(view)
        return
    kept = "; its earlier conversations are kept" if existed else ""
    typer.echo(f"added {view.channel} account {view.external_id} (id {view.id}){kept}")
    _print_account(view)


@accounts_app.command("list")
def list_accounts(
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    include_all: Annotated[
        bool,
        typer.Option("--all", help="Also removed accounts and ids only seen in webhooks."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The configured accounts, with whether each has its own credentials."""

    async def work(session: AsyncSession, box: SecretBox | None) -> list[AccountView]:
        rows = await queries.list_accounts(
            session,
            channel=channel,
            include_removed=include_all,
            include_unconfigured=include_all,
        )
        return [queries.describe(row, box) for row in rows]

    settings = Settings()
    views = _run(work, settings)
    if as_json:
        print_json(views)
        return
    table = Table(caption=shown_url(settings.database_url))
    for column in ("id", "channel", "external id", "status"):
        table.add_column(column, no_wrap=True)
    for column in ("name", "profile", "token", "app secret"):
        table.add_column(column)
    for v in views:
        table.add_row(
            str(v.id),
            v.channel,
            v.external_id,
            v.status,
            v.name or "",
            v.profile or "default",
            _mark(v.access_token),
            _mark(v.app_secret),
        )
    console.print(table)


@accounts_app.command("show")
def show(account: AccountArg, as_json: JsonOpt = False) -> None:
    """One account, its settings, and which credentials it uses (never their values)."""

    async def work(session: AsyncSession, box: SecretBox | None) -> AccountView:
        return queries.describe(await queries.find_account(session, ref=account), box)

    view = _run(work)
    if as_json:
        print_json(view)
    else:
        _print_account(view)


@accounts_app.command("set")
def set_(
    account: AccountArg,
    name: NameOpt = None,
    token: TokenOpt = None,
    token_env: TokenEnvOpt = None,
    app_secret: AppSecretOpt = None,
    app_secret_env: AppSecretEnvOpt = None,
    verify_token: VerifyTokenOpt = None,
    verify_token_env: VerifyTokenEnvOpt = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    send_rate: SendRateOpt = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Answer its messages, or not.")
    ] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option(help=f"Clear a field (repeatable): {', '.join(UNSETTABLE)}."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change what is given and keep the rest; a cleared secret falls back to the
    environment's."""
    values = _fields(
        name=name,
        token=token,
        token_env=token_env,
        app_secret=app_secret,
        app_secret_env=app_secret_env,
        verify_token=verify_token,
        verify_token_env=verify_token_env,
        profile=profile,
        model=model,
        send_rate=send_rate,
        enabled=enabled,
        unset=unset or [],
    )
    if not values.given():
        fail("nothing to change")

    async def work(session: AsyncSession, box: SecretBox | None) -> AccountView:
        found = await queries.find_account(session, ref=account)
        await queries.update_account(session, account=found, values=values, box=box)
        return queries.describe(found, box)

    view = _run(work)
    if as_json:
        print_json(view)
        return
    typer.echo(f"changed {view.channel} account {view.external_id} (id {view.id})")
    _print_account(view)


@accounts_app.command("remove")
def remove(account: AccountArg) -> None:
    """Stop serving an account: its credentials are erased, its messages are stored but never
    answered. Its conversations and messages are kept; `add` serves it again."""

    async def work(session: AsyncSession, _: SecretBox | None) -> AccountView:
        found = await queries.find_account(session, ref=account)
        await queries.remove_account(session, account=found)
        return queries.describe(found, None)

    view = _run(work)
    typer.echo(
        f"removed {view.channel} account {view.external_id} (id {view.id}); "
        "its conversations and messages are kept"
    )
