"""`parley`: thin Typer commands over `create_app`, the runtime and the store."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
import uvicorn
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.account_commands import accounts_app
from parley.cli_output import JsonOpt, print_json, print_table, when
from parley.cli_store import fail, in_store, load_settings
from parley.config import Settings
from parley.contact_commands import contacts_app
from parley.conversation_commands import conversations_app, usage_app
from parley.errors import SecretInvalid, SecretsDisabled, TooManyTokens, UserConflict
from parley.observability.logging import configure_logging
from parley.prompt_commands import prompts_app
from parley.store.crypto import secret_box
from parley.store.models import ApiToken, User, UserSecret
from parley.store.queries import users

if TYPE_CHECKING:
    from parley.runtime import Role

app = typer.Typer(
    help="Parley: one AI agent for WhatsApp and the Responses API.", no_args_is_help=True
)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(prompts_app, name="prompts")
app.add_typer(accounts_app, name="accounts")
app.add_typer(contacts_app, name="contacts")
app.add_typer(conversations_app, name="conversations")
app.add_typer(usage_app, name="usage")

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.")]


def _settings() -> Settings:
    return load_settings()


def _checked(settings: Settings, role: Role) -> Settings:
    """`settings` once what the process needs is there: else one line naming the variable
    (`parley.readiness`), on stderr, and exit status 1, before anything starts."""
    from parley.readiness import preflight

    problem = asyncio.run(preflight(settings, role))
    if problem is not None:
        fail(problem)
    return settings


def _traced(settings: Settings) -> Settings:
    """Tracing on for the commands that serve (OTEL_EXPORTER_OTLP_ENDPOINT)."""
    from parley.observability.tracing import configure_tracing

    configure_tracing(settings.otel_exporter_otlp_endpoint)
    return settings


def _run_http(settings: Settings, role: Role, host: str, port: int) -> None:
    from parley.app import create_app

    application = create_app(settings, role)
    _freeze_heap()
    _hand_over_sooner()
    uvicorn.run(
        application,
        host=host,
        port=port,
        # uvloop and httptools (dependencies) roughly double what one core can acknowledge;
        # asyncio and h11 where they cannot be installed.
        loop="uvloop" if _installed("uvloop") else "asyncio",
        http="httptools" if _installed("httptools") else "h11",
        log_level="warning",
        # uvicorn's lines go through the root logger, so PARLEY_LOG_FORMAT=json holds for them.
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=25,
    )


def _freeze_heap() -> None:
    """Move what the process has built so far (modules, classes, the app) out of the garbage
    collector's sight, where it stays for the process's life anyway.

    A full collection walks every tracked object; on `parley serve`'s heap that took 125 ms,
    during which the event loop answered nothing, which made it the slowest webhook
    acknowledgement of a run at 500 a second. Frozen objects are never walked nor freed, so
    the heap's garbage is collected first.
    """
    gc.collect()
    gc.freeze()


SWITCH_INTERVAL = 0.0005
"""Seconds a thread that wants the GIL waits before the thread holding it must let go
(`sys.setswitchinterval`; Python's default is 0.005)."""


def _hand_over_sooner() -> None:
    """Let SQLite's threads have the GIL within half a millisecond, not Python's five.

    Each statement runs on its connection's aiosqlite thread, which needs the GIL to start and
    again after each SQLite call to hand its rows back; the event loop's thread holds it for as
    long as it has callbacks to run. Under load, a trip that SQLite does in a tenth of a
    millisecond then waited up to 5 ms for the loop to let go, while holding SQLite's one
    write connection. Measured with `bench/responses.py`: `/v1` at 64 callers on SQLite
    answered 29-36 % more requests a second with 0.5 ms or 0.1 ms (docs/benchmarks.md,
    2026-12-02, session 11); webhooks and turns did not change. A thread that waits for nothing
    is not affected: the interval only applies while another thread waits for the GIL.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@app.command()
def serve(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """HTTP API and worker in one process (SQLite and an in-process queue by default)."""
    _run_http(_traced(_checked(_settings(), "serve")), "serve", host, port)


@app.command()
def api(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """Only the HTTP API (webhooks, /v1, admin), for scale-out; applies pending migrations."""
    _run_http(_traced(_checked(_settings(), "api")), "api", host, port)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Conversations at once.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics at /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "0.0.0.0",
) -> None:
    """Only the worker: agent turns, delivery and the reconciler, for scale-out."""
    settings = _settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"parley_worker_concurrency": concurrency})
    checked = _traced(_checked(settings, "worker"))
    # On uvloop, as `serve` and `api` run (uvicorn picks it): the worker's loop carries every
    # turn's upstream call, delivery's sends and the queue's traffic.
    loop_factory = None
    if _installed("uvloop"):
        import uvloop

        loop_factory = uvloop.new_event_loop
    _hand_over_sooner()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_worker(checked, metrics_port, metrics_host))


async def _worker(settings: Settings, metrics_port: int | None, metrics_host: str) -> None:
    from parley.runtime import open_runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with open_runtime(settings, "worker", metrics=metrics_port is not None):
        _freeze_heap()
        if metrics_port is None:
            await stop.wait()
            return
        server = _MetricsServer(metrics_host, metrics_port)
        serving = asyncio.create_task(server.serve(), name="metrics-server")
        try:
            await stop.wait()
        finally:
            server.should_exit = True
            await asyncio.wait_for(asyncio.gather(serving, return_exceptions=True), timeout=10)


class _MetricsServer(uvicorn.Server):
    """uvicorn serving `/metrics` on the worker's loop; the worker's own signal handlers stay
    in charge of shutdown."""

    def __init__(self, host: str, port: int) -> None:
        from parley.observability.exposition import metrics_app

        super().__init__(
            uvicorn.Config(
                metrics_app,
                host=host,
                port=port,
                lifespan="off",
                log_config=None,
                log_level="warning",
                access_log=False,
            )
        )

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="The migration to reach.")] = "head",
) -> None:
    """Apply pending migrations."""
    from parley.store.migrate import (
        database_url_problem,
        driver_error,
        shown_url,
        upgrade_sync,
    )

    settings = _settings()
    problem = database_url_problem(settings.database_url)
    if problem is not None:
        fail(problem)
    shown = shown_url(settings.database_url)
    try:
        upgrade_sync(settings.database_url, revision)
    except (DBAPIError, OSError) as exc:
        fail(f"cannot migrate the database at DATABASE_URL={shown}: {driver_error(exc)}")
    typer.echo(f"database {shown} at {revision}")


@app.command()
def demo(
    latency: Annotated[float, typer.Option(help="Simulated model latency, seconds.")] = 0.2,
) -> None:
    """An offline end-to-end demonstration with the bundled OpenAI and Graph API simulators."""
    from parley.demo import run_demo

    configure_logging("WARNING")
    asyncio.run(run_demo(latency=latency))


# --- users, tokens and secrets of the Responses API -------------------------------------------

users_app = typer.Typer(help="Users of the Responses API.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="Users' API tokens (shown once, stored hashed).", no_args_is_help=True
)
secrets_app = typer.Typer(help="Users' write-only secrets for their tools.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(secrets_app, name="secrets")

T = TypeVar("T")
UserArg = Annotated[str, typer.Argument(help="The user's name.")]


def _in_store(work: Callable[[AsyncSession, Settings], Awaitable[T]]) -> T:
    """Run `work` on the database DATABASE_URL names, which must exist and be migrated; our
    refusals (a taken name, the last admin, no secret key, too many tokens, a secret with a
    control character) exit with status 1."""
    return in_store(work, refusals=(UserConflict, SecretsDisabled, TooManyTokens, SecretInvalid))


async def _user(session: AsyncSession, name: str) -> User:
    user = await users.user_by_name(session, name=name)
    if user is None:
        fail(f"no user named {name!r}")
    return user


@users_app.command("create")
def users_create(
    name: UserArg,
    admin: Annotated[bool, typer.Option("--admin", help="May use the admin API.")] = False,
) -> None:
    """Create a user; the last line printed is their first API token, alone."""
    if not re.fullmatch(users.USER_NAME, name):
        fail("a name is 1-128 letters, digits or _.@- and does not start with _")

    async def work(session: AsyncSession, _: Settings) -> tuple[User, users.IssuedToken]:
        return await users.create_user(session, name=name, is_admin=admin)

    user, issued = _in_store(work)
    typer.echo(f"created user {user.name} (id {user.id}{', admin' if user.is_admin else ''})")
    typer.echo("API token (shown once; store it safely):")
    typer.echo(issued.value)


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """Users with their role and status."""

    async def work(session: AsyncSession, _: Settings) -> list[User]:
        return await users.list_users(session)

    found = _in_store(work)
    if as_json:
        print_json([_user_view(user) for user in found])
        return
    print_table(
        ("id", "name", "role", "status", "created"),
        ((u.id, u.name, _role(u), u.status, when(u.created_at)) for u in found),
    )


def _role(user: User) -> str:
    return "admin" if user.is_admin else "user"


def _user_view(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "name": user.name,
        "role": _role(user),
        "status": user.status,
        "created_at": user.created_at,
    }


def _change_status(name: str, status: str) -> None:
    async def work(session: AsyncSession, _: Settings) -> None:
        await users.set_status(session, user=await _user(session, name), status=status)

    _in_store(work)
    typer.echo(f"user {name} is {status}")


@users_app.command("suspend")
def users_suspend(name: UserArg) -> None:
    """Refuse all of the user's tokens until reactivated."""
    _change_status(name, "suspended")


@users_app.command("reactivate")
def users_reactivate(name: UserArg) -> None:
    """Accept the user's tokens again."""
    _change_status(name, "active")


@users_app.command("delete")
def users_delete(name: UserArg) -> None:
    """Delete the user with their tokens, secrets, responses and usage."""

    async def work(session: AsyncSession, _: Settings) -> None:
        await users.delete_user(session, user=await _user(session, name))

    _in_store(work)
    typer.echo(f"user {name} deleted")


@tokens_app.command("create")
def tokens_create(
    name: UserArg,
    label: Annotated[str | None, typer.Option(help="What the token is for.")] = None,
) -> None:
    """Issue another token for the user; the last line printed is the token, alone."""

    async def work(session: AsyncSession, settings: Settings) -> users.IssuedToken:
        user = await _user(session, name)
        limit = settings.parley_max_tokens_per_user
        return await users.issue_token(session, user_id=user.id, name=label, limit=limit)

    issued = _in_store(work)
    typer.echo(f"token {issued.row.id} ({issued.row.prefix}…) for {name}, shown once:")
    typer.echo(issued.value)


@tokens_app.command("list")
def tokens_list(name: UserArg, as_json: JsonOpt = False) -> None:
    """The user's tokens: id, prefix, label, created, last used, revoked (never the token)."""

    async def work(session: AsyncSession, _: Settings) -> list[ApiToken]:
        return await users.list_tokens(session, user_id=(await _user(session, name)).id)

    tokens = _in_store(work)
    if as_json:
        print_json([_token_view(t) for t in tokens])
        return
    print_table(
        ("id", "prefix", "label", "created", "last used", "revoked"),
        (
            (
                t.id,
                f"{t.prefix}…",
                t.name,
                when(t.created_at),
                when(t.last_used_at),
                when(t.revoked_at),
            )
            for t in tokens
        ),
    )


def _token_view(token: ApiToken) -> dict[str, object]:
    return {
        "id": token.id,
        "prefix": token.prefix,
        "label": token.name,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
    }


@tokens_app.command("revoke")
def tokens_revoke(
    name: UserArg, token: Annotated[str, typer.Argument(help="The token's id or prefix.")]
) -> None:
    """Revoke one of the user's tokens at once."""

    async def work(session: AsyncSession, _: Settings) -> ApiToken:
        user = await _user(session, name)
        found = await users.find_tokens(session, user_id=user.id, ref=token)
        if len(found) != 1:
            fail(f"{len(found)} of {name}'s tokens match {token!r}; give its id")
        revoked = await users.revoke_token(session, user_id=user.id, token_id=found[0].id)
        assert revoked is not None
        return revoked

    row = _in_store(work)
    typer.echo(f"token {row.id} ({row.prefix}…) of {name} revoked")


@secrets_app.command("set")
def secrets_set(
    user: UserArg,
    name: Annotated[str, typer.Argument(help="The secret's name, as in {secret:NAME}.")],
    value: Annotated[
        str | None, typer.Option(help="The value; read from stdin if omitted.")
    ] = None,
) -> None:
    """Store a secret for the user's tools, encrypted with PARLEY_SECRET_KEY."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name):
        fail("a secret's name is 1-128 letters, digits or _.-")
    if value is None:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        fail("the value is empty")

    async def work(session: AsyncSession, settings: Settings) -> None:
        owner = await _user(session, user)
        box = secret_box(settings.secret("parley_secret_key"))
        await users.set_secret(session, user_id=owner.id, name=name, value=value, box=box)

    _in_store(work)
    typer.echo(f"secret {name} of {user} set")


@secrets_app.command("list")
def secrets_list(user: UserArg, as_json: JsonOpt = False) -> None:
    """The names of the user's secrets, with when each was set (values are never shown)."""

    async def work(session: AsyncSession, _: Settings) -> list[UserSecret]:
        return await users.secret_names(session, user_id=(await _user(session, user)).id)

    rows = _in_store(work)
    if as_json:
        print_json(
            [{"name": r.name, "created_at": r.created_at, "updated_at": r.updated_at} for r in rows]
        )
        return
    print_table(
        ("secret", "created", "updated"),
        ((r.name, when(r.created_at), when(r.updated_at)) for r in rows),
    )


@secrets_app.command("delete")
def secrets_delete(
    user: UserArg, name: Annotated[str, typer.Argument(help="The secret's name.")]
) -> None:
    """Delete one of the user's secrets."""

    async def work(session: AsyncSession, _: Settings) -> bool:
        owner = await _user(session, user)
        return await users.delete_secret(session, user_id=owner.id, name=name)

    if not _in_store(work):
        fail(f"{user} has no secret named {name!r}")
    typer.echo(f"secret {name} of {user} deleted")


if __name__ == "__main__":
    app()
