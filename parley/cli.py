"""`parley`: thin Typer commands over `create_app`, the runtime and the store."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
import uvicorn

from parley.config import Settings
from parley.observability.logging import configure_logging

app = typer.Typer(
    help="Parley: one AI agent for WhatsApp, Instagram and the Responses API.", no_args_is_help=True
)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.")]


def _settings() -> Settings:
    settings = Settings()
    configure_logging(settings.parley_log_level, settings.parley_log_format)
    return settings


def _run_http(settings: Settings, role: str, host: str, port: int) -> None:
    from parley.app import create_app

    application = create_app(settings, role)  # type: ignore[arg-type]
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        proxy_headers=True,
        timeout_graceful_shutdown=25,
    )


@app.command()
def serve(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """HTTP API and worker in one process (SQLite and an in-process queue by default)."""
    _run_http(_settings(), "serve", host, port)


@app.command()
def api(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """Only the HTTP API (webhooks, /v1, admin, console), for scale-out."""
    _run_http(_settings(), "api", host, port)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Conversations at once.")] = None,
) -> None:
    """Only the worker: agent turns, delivery and the reconciler, for scale-out."""
    settings = _settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"parley_worker_concurrency": concurrency})
    asyncio.run(_worker(settings))


async def _worker(settings: Settings) -> None:
    from parley.runtime import open_runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with open_runtime(settings, "worker"):
        await stop.wait()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply pending migrations."""
    from parley.store.migrate import upgrade_sync

    settings = _settings()
    upgrade_sync(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@app.command()
def demo(
    latency: Annotated[float, typer.Option(help="Simulated model latency, seconds.")] = 0.2,
) -> None:
    """An offline end-to-end demonstration with the bundled OpenAI and Graph API simulators."""
    from parley.demo import run_demo

    configure_logging("WARNING")
    asyncio.run(run_demo(latency=latency))


if __name__ == "__main__":
    app()
