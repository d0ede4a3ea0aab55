"""Real, throwaway Redis and PostgreSQL servers for tests, on loopback and a free port.

From pytest (fixtures call these; fault tests stop, start, restart and wipe them mid-run):

    server = RedisServer(tmp_dir); server.start(); server.url; server.restart(); server.stop()
    url, stop = start_redis(tmp_dir)          # the short form
    url, stop = start_postgres(tmp_dir)       # postgresql+asyncpg://postgres@127.0.0.1:<port>/parley

From a shell (CI): `python -m tests.servers redis|postgres <dir>` starts one, prints its URL on
stdout and stays in the foreground until SIGTERM or SIGINT, then stops it.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is created and run
as an unprivileged user (`PARLEY_TEST_PG_USER`, default `nobody`) by switching user in the child
process (`subprocess` `user=`/`group=`), in a directory that user can reach: `<tmp_dir>/pg` when
every parent of it is searchable by that user, else a fresh directory in the system temp dir
(pytest's `/tmp/pytest-of-root` is private to root), removed again on `stop`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

STARTUP_TIMEOUT = 30.0


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def redis_command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command to a Redis server and return its raw reply (no client library)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        return sock.recv(65536)


class RedisServer:
    """`redis-server` without persistence, in the foreground as our child process."""

    def __init__(self, directory: Path | str, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self._fixed_port = port is not None
        self._process: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise ServerError(
                "redis-server is not on PATH: install redis-server "
                "(apt-get install -y redis-server) or set PARLEY_TEST_REDIS_URL"
            )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            try:
                self._spawn()
                return
            except ServerError:
                if self._fixed_port or attempt == 2:
                    raise
                self.port = free_port()  # someone took the port between picking and binding

    def _spawn(self) -> None:
        log_path = self.directory / f"redis-{self.port}.log"
        command = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        command += ["--daemonize", "no", "--logfile", str(log_path)]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise ServerError(f"redis-server exited on start:\n{_tail(log_path)}")
            with contextlib.suppress(OSError):
                if redis_command(self.port, "PING", timeout=0.5).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        self.stop()
        raise ServerError(f"redis-server did not answer in {STARTUP_TIMEOUT}s:\n{_tail(log_path)}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start on the same port: Redis comes back empty."""
        self.stop()
        self.start()

    def wipe(self) -> None:
        """Lose all data, as a Redis that was flushed or replaced would."""
        reply = redis_command(self.port, "FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise ServerError(f"FLUSHALL failed: {reply!r}")


class PostgresServer:
    """A PostgreSQL cluster made with `initdb`, run with `pg_ctl`, with a database `parley`."""

    def __init__(self, directory: Path | str, port: int | None = None) -> None:
        initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise ServerError("initdb/pg_ctl are not on PATH: install PostgreSQL (15 or newer)")
        self.bindir = Path(os.path.realpath(pg_ctl)).parent
        self.port = port or free_port()
        self._fixed_port = port is not None
        self._user = _unprivileged_user() if os.geteuid() == 0 else None
        self.base, self._owned_base = _postgres_base(Path(directory), self._user)
        self.data = self.base / "data"
        self.log_path = self.base / "server.log"
        self._running = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/parley"

    @property
    def dsn(self) -> str:
        """The same server for asyncpg or psql, without SQLAlchemy's driver suffix."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/parley"

    @property
    def running(self) -> bool:
        return self._running

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "HOME": str(self.base), "PGTZ": "UTC"}
        result = subprocess.run(  # type: ignore[call-overload]
            command, capture_output=True, text=True, env=env, cwd=self.base, **kwargs
        )
        if check and result.returncode != 0:
            raise ServerError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{_tail(self.log_path)}"
            )
        return result  # type: ignore[no-any-return]

    def start(self) -> None:
        if self._running:
            return
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            )
        for attempt in range(3):
            try:
                self._pg_ctl_start()
                break
            except ServerError:
                if self._fixed_port or attempt == 2:
                    raise
                self.port = free_port()
        self._running = True
        exists = self._run(
            str(self.bindir / "psql"),
            *self._client_args("postgres"),
            "-tAc",
            "SELECT 1 FROM pg_database WHERE datname = 'parley'",
        )
        if exists.stdout.strip() != "1":
            self._run(str(self.bindir / "createdb"), *self._client_args(), "parley")

    def _client_args(self, database: str | None = None) -> list[str]:
        args = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        return [*args, "-d", database] if database else args

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-t",
            str(int(STARTUP_TIMEOUT)),
            "-w",
            "start",
        )

    def stop(self, *, remove: bool = False) -> None:
        """Stop the server (fast shutdown); `remove` also deletes a directory we made for it."""
        if self._running:
            self._running = False
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        if remove and self._owned_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start on the same port; the data survives."""
        self.stop()
        self.start()


def _unprivileged_user() -> pwd.struct_passwd:
    name = os.environ.get("PARLEY_TEST_PG_USER", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError as exc:
        raise ServerError(
            f"no user {name!r} to run PostgreSQL as (set PARLEY_TEST_PG_USER)"
        ) from exc


def _reachable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` can search every directory from / down to `path`."""
    for directory in [path, *path.parents]:
        info = directory.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.pw_gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _postgres_base(directory: Path, user: pwd.struct_passwd | None) -> tuple[Path, bool]:
    """The directory for data, socket and log, writable by the server's user; and whether it
    was made outside `directory` (and so is ours to remove)."""
    directory.mkdir(parents=True, exist_ok=True)
    if user is None:
        base = directory / "pg"
        base.mkdir(exist_ok=True)
        return base, False
    owned = not _reachable(directory.resolve(), user)
    base = Path(tempfile.mkdtemp(prefix="parley-pg-")) if owned else directory / "pg"
    base.mkdir(exist_ok=True)
    os.chown(base, user.pw_uid, user.pw_gid)
    base.chmod(0o700)
    return base, owned


def start_redis(tmp_dir: Path | str) -> tuple[str, Callable[[], None]]:
    server = RedisServer(tmp_dir)
    server.start()
    return server.url, server.stop


def start_postgres(tmp_dir: Path | str) -> tuple[str, Callable[[], None]]:
    server = PostgresServer(tmp_dir)
    server.start()
    return server.url, lambda: server.stop(remove=True)


def restart_redis(server: RedisServer) -> None:
    server.restart()


def restart_postgres(server: PostgresServer) -> None:
    server.restart()


@contextlib.contextmanager
def redis_server(tmp_dir: Path | str) -> Iterator[RedisServer]:
    server = RedisServer(tmp_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_server(tmp_dir: Path | str) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop(remove=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("redis", "postgres"):
        print("usage: python -m tests.servers redis|postgres <dir>", file=sys.stderr)
        return 2
    kind, directory = argv
    # Handlers before the server starts, so that no signal is lost between start and wait.
    # (Not a blocked signal mask: the servers we start would inherit it and ignore SIGTERM.)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    manager = redis_server(directory) if kind == "redis" else postgres_server(directory)
    with manager as server:
        print(server.url, flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
