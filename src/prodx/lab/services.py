"""Private PostgreSQL and Redis servers from Debian packages, for tests and lab scenarios.

Each instance lives in one directory of its own (data, socket, config, log) and listens on a
free port of 127.0.0.1; the system's own services (``pg_ctlcluster``, systemd units) are
never touched. Started as::

    initdb -D DIR/data -U postgres -A trust --no-sync
    postgres -D DIR/data -k DIR -p PORT -c listen_addresses=127.0.0.1 [-c name=value ...]
    redis-server --port PORT --bind 127.0.0.1 --dir DIR/data --save "" --daemonize no [...]

As root, PostgreSQL runs as the ``postgres`` user (it refuses root) and Redis as ``redis``
when those accounts exist; otherwise both run as the caller. Use the context managers
(:func:`postgres`, :func:`redis`): they stop the server and remove its directory on every
way out. Given a :class:`~prodx.lab.sandbox.Sandbox`, the server is also recorded there, so
a killed run's leftovers are cleaned up with the sandbox.

    with postgres(settings={"max_connections": 5}) as pg:
        pg.psql("SELECT 1")          # '1'
        held = pg.hold_connections(5)  # five idle, real client backends
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prodx.lab.sandbox import LabError, Sandbox, free_port, wait_until

#: How long a server may take to accept connections (initdb alone takes ~1 s).
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0



def find_postgres_bindir() -> str | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding initdb and postgres, or None."""
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{d}/postgres")]
    found.sort(key=lambda d: int(re.sub(r"\D", "", d.split("/")[-2]) or 0))
    return found[-1] if found else None


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")


def postgres_unmet() -> str | None:
    """Why a private PostgreSQL cannot run here, or None."""
    if not find_postgres_bindir() or not shutil.which("psql"):
        return "needs Debian package postgresql"
    if os.geteuid() == 0 and _account("postgres") is None:
        return "needs the postgres user (Debian package postgresql creates it)"
    return None


def redis_unmet() -> str | None:
    """Why a private Redis cannot run here, or None."""
    return None if find_redis_server() else "needs Debian package redis-server"


def _account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _run_as(name: str) -> pwd.struct_passwd | None:
    """The account to run a server as: ``name`` when we are root and it exists."""
    return _account(name) if os.geteuid() == 0 else None


def _private_dir(kind: str, directory: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """(directory, whether we made it). A made one is world-traversable so the server's own
    user can reach it (pytest's tmp_path lies under a 0700 directory it cannot)."""
    if directory is not None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix=f"prodx-{kind}-", dir="/tmp"))
    os.chmod(path, 0o755)
    return path, True


def _chown(path: Path, account: pwd.struct_passwd | None) -> None:
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _popen_user(account: pwd.struct_passwd | None) -> dict[str, object]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}



@dataclass
class _Server:
    """What every private server shares: its directory, port, process and log."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path = Path()
    owned_dir: bool = False
    sandbox: Sandbox | None = None
    held: list[socket.socket] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self, argv: list[str], account: pwd.struct_passwd | None) -> None:
        if self.sandbox is not None:
            self.sandbox.check(self.directory)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.directory,
                start_new_session=True, **_popen_user(account),  # type: ignore[arg-type]
            )
        if self.sandbox is not None:
            from prodx.lab.sandbox import _proc_start

            self.sandbox._procs[self.process.pid] = self.process
            self.sandbox._record("process", self.process.pid, _proc_start(self.process.pid))

    def release(self) -> None:
        """Close the connections :meth:`hold_connections` opened."""
        for s in self.held:
            try:
                s.close()
            except OSError:
                pass
        self.held.clear()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (``sig`` first, SIGKILL to its group after STOP_TIMEOUT_S); idempotent.

        The directory stays: :meth:`remove` (or the context manager) deletes it.
        """
        self.release()
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # children (PostgreSQL's backends) go too
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass

    def remove(self) -> None:
        if self.owned_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class PostgresInstance(_Server):
    """A private PostgreSQL server: data in ``directory/data``, its socket in ``directory``."""

    bindir: str = ""
    account: pwd.struct_passwd | None = None
    settings: dict[str, object] = field(default_factory=dict)
    #: Where the data directory lives when not in ``directory`` (a filesystem of its own).
    data_path: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.data_path or self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """initdb (first time only), then start ``postgres`` and wait until it answers SQL."""
        acct = self.account
        _chown(self.directory, acct)
        self.log = self.directory / "postgres.log"
        if not self.log.exists():
            self.log.touch()
            _chown(self.log, acct)
        if not (self.data_dir / "PG_VERSION").exists():
            proc = subprocess.run(
                [f"{self.bindir}/initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                 "--no-sync", "-E", "UTF8", "--locale=C"],
                capture_output=True, text=True, timeout=120, cwd=self.directory, **_popen_user(acct),  # type: ignore[arg-type]
            )
            if proc.returncode != 0:
                raise LabError(f"initdb failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
        argv = [f"{self.bindir}/postgres", "-D", str(self.data_dir), "-k", str(self.directory), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "logging_collector=off"]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        self._spawn(argv, acct)
        wait_until(lambda: self._ready() or not self.running, START_TIMEOUT_S,
              f"PostgreSQL did not start on port {self.port}: {self.log_text()[-500:]}")
        if not self.running:
            raise LabError(f"PostgreSQL exited at start: {self.log_text()[-500:]}")

    def _ready(self) -> bool:
        return (self.directory / f".s.PGSQL.{self.port}").exists() and self.psql_result("SELECT 1").returncode == 0

    def psql_result(self, sql: str, timeout_s: float = 10.0) -> subprocess.CompletedProcess[str]:
        """``psql -Atc SQL`` over the Unix socket as the postgres role."""
        return subprocess.run(
            ["psql", "-X", "-At", "-h", str(self.directory), "-p", str(self.port), "-U", "postgres", "-d", "postgres",
             "-c", sql],
            capture_output=True, text=True, timeout=timeout_s, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        )

    def psql(self, sql: str) -> str:
        """The output of ``sql`` (rows, ``|``-separated); LabError when psql fails."""
        proc = self.psql_result(sql)
        if proc.returncode != 0:
            raise LabError(f"psql {sql!r}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def hold_connections(self, count: int, user: str = "postgres") -> list[socket.socket]:
        """Open ``count`` real client connections over TCP and leave them idle (protocol 3.0
        startup with trust authentication), until :meth:`release` or :meth:`stop`.

        Raises LabError with the server's message when it refuses one (too many clients).
        """
        opened = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            body = struct.pack("!i", 196608) + f"user\0{user}\0database\0postgres\0\0".encode()
            s.sendall(struct.pack("!i", len(body) + 4) + body)
            error = _pg_until_ready(s)
            if error:
                s.close()
                raise LabError(f"PostgreSQL refused connection {len(self.held) + 1}: {error}")
            self.held.append(s)
            opened.append(s)
        return opened


def _pg_until_ready(s: socket.socket) -> str:
    """Read backend messages until ReadyForQuery; the ErrorResponse text if one comes first."""
    buf = b""
    while True:
        while len(buf) < 5:
            chunk = s.recv(4096)
            if not chunk:
                return "connection closed"
            buf += chunk
        kind, length = buf[:1], struct.unpack("!i", buf[1:5])[0]
        while len(buf) < 1 + length:
            chunk = s.recv(4096)
            if not chunk:
                return "connection closed"
            buf += chunk
        body, buf = buf[5 : 1 + length], buf[1 + length :]
        if kind == b"E":
            fields = {f[:1]: f[1:].decode("utf-8", "replace") for f in body.split(b"\0") if f}
            return f"{fields.get(b'S', 'ERROR')}:  {fields.get(b'M', '')}"
        if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
            return "the server asks for a password (the lab uses trust)"
        if kind == b"Z":
            return ""


@dataclass
class RedisInstance(_Server):
    """A private Redis server: data (``dir``) in ``directory/data``."""

    binary: str = ""
    account: pwd.struct_passwd | None = None
    settings: dict[str, object] = field(default_factory=dict)
    #: The address it listens on (the host's end of a lab veth, say).
    bind: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"redis://{self.bind}:{self.port}/0"

    def start(self) -> None:
        acct = self.account
        self.data_dir.mkdir(exist_ok=True)
        _chown(self.directory, acct)
        _chown(self.data_dir, acct)
        self.log = self.directory / "redis.log"
        argv = [self.binary, "--port", str(self.port), "--bind", self.bind, "--dir", str(self.data_dir),
                "--daemonize", "no", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
        for key, value in self.settings.items():
            argv += [f"--{key}", str(value)]
        self._spawn(argv, acct)
        wait_until(lambda: self._ready() or not self.running, START_TIMEOUT_S,
              f"Redis did not start on port {self.port}: {self.log_text()[-500:]}")
        if not self.running:
            raise LabError(f"Redis exited at start: {self.log_text()[-500:]}")

    def _ready(self) -> bool:
        try:
            return self.command("PING") == "+PONG"
        except OSError:
            return False

    def command(self, *args: str) -> str:
        """Send one command (RESP) and return the first line of the reply, e.g. ``+PONG``."""
        with socket.create_connection((self.bind, self.port), timeout=2) as s:
            s.sendall(_resp(args))
            return _first_reply(s)

    def hold_connections(self, count: int) -> list[socket.socket]:
        """Open ``count`` client connections that each PINGed once, and leave them idle.

        Raises LabError with Redis's reply when it refuses one (max number of clients).
        """
        opened = []
        for _ in range(count):
            s = socket.create_connection((self.bind, self.port), timeout=2)
            s.sendall(_resp(("PING",)))
            reply = _first_reply(s)
            if reply != "+PONG":
                s.close()
                raise LabError(f"Redis refused connection {len(self.held) + 1}: {reply}")
            self.held.append(s)
            opened.append(s)
        return opened


def _resp(args: tuple[str, ...] | list[str]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        raw = a.encode()
        out.append(f"${len(raw)}\r\n".encode() + raw + b"\r\n")
    return b"".join(out)


def _first_reply(s: socket.socket) -> str:
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\r\n", 1)[0].decode("utf-8", "replace")


@contextmanager
def postgres(
    directory: str | os.PathLike[str] | None = None,
    *,
    port: int | None = None,
    settings: Mapping[str, object] | None = None,
    sandbox: Sandbox | None = None,
) -> Iterator[PostgresInstance]:
    """A running private PostgreSQL; stopped (and its directory removed if we made it) on exit.

    ``directory`` must be reachable by the postgres user; by default a fresh one under /tmp.
    ``settings`` are server parameters (``{"max_connections": 5}``).
    """
    bindir = find_postgres_bindir()
    if bindir is None:
        raise LabError("needs Debian package postgresql")
    if sandbox is not None and directory is None:
        directory = sandbox.mkdirs(sandbox.path("postgres"))
    path, owned = _private_dir("postgres", directory)
    pg = PostgresInstance(path, port or free_port(), owned_dir=owned, sandbox=sandbox, bindir=bindir,
                          account=_run_as("postgres"), settings=dict(settings or {}))
    try:
        pg.start()
        yield pg
    finally:
        pg.stop(signal.SIGINT)  # "fast" shutdown: disconnect clients, no wait
        pg.remove()


@contextmanager
def redis(
    directory: str | os.PathLike[str] | None = None,
    *,
    port: int | None = None,
    settings: Mapping[str, object] | None = None,
    sandbox: Sandbox | None = None,
) -> Iterator[RedisInstance]:
    """A running private Redis; stopped (and its directory removed if we made it) on exit.

    ``settings`` are config directives (``{"maxclients": 2}``).
    """
    binary = find_redis_server()
    if binary is None:
        raise LabError("needs Debian package redis-server")
    if sandbox is not None and directory is None:
        directory = sandbox.mkdirs(sandbox.path("redis"))
    path, owned = _private_dir("redis", directory)
    r = RedisInstance(path, port or free_port(), owned_dir=owned, sandbox=sandbox, binary=binary,
                      account=_run_as("redis"), settings=dict(settings or {}))
    try:
        r.start()
        yield r
    finally:
        r.stop()
        r.remove()
