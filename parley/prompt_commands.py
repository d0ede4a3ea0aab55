"""`parley prompts …`: the prompt registry from the command line, straight on DATABASE_URL,
which must exist and be migrated (`parley db upgrade`; see `parley.cli_store`). Listings print
tables, or JSON with `--json`. Errors go to stderr with exit status 1."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from parley.agent.prompt_files import load_prompt_file
from parley.cli_output import JsonOpt, print_json
from parley.cli_store import fail, in_store
from parley.config import Settings
from parley.errors import PromptError, PromptInvalid
from parley.store.queries import prompts as queries
from parley.store.queries.prompt_report import VersionReport, prompt_report
from parley.store.queries.prompts import BindingView, PromptSummary, Target, VersionFields

T = TypeVar("T")

prompts_app = typer.Typer(help="Parley's prompt registry.", no_args_is_help=True)
console = Console()

FileOpt = Annotated[
    Path | None, typer.Option("--file", "-f", help="A .yaml/.yml or .md prompt file.")
]
InstructionsOpt = Annotated[str | None, typer.Option(help="The instructions, as text.")]
ModelOpt = Annotated[str | None, typer.Option(help="The model (default: OPENAI_MODEL).")]
ProfileOpt = Annotated[str | None, typer.Option(help="An agent profile (default: 'default').")]
AccountOpt = Annotated[
    str | None, typer.Option(help="An account, by channel id (phone_number_id…) or id.")
]
VersionOpt = Annotated[int | None, typer.Option(help="A version number (default: the latest).")]


def _run(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one committed transaction; registry errors end the command with 1."""

    async def in_session(session: AsyncSession, _: Settings) -> T:
        return await work(session)

    return in_store(in_session, refusals=(PromptError,))


def _fields(
    file: Path | None, instructions: str | None, model: str | None, note: str | None
) -> tuple[VersionFields, str | None]:
    """A version from a file or from options, with the file's description."""
    if file is not None and instructions is not None:
        raise PromptInvalid("give --file or --instructions, not both")
    if file is not None:
        loaded = load_prompt_file(file)
        fields = loaded.fields
        if model or note:
            fields = VersionFields(
                instructions=fields.instructions,
                model=model or fields.model,
                settings=fields.settings,
                variables=fields.variables,
                note=note or fields.note,
            )
        return fields, loaded.description
    if instructions is None:
        raise PromptInvalid("give --file or --instructions")
    return VersionFields(instructions=instructions, model=model, note=note), None


async def _target(session: AsyncSession, profile: str | None, account: str | None) -> Target:
    if profile is not None and account is not None:
        raise PromptInvalid("give --profile or --account, not both")
    if account is not None:
        return Target(account_id=await queries.account_id_for(session, ref=account))
    return Target(profile=profile or queries.DEFAULT_PROFILE)


def _guarded(build: Callable[[], T]) -> T:
    try:
        return build()
    except PromptError as exc:
        fail(str(exc))


@prompts_app.command("create")
def create(
    name: str,
    file: FileOpt = None,
    instructions: InstructionsOpt = None,
    model: ModelOpt = None,
    description: Annotated[str | None, typer.Option(help="What the prompt is for.")] = None,
) -> None:
    """Create a prompt with its version 1."""
    fields, described = _guarded(lambda: _fields(file, instructions, model, None))

    async def work(session: AsyncSession) -> int:
        version = await queries.create_prompt(
            session, name=name, description=description or described, first=fields
        )
        return version.version

    typer.echo(f"created {name} v{_run(work)}")


@prompts_app.command("add-version")
def add_version(
    name: str,
    file: FileOpt = None,
    instructions: InstructionsOpt = None,
    model: ModelOpt = None,
    note: Annotated[str | None, typer.Option(help="What changed.")] = None,
) -> None:
    """Add the prompt's next version (versions never change once added)."""
    fields, _ = _guarded(lambda: _fields(file, instructions, model, note))

    async def work(session: AsyncSession) -> int:
        return (await queries.add_version(session, name=name, fields=fields)).version

    typer.echo(f"added {name} v{_run(work)}")


@prompts_app.command("load")
def load(file: Path) -> None:
    """Create the prompt a file names (its `name:`, else the file's name), or add the file as
    its next version. Activate it separately."""
    loaded = _guarded(lambda: load_prompt_file(file))

    async def work(session: AsyncSession) -> tuple[str, int]:
        existing = {p.name for p in await queries.list_prompts(session)}
        if loaded.name in existing:
            version = await queries.add_version(session, name=loaded.name, fields=loaded.fields)
            return "added", version.version
        version = await queries.create_prompt(
            session, name=loaded.name, description=loaded.description, first=loaded.fields
        )
        return "created", version.version

    done, number = _run(work)
    typer.echo(f"{done} {loaded.name} v{number}")


@prompts_app.command("list")
def list_prompts(as_json: JsonOpt = False) -> None:
    """The prompts, with their latest version, and what each profile and account runs."""

    async def work(session: AsyncSession) -> tuple[list[PromptSummary], list[BindingView]]:
        return await queries.list_prompts(session), await queries.list_bindings(session)

    rows, bindings = _run(work)
    if as_json:
        print_json({"prompts": rows, "bindings": bindings})
        return
    table = Table("prompt", "versions", "latest", "description")
    for row in rows:
        table.add_row(row.name, str(row.versions), f"v{row.latest}", row.description or "")
    console.print(table)
    console.print(_bindings_table(bindings))


@prompts_app.command("profiles")
def profiles(as_json: JsonOpt = False) -> None:
    """Which version answers for each profile and account, and any A/B test."""
    bindings = _run(queries.list_bindings)
    if as_json:
        print_json(bindings)
        return
    console.print(_bindings_table(bindings))


def _bindings_table(bindings: list[BindingView]) -> Table:
    table = Table("profile / account", "active", "A/B candidate", "percent")
    for b in bindings:
        where = b.profile if b.profile is not None else f"account {b.account_id}"
        candidate = f"{b.candidate_prompt} v{b.candidate_version}" if b.candidate_prompt else ""
        percent = f"{b.candidate_percent}%" if b.candidate_prompt else ""
        table.add_row(where, f"{b.prompt} v{b.version}", candidate, percent)
    return table


@prompts_app.command("show")
def show(name: str, version: VersionOpt = None) -> None:
    """A version's settings and instructions (the latest unless --version)."""
    found = _run(lambda s: queries.get_version(s, name=name, version=version))
    console.print(f"[bold]{name} v{found.version}[/bold]  model: {found.model or '(OPENAI_MODEL)'}")
    if found.settings:
        console.print(f"settings: {found.settings}")
    if found.variables:
        console.print(f"variables: {found.variables}")
    if found.note:
        console.print(f"note: {found.note}")
    typer.echo(found.instructions)


@prompts_app.command("activate")
def activate(
    name: str, version: VersionOpt = None, profile: ProfileOpt = None, account: AccountOpt = None
) -> None:
    """Make a version the one that answers for a profile or an account (ends an A/B test)."""

    async def work(session: AsyncSession) -> str:
        target = await _target(session, profile, account)
        chosen = await queries.get_version(session, name=name, version=version)
        await queries.activate(session, target=target, version=chosen)
        return f"{target} now answers with {name} v{chosen.version}"

    typer.echo(_run(work))


@prompts_app.command("rollback")
def rollback(
    profile: ProfileOpt = None,
    account: AccountOpt = None,
    version: Annotated[
        int | None, typer.Option(help="Go to this version of the active prompt instead.")
    ] = None,
) -> None:
    """Go back to the version active before the current one."""

    async def work(session: AsyncSession) -> str:
        target = await _target(session, profile, account)
        chosen = None
        if version is not None:
            active = await queries.view_binding(session, target=target)
            chosen = await queries.get_version(session, name=active.prompt, version=version)
        await queries.rollback(session, target=target, version=chosen)
        now = await queries.view_binding(session, target=target)
        return f"{target} now answers with {now.prompt} v{now.version}"

    typer.echo(_run(work))


@prompts_app.command("ab")
def ab(
    name: str,
    version: Annotated[int, typer.Option(help="The candidate version.")],
    percent: Annotated[int, typer.Option(help="Share of new conversations, 0-100.")],
    profile: ProfileOpt = None,
) -> None:
    """A/B-test a candidate version against the profile's active one."""

    async def work(session: AsyncSession) -> str:
        target = await _target(session, profile, None)
        candidate = await queries.get_version(session, name=name, version=version)
        await queries.start_ab(session, target=target, candidate=candidate, percent=percent)
        return f"{target}: {percent}% of new conversations get {name} v{version}"

    typer.echo(_run(work))


@prompts_app.command("ab-stop")
def ab_stop(profile: ProfileOpt = None) -> None:
    """End the profile's A/B test (promote the winner with `activate`)."""

    async def work(session: AsyncSession) -> str:
        target = await _target(session, profile, None)
        await queries.stop_ab(session, target=target)
        return f"{target}: A/B test stopped"

    typer.echo(_run(work))


@prompts_app.command("report")
def report(
    prompt: Annotated[str | None, typer.Option(help="Only this prompt.")] = None,
    profile: Annotated[str | None, typer.Option(help="Only this profile.")] = None,
    since: Annotated[datetime | None, typer.Option(help="From (UTC).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Until, exclusive (UTC).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per version: agent messages, input/cached/output/reasoning tokens, cost in USD,
    average latency (ms), conversations assigned and their handoff rate."""
    rows = _run(
        lambda s: prompt_report(
            s, prompt=prompt, profile=profile, since=_utc(since), until=_utc(until)
        )
    )
    if as_json:
        print_json(rows)
        return
    console.print(_report_table(rows))


def _report_table(rows: list[VersionReport]) -> Table:
    table = Table(
        "version", "msgs", "in", "cached", "out", "reason", "USD", "ms", "convs", "handoff"
    )
    for r in rows:
        table.add_row(
            f"{r.prompt} v{r.version}",
            str(r.messages),
            str(r.input_tokens),
            str(r.cached_tokens),
            str(r.output_tokens),
            str(r.reasoning_tokens),
            f"{r.cost_usd:.6f}",
            f"{r.avg_latency_ms:.0f}" if r.avg_latency_ms is not None else "",
            str(r.conversations),
            f"{r.handoff_rate:.1%}" if r.handoff_rate is not None else "",
        )
    return table


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment
