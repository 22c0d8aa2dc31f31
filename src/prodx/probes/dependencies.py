"""The databases the app depends on: PostgreSQL, MySQL/MariaDB and Redis, from the profile's
``[[dependency]]`` URLs and from the servers running on this host.

For each: a TCP connect, then a session start without credentials, through ``host.observe``:

- PostgreSQL ``pg_startup`` [host, port, user]: a protocol-3 StartupMessage; the first reply
  is an authentication request (the server has a slot for us) or an ErrorResponse such as
  ``FATAL 53300 sorry, too many clients already`` or ``57P03 the database system is starting up``.
  As root, for a local server, also::

      runuser -u postgres -- psql -X -At -h SOCKETDIR -p PORT -d postgres -c
          "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections'),
                  count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
                  AND pid <> pg_backend_pid()"
      5|0|3

- MySQL/MariaDB ``mysql_greeting`` [host, port]: the server's first packet, a greeting or an
  error packet (1040 "Too many connections", 1129 host blocked).
- Redis ``redis_info`` [host, port]: ``INFO clients``, ``CONFIG GET maxclients``, ``CONFIG GET dir``
  over RESP, or the ``-ERR max number of clients reached`` reply.

And the filesystem of each data directory (PostgreSQL ``-D`` or the postmaster's
``/proc/PID/cwd``; Redis ``dir`` or its cwd), measured with the storage probes' mount table.
No database in the profile and none running gives ``unknown`` findings, not ``absent``.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from prodx.host.base import ProcessInfo
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.mounts import measured_mounts, mount_of
from prodx.probes.network import CONNECT_TIMEOUT_S, is_local, reach, socket_owners, tcp_sockets, unix_listeners
from prodx.probes.storage import is_full, is_reserved_only

_KINDS = {"postgres": "postgres", "postgresql": "postgres", "mysql": "mysql", "redis": "redis"}
#: Process names of local servers → kind (the PostgreSQL postmaster is told apart by its -D or
#: config_file argument: its children rename themselves "postgres: 15/main: checkpointer").
_LOCAL = {"postgres": "postgres", "postmaster": "postgres", "mysqld": "mysql", "mariadbd": "mysql",
          "redis-server": "redis"}
#: PostgreSQL SQLSTATEs that mean "no slot" and "not accepting sessions now".
_PG_FULL = {"53300"}
_PG_NOT_NOW = {"57P03", "57P01", "57P02", "57P04"}
_MYSQL_FULL = {1040, 1203}
_MYSQL_REFUSED = {1129, 1130}


@dataclass
class Target:
    """One database to examine."""

    kind: str
    name: str
    host: str
    port: int
    user: str = ""
    password: str = ""
    pid: int = 0
    #: The server's OS user id (-1 unknown): one other than root stops at the root reserve.
    uid: int = -1
    data_dir: str = ""
    socket_dir: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind} {self.host}:{self.port})"


def _pg_data_dir(proc: ProcessInfo) -> str:
    """``-D DIR`` (or ``-DDIR``) of a postmaster command line; empty when not given.

    >>> _pg_data_dir(ProcessInfo(1, "postgres", cmdline=("/usr/lib/postgresql/15/bin/postgres", "-D", "/srv/pg")))
    '/srv/pg'
    """
    args = list(proc.cmdline)
    for i, a in enumerate(args):
        if a == "-D" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("-D") and len(a) > 2:
            return a[2:]
    return ""


def _is_postmaster(proc: ProcessInfo) -> bool:
    return bool(proc.cmdline) and not proc.cmdline[0].startswith("postgres:") and (
        "-D" in " ".join(proc.cmdline) or any("config_file" in a for a in proc.cmdline))


def targets(ctx: ProbeContext) -> list[Target]:
    """The profile's database dependencies (in a second pass: the ones a log named), then
    local servers the profile does not name."""
    out: list[Target] = []
    for dep in ctx.target.dependencies:
        kind = _KINDS.get(dep.kind)
        if kind is None:
            continue
        host, port = dep.address
        parts = urlsplit(dep.url)
        out.append(Target(kind, dep.name, host, port, unquote(parts.username or ""), unquote(parts.password or "")))
    if ctx.target.second_pass:
        return out  # the local servers were examined in the first pass
    procs = ctx.processes()
    try:
        listening = {s.inode: s for s in tcp_sockets(ctx) if s.state == "LISTEN"}
        owners = socket_owners(ctx).by_inode
        unix = unix_listeners(ctx)
    except OSError:
        listening, owners, unix = {}, {}, {}
    for proc in procs:
        kind = _LOCAL.get(proc.name)
        if kind is None or (kind == "postgres" and not _is_postmaster(proc)):
            continue
        mine = sorted(((s.local_port, s.local_ip) for i, s in listening.items()
                       if any(p.pid == proc.pid for p in owners.get(i, []))))
        ports = sorted({port for port, _ip in mine})
        # Where to reach it: loopback when it listens on every address, else the address it binds.
        addresses = {ip for _port, ip in mine}
        sockets = [unix[i] for i in unix if any(p.pid == proc.pid for p in owners.get(i, []))]
        matched = [t for t in out if t.kind == kind and (is_local(t.host) or t.host in addresses)
                   and (t.port in ports or not ports)]
        if not matched and ports:
            ip = mine[0][1]
            host = "127.0.0.1" if ip in ("0.0.0.0", "::") or is_local(ip) else ip
            t = Target(kind, f"local {proc.name}", host, ports[0], user="postgres" if kind == "postgres" else "")
            out.append(t)
            matched = [t]
        for t in matched:
            t.pid, t.uid = proc.pid, proc.uid
            if kind == "postgres":
                t.data_dir = _pg_data_dir(proc)
                pg_sock = [s for s in sockets if s.endswith(f".s.PGSQL.{t.port}")]
                t.socket_dir = os.path.dirname(pg_sock[0]) if pg_sock else ""
    return out


# ---- protocol exchanges (observations) ---------------------------------------------------------

def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("closed by the server")
        buf += chunk
    return buf


def pg_startup(host: str, port: int, user: str) -> dict[str, Any]:
    """Send a StartupMessage and read the first reply: ``{"reply": "auth"|"ready"}`` or
    ``{"reply": "error", "sqlstate", "message", "severity"}``."""
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as s:
        body = struct.pack("!i", 196608) + f"user\0{user}\0database\0postgres\0application_name\0prodx\0\0".encode()
        s.sendall(struct.pack("!i", len(body) + 4) + body)
        kind = _recv_exact(s, 1)
        length = struct.unpack("!i", _recv_exact(s, 4))[0]
        payload = _recv_exact(s, min(length - 4, 8192))
        if kind == b"E":
            return {"reply": "error"} | parse_pg_error(payload)
        if kind == b"R":
            code = struct.unpack("!i", payload[:4])[0]
            if code == 0:
                s.sendall(b"X\0\0\0\4")  # Terminate: we only wanted to know we would be let in
                return {"reply": "ready"}
            return {"reply": "auth"}
        return {"reply": f"unexpected {kind!r}"}


def parse_pg_error(payload: bytes) -> dict[str, str]:
    """The fields of a PostgreSQL ErrorResponse body.

    >>> parse_pg_error(b"SFATAL\\0VFATAL\\0C53300\\0Msorry, too many clients already\\0\\0")
    {'severity': 'FATAL', 'sqlstate': '53300', 'message': 'sorry, too many clients already'}
    """
    fields = {f[:1]: f[1:].decode("utf-8", "replace") for f in payload.split(b"\0") if f}
    return {"severity": fields.get(b"S", ""), "sqlstate": fields.get(b"C", ""), "message": fields.get(b"M", "")}


def mysql_greeting(host: str, port: int) -> dict[str, Any]:
    """The first packet a MySQL/MariaDB server sends: ``{"reply": "greeting", "version"}`` or
    ``{"reply": "error", "code", "message"}``."""
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as s:
        header = _recv_exact(s, 4)
        length = header[0] | header[1] << 8 | header[2] << 16
        return parse_mysql_first_packet(_recv_exact(s, min(length, 8192)))


def parse_mysql_first_packet(payload: bytes) -> dict[str, Any]:
    """A server's first packet: greeting (protocol 10) or error (0xff).

    >>> parse_mysql_first_packet(b"\\xff\\x10\\x04Too many connections")
    {'reply': 'error', 'code': 1040, 'message': 'Too many connections'}
    >>> parse_mysql_first_packet(b"\\x0a10.11.6-MariaDB\\x00rest")["version"]
    '10.11.6-MariaDB'
    """
    if payload[:1] == b"\xff":
        code = struct.unpack("<H", payload[1:3])[0]
        msg = payload[3:]
        if msg[:1] == b"#":
            msg = msg[6:]
        return {"reply": "error", "code": code, "message": msg.decode("utf-8", "replace")}
    return {"reply": "greeting", "version": payload[1:].split(b"\0", 1)[0].decode("ascii", "replace")}


def _resp(*args: str) -> bytes:
    return b"".join([f"*{len(args)}\r\n".encode()] + [f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args])


def _read_reply(f: Any) -> Any:
    line = f.readline().rstrip(b"\r\n").decode("utf-8", "replace")
    if not line:
        raise ConnectionResetError("closed by the server")
    kind, rest = line[:1], line[1:]
    if kind in "+-:":
        return line if kind != ":" else int(rest)
    if kind == "$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode("utf-8", "replace")
    if kind == "*":
        return [_read_reply(f) for _ in range(max(0, int(rest)))]
    return line


def redis_info(host: str, port: int, password: str = "") -> dict[str, Any]:
    """``INFO clients`` and ``CONFIG GET maxclients|dir`` over RESP; an ``-ERR``/``-LOADING``
    first reply is returned as ``{"reply": "error", "message"}``."""
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as s:
        f = s.makefile("rb")
        if password:
            s.sendall(_resp("AUTH", password))
            auth = _read_reply(f)
            if isinstance(auth, str) and auth.startswith("-"):
                return {"reply": "error", "message": auth[1:]}
        s.sendall(_resp("INFO", "clients") + _resp("CONFIG", "GET", "maxclients") + _resp("CONFIG", "GET", "dir"))
        info = _read_reply(f)
        if isinstance(info, str) and info.startswith("-"):
            return {"reply": "error", "message": info[1:]}
        out: dict[str, Any] = {"reply": "ok", "clients": parse_redis_info(info or "")}
        for key in ("maxclients", "dir"):
            value = _read_reply(f)
            if isinstance(value, list) and len(value) == 2:
                out[key] = value[1]
        return out


def parse_redis_info(text: str) -> dict[str, str]:
    """``key:value`` lines of an INFO reply.

    >>> parse_redis_info("# Clients\\r\\nconnected_clients:3\\r\\nblocked_clients:0\\r\\n")
    {'connected_clients': '3', 'blocked_clients': '0'}
    """
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def _observe(ctx: ProbeContext, kind: str, key: list[Any], compute: Any) -> dict[str, Any]:
    def safe() -> dict[str, Any]:
        try:
            return compute()
        except OSError as exc:
            import errno as errmod

            return {"reply": "oserror", "error": errmod.errorcode.get(exc.errno or 0, type(exc).__name__), "detail": str(exc)}

    return ctx.host.observe(kind, key, safe)


# ---- the probe ---------------------------------------------------------------------------------

@dataclass
class Verdict:
    refused: bool | None = None
    exhausted: bool | None = None
    full: bool | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


class DatabasesProbe(Probe):
    """Reachable, refusing, out of connection slots, data directory full — per database."""

    name = "dep.databases"
    findings = ("dep.refused", "dep.connections_exhausted", "dep.data_dir_full")
    cost = 1.0
    deadline_s = 2.5

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        found = targets(ctx)
        if not found:
            reason = "no database in the profile ([[dependency]] url postgres://, mysql://, redis://) and none running here"
            yield from (unknown(f, reason) for f in self.findings)
            return
        verdicts = [(t, self._examine(ctx, t)) for t in found]
        for fid, attr, what in (("dep.refused", "refused", "refuses connections"),
                                ("dep.connections_exhausted", "exhausted", "has no free connection slot"),
                                ("dep.data_dir_full", "full", "data directory filesystem is full or read-only")):
            items = [{"target": t.label} | v.evidence | ({"reason": v.reasons[attr]} if attr in v.reasons else {})
                     for t, v in verdicts]
            yes = [(t, v) for t, v in verdicts if getattr(v, attr) is True]
            undecided = [(t, v) for t, v in verdicts if getattr(v, attr) is None]
            if yes:
                yield present(fid, "; ".join(f"{t.label} {what}: {v.reasons.get(attr, '')}" for t, v in yes), databases=items)
            elif undecided:
                yield unknown(fid, "; ".join(f"{t.label}: {v.reasons.get(attr, 'not measured')}" for t, v in undecided),
                              databases=items)
            else:
                yield absent(fid, "; ".join(f"{t.label}: {v.reasons.get(attr, 'ok')}" for t, v in verdicts), databases=items)

    def _examine(self, ctx: ProbeContext, t: Target) -> Verdict:
        v = Verdict()
        tcp = reach(ctx, t.host, t.port)
        v.evidence["tcp"] = tcp
        if not tcp["ok"]:
            if tcp["error"] == "ECONNREFUSED":
                v.refused, v.reasons["refused"] = True, f"TCP connect to {t.host}:{t.port} refused (nothing listens)"
            else:
                v.reasons["refused"] = f"TCP connect failed: {tcp['error']} ({tcp.get('detail', '')})"
            v.reasons["exhausted"] = "the server could not be reached"
        else:
            getattr(self, f"_{t.kind}")(ctx, t, v)
        self._data_dir(ctx, t, v)
        return v

    @staticmethod
    def _postgres(ctx: ProbeContext, t: Target, v: Verdict) -> None:
        user = t.user or "postgres"
        reply = _observe(ctx, "pg_startup", [t.host, t.port, user], lambda: pg_startup(t.host, t.port, user))
        v.evidence["startup"] = reply
        state = reply.get("sqlstate", "")
        if reply["reply"] == "error" and (state in _PG_FULL or "too many clients" in reply.get("message", "")
                                          or "connection slots are reserved" in reply.get("message", "")):
            v.exhausted, v.refused = True, False
            v.reasons["exhausted"] = f"the server answers {reply['severity']} {state}: {reply['message']}"
        elif reply["reply"] == "error" and state in _PG_NOT_NOW:
            v.refused, v.reasons["refused"] = True, f"{reply['severity']} {state}: {reply['message']}"
        elif reply["reply"] in ("auth", "ready", "error"):
            v.refused, v.reasons["refused"] = False, "accepts sessions"
        else:
            v.reasons["refused"] = f"unexpected reply: {reply}"
        if v.exhausted:
            return
        counts = _pg_counts(ctx, t)
        if counts is None:
            v.reasons["exhausted"] = ("a slot was free for a new session, but connections in use cannot be counted: "
                                      "needs root and a local server (psql as the postgres user)")
            if reply["reply"] in ("auth", "ready"):
                v.exhausted = False
                v.reasons["exhausted"] = "the server handed out a session slot"
            return
        if "error" in counts:
            v.evidence["psql"] = counts
            if "too many clients" in counts["error"] or "reserved" in counts["error"]:
                v.exhausted, v.reasons["exhausted"] = True, counts["error"]
            else:
                v.reasons["exhausted"] = f"psql failed: {counts['error']}"
            return
        v.evidence["connections"] = counts
        limit = counts["max_connections"] - counts["superuser_reserved_connections"]
        v.exhausted = counts["used"] >= limit
        v.reasons["exhausted"] = (f"{counts['used']} client connections of max_connections {counts['max_connections']} "
                                  f"({counts['superuser_reserved_connections']} reserved for superusers)")

    @staticmethod
    def _mysql(ctx: ProbeContext, t: Target, v: Verdict) -> None:
        reply = _observe(ctx, "mysql_greeting", [t.host, t.port], lambda: mysql_greeting(t.host, t.port))
        v.evidence["greeting"] = reply
        if reply["reply"] == "error" and reply.get("code") in _MYSQL_FULL:
            v.exhausted, v.refused = True, False
            v.reasons["exhausted"] = f"error {reply['code']}: {reply['message']}"
        elif reply["reply"] == "error" and reply.get("code") in _MYSQL_REFUSED:
            v.refused, v.reasons["refused"] = True, f"error {reply['code']}: {reply['message']}"
        elif reply["reply"] == "greeting":
            v.refused, v.exhausted = False, False
            v.reasons["refused"] = f"greets as {reply['version']}"
            v.reasons["exhausted"] = "the server greeted a new connection (it answers 1040 when out of slots)"
        else:
            v.reasons["refused"] = v.reasons["exhausted"] = f"unexpected reply: {reply}"

    @staticmethod
    def _redis(ctx: ProbeContext, t: Target, v: Verdict) -> None:
        reply = _observe(ctx, "redis_info", [t.host, t.port], lambda: redis_info(t.host, t.port, t.password))
        v.evidence["redis"] = reply
        message = reply.get("message", "")
        if reply["reply"] == "error" and "max number of clients" in message:
            v.exhausted, v.refused = True, False
            v.reasons["exhausted"] = message
            return
        if reply["reply"] == "error" and message.startswith(("LOADING", "MASTERDOWN", "BUSY")):
            v.refused, v.reasons["refused"] = True, message
            return
        if reply["reply"] != "ok":
            v.reasons["refused"] = v.reasons["exhausted"] = f"{reply.get('error', '')} {message or reply.get('detail', '')}".strip()
            if message.startswith("NOAUTH") or "WRONGPASS" in message:
                v.refused = False
            return
        v.refused, v.reasons["refused"] = False, "answers commands"
        try:
            used = int(reply["clients"]["connected_clients"])
            limit = int(reply["maxclients"])
        except (KeyError, ValueError):
            v.reasons["exhausted"] = "CONFIG GET maxclients is not allowed (renamed or ACL)"
            return
        t.data_dir = t.data_dir or reply.get("dir", "")
        # Our own connection is one of connected_clients.
        v.exhausted = used >= limit
        v.evidence["connections"] = {"used": used, "maxclients": limit}
        v.reasons["exhausted"] = f"{used} of maxclients {limit} connected (this check included)"

    @staticmethod
    def _data_dir(ctx: ProbeContext, t: Target, v: Verdict) -> None:
        path = t.data_dir
        if not path and t.pid and is_local(t.host):
            try:
                path = ctx.host.readlink(f"/proc/{t.pid}/cwd")
            except PermissionError:
                v.reasons["full"] = f"needs root to read /proc/{t.pid}/cwd (the data directory)"
                return
            except OSError:
                path = ""
        if not path:
            v.reasons["full"] = "the data directory is not known (the server is not local, or not running)"
            return
        mount = mount_of(path, measured_mounts(ctx))
        if mount is None or mount.stats is None or mount.stats.size_bytes == 0:
            v.reasons["full"] = f"the filesystem of {path} could not be measured"
            return
        v.evidence["data_dir"] = path
        v.evidence["data_mount"] = mount.mount_point
        free = mount.stats.avail_bytes
        # A server running as its own user (postgres, mysql, redis) gets ENOSPC once only
        # root's reserve is left, as the app's user does.
        own_user_full = t.uid > 0 and is_reserved_only(mount)
        if is_full(mount) or own_user_full or mount.readonly or mount.stats.readonly:
            v.full = True
            v.reasons["full"] = (f"{path} is on {mount.mount_point}, "
                                 + ("mounted read-only" if mount.readonly or mount.stats.readonly else
                                    f"full for the server's user ({free:,} bytes available, the rest is root's reserve)"
                                    if own_user_full else f"full ({free:,} bytes available)"))
        else:
            v.full = False
            v.reasons["full"] = f"{path} is on {mount.mount_point} with {free:,} bytes available"


def _pg_counts(ctx: ProbeContext, t: Target) -> dict[str, Any] | None:
    """Connections in use and the limits, through psql as the postgres OS user; None when
    that is not possible here (not root, or not a local server)."""
    if not (ctx.host.is_root and is_local(t.host) and t.pid):
        return None
    sql = ("SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections'), "
           "count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
    argv = ["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-p", str(t.port), "-d", "postgres", "-c", sql]
    if t.socket_dir:
        argv[5:5] = ["-h", t.socket_dir]
    result = ctx.host.run(argv, timeout_s=1.5)
    if not result.ok:
        return {"error": (result.stderr or result.error).strip()[-300:]}
    try:
        max_c, reserved, used = (int(x) for x in result.stdout.strip().split("|"))
    except ValueError:
        return {"error": f"unexpected psql output: {result.stdout[:200]!r}"}
    return {"max_connections": max_c, "superuser_reserved_connections": reserved, "used": used}
