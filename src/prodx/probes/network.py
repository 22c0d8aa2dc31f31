"""The network organ: listening sockets of the expected services, port conflicts, TCP
reachability of dependencies, DNS, and the kernel's connection tables.

Reads (through the host):

- ``/proc/net/tcp``, ``/proc/net/tcp6``, ``/proc/net/unix`` (sockets, see prodx.netparse) and
  each process's ``/proc/PID/fd`` links (``socket:[40417]``) to know who holds a socket;
- nginx configs (those discovery read from each running master's ``-p``/``-c``, else
  ``/etc/nginx/nginx.conf`` and its includes) for the ports it must listen on;
- ``/etc/resolv.conf`` (nameservers, search domains), and the one the app's processes see
  through ``/proc/PID/root/etc/resolv.conf`` when it differs (a container, ``ip netns exec``);
- ``/proc/sys/net/netfilter/nf_conntrack_{count,max}``, ``/proc/net/stat/nf_conntrack``,
  ``/proc/sys/net/ipv4/ip_local_port_range``, ``/proc/net/netstat`` (sampled twice);
- for the app's processes in another network namespace (``/proc/PID/ns/net``): their
  namespace's sockets (``/proc/PID/net/tcp{,6}``) and port range (``nsenter --net`` reading
  ``/proc/sys/net/ipv4/ip_local_port_range`` there; root only);
- observations recorded through ``host.observe``: ``tcp_connect`` [host, port],
  ``resolve`` [name], ``dns_query`` [server, name].

A probe that has nothing to examine (no services, no dependencies, no names in the profile)
reports its findings ``unknown`` with what to add to the profile, never ``absent``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prodx.host.base import ProcessInfo
from prodx.model import Finding, absent, present, unknown
from prodx.netparse import (
    TcpSocket,
    parse_bind_failure,
    parse_conntrack_stat,
    parse_netstat,
    parse_nginx_includes,
    parse_nginx_listen,
    parse_port_range,
    parse_proc_net_tcp,
    parse_proc_net_unix_listening,
    parse_resolv_conf,
    socket_inode,
)
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.openfiles import all_open_files

#: Bound of one TCP connect or DNS lookup: a dependency slower than this is as good as down.
CONNECT_TIMEOUT_S = 1.0
RESOLVE_TIMEOUT_S = 1.0
#: Pause between the two samples of cumulative counters (ListenOverflows, conntrack drops).
SAMPLE_GAP_S = 0.3
#: A table at or above this fill is full for practical purposes.
FULL_FRACTION = 0.9
#: TIME_WAIT is "high" toward one destination at this share of the ephemeral range, or in total.
TIME_WAIT_SHARE = 0.25
TIME_WAIT_TOTAL = 20000
#: Process names that are network servers: running without a listening socket is abnormal.
_SERVERS = ("nginx", "apache2", "httpd", "php-fpm", "postgres", "mysqld", "mariadbd", "redis-server",
            "gunicorn", "uwsgi", "memcached", "haproxy", "caddy", "node", "puma", "unicorn")
#: Who may hold a local dependency's port.
_DB_PROCESSES = {"postgres": ("postgres", "postmaster"), "postgresql": ("postgres", "postmaster"),
                 "mysql": ("mysqld", "mariadbd"), "redis": ("redis-server", "redis-check-rdb", "keydb-server")}


# ---- shared facts ---------------------------------------------------------------------------

def app_processes(ctx: ProbeContext) -> list[ProcessInfo]:
    """One process per running service of the app: the masters discovery found, then the
    first process named like each of the profile's services."""

    def compute() -> list[ProcessInfo]:
        from prodx.discovery import discover

        procs = {p.pid: p for p in ctx.processes()}
        found = ctx.fact("discovery", lambda: discover(ctx.host))
        out = [procs[s.pid] for s in found.services if s.pid in procs]
        for name in ctx.target.services:
            match = next((p for p in procs.values() if name_matches(p, name)), None)
            if match is not None and match not in out:
                out.append(match)
        return out

    return ctx.fact("net.app_processes", compute)


def app_netns(ctx: ProbeContext) -> list[tuple[str, ProcessInfo]]:
    """(namespace, one process of the app in it) for each network namespace of the app's
    processes other than the one this host's /proc/net shows; empty when they share it or
    the links cannot be read (they need root for other users' processes)."""
    try:
        mine = ctx.host.readlink("/proc/self/ns/net")
    except OSError:
        return []
    out: dict[str, ProcessInfo] = {}
    for proc in app_processes(ctx):
        try:
            ns = ctx.host.readlink(f"/proc/{proc.pid}/ns/net")
        except OSError:
            continue
        if ns != mine:
            out.setdefault(ns, proc)
    return list(out.items())

def tcp_sockets(ctx: ProbeContext) -> list[TcpSocket]:
    """Every TCP socket of the host's network namespace (IPv4 then IPv6)."""

    def compute() -> list[TcpSocket]:
        out: list[TcpSocket] = []
        for path in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                out += parse_proc_net_tcp(ctx.host.read_text(path, 64 << 20))
            except FileNotFoundError:
                if path.endswith("tcp"):
                    raise
        return out

    return ctx.fact("net.tcp", compute)


def unix_listeners(ctx: ProbeContext) -> dict[int, str]:
    def compute() -> dict[int, str]:
        try:
            return parse_proc_net_unix_listening(ctx.host.read_text("/proc/net/unix", 64 << 20))
        except OSError:
            return {}

    return ctx.fact("net.unix", compute)


@dataclass(frozen=True)
class SocketOwners:
    """Socket inode → the processes holding it; pids whose descriptors we may not read."""

    by_inode: dict[int, list[ProcessInfo]]
    denied: list[int]


def socket_owners(ctx: ProbeContext) -> SocketOwners:
    """Who holds each socket, from every process's /proc/PID/fd links."""

    def compute() -> SocketOwners:
        files, denied = all_open_files(ctx)
        by_inode: dict[int, list[ProcessInfo]] = {}
        for f, proc in files:
            inode = socket_inode(f.target)
            if inode is not None:
                holders = by_inode.setdefault(inode, [])
                if all(p.pid != proc.pid for p in holders):
                    holders.append(proc)
        return SocketOwners(by_inode, denied)

    return ctx.fact("net.socket_owners", compute)


def name_matches(proc: ProcessInfo, service: str) -> bool:
    """Whether ``proc`` is an instance of ``service`` (a process name from the profile).

    >>> name_matches(ProcessInfo(1, "php-fpm8.2"), "php-fpm8.2"), name_matches(ProcessInfo(1, "postgres"), "postgresql")
    (True, True)
    >>> name_matches(ProcessInfo(1, "python3"), "nginx")
    False
    """
    names = {proc.name, os.path.basename(proc.exe), os.path.basename(proc.cmdline[0]) if proc.cmdline else ""} - {""}
    return any(n == service or n.startswith(service) or (len(n) >= 5 and service.startswith(n)) for n in names)


def _describe(proc: ProcessInfo) -> dict[str, Any]:
    return {"pid": proc.pid, "name": proc.name, "user": proc.user}


def is_local(host: str) -> bool:
    """Whether ``host`` names this machine's loopback.

    >>> is_local("localhost"), is_local("127.0.0.1"), is_local("::1"), is_local("db.example")
    (True, True, True, False)
    """
    if host in ("localhost", "localhost.localdomain", "*", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _bounded(fn: Callable[[], Any], timeout_s: float, on_timeout: Any) -> Any:
    """``fn()`` in a daemon thread, abandoned after ``timeout_s`` (getaddrinfo cannot be
    interrupted: a thread stuck in it is left behind, the probe goes on)."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except Exception as exc:  # noqa: BLE001 - reported as data
            box.append({"error": type(exc).__name__, "detail": str(exc)})

    t = threading.Thread(target=run, daemon=True, name="prodx-net-bounded")
    t.start()
    t.join(timeout_s)
    return box[0] if box else on_timeout


def _gai_error(exc: socket.gaierror) -> str:
    for name in ("EAI_NONAME", "EAI_AGAIN", "EAI_FAIL", "EAI_NODATA", "EAI_SERVICE", "EAI_SYSTEM"):
        if exc.errno == getattr(socket, name, None):
            return name
    return f"EAI_{exc.errno}"


def resolve(ctx: ProbeContext, name: str) -> dict[str, Any]:
    """``{"addresses": [...]}`` or ``{"error": "EAI_NONAME"|"timeout"|..., "detail"}``."""

    def lookup() -> dict[str, Any]:
        def gai() -> dict[str, Any]:
            try:
                infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                return {"error": _gai_error(exc), "detail": exc.strerror or str(exc)}
            return {"addresses": sorted({i[4][0] for i in infos})}

        return _bounded(gai, RESOLVE_TIMEOUT_S, {"error": "timeout", "detail": f"no answer within {RESOLVE_TIMEOUT_S:.1f} s"})

    if _is_ip(name):
        return {"addresses": [name]}
    return ctx.fact(f"net.resolve.{name}", lambda: ctx.host.observe("resolve", [name], lookup))


def tcp_connect(ctx: ProbeContext, address: str, port: int) -> dict[str, Any]:
    """``{"ok": true, "connect_ms"}`` or ``{"ok": false, "error": "ECONNREFUSED"|"ETIMEDOUT"|...}``."""

    def connect() -> dict[str, Any]:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        start = time.monotonic()
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(CONNECT_TIMEOUT_S)
                s.connect((address, port))
        except socket.timeout:
            return {"ok": False, "error": "ETIMEDOUT", "detail": f"no answer within {CONNECT_TIMEOUT_S:.1f} s"}
        except OSError as exc:
            return {"ok": False, "error": errno.errorcode.get(exc.errno or 0, str(exc.errno)), "detail": exc.strerror or str(exc)}
        return {"ok": True, "connect_ms": round((time.monotonic() - start) * 1000, 1)}

    return ctx.fact(f"net.connect.{address}.{port}", lambda: ctx.host.observe("tcp_connect", [address, port], connect))


def reach(ctx: ProbeContext, host: str, port: int) -> dict[str, Any]:
    """Resolve ``host`` (unless an address) and connect to its first address."""
    names = resolve(ctx, host)
    if "error" in names or not names.get("addresses"):
        return {"ok": False, "error": names.get("error", "EAI_NODATA"), "detail": f"{host} does not resolve: {names.get('detail', 'no address')}"}
    address = names["addresses"][0]
    return tcp_connect(ctx, address, port) | {"address": address}


# ---- listening sockets and port conflicts ------------------------------------------------------

def nginx_config_files(ctx: ProbeContext) -> list[str]:
    """The config files of the running nginx masters (discovery read them from each one's
    ``-p``/``-c``), else /etc/nginx/nginx.conf and the files its ``include`` directives
    name, at most 200."""
    running = [f for s in ctx.discovery().services if s.kind == "nginx" for f in s.config_files]
    if running:
        return list(dict.fromkeys(running))
    seen: list[str] = []
    queue = ["/etc/nginx/nginx.conf"]
    while queue and len(seen) < 200:
        path = queue.pop(0)
        if path in seen:
            continue
        try:
            text = ctx.host.read_text(path, 1 << 20)
        except OSError:
            continue
        seen.append(path)
        base = os.path.dirname(path)
        for pattern in parse_nginx_includes(text):
            if not pattern.startswith("/"):
                base_dir = base if os.path.basename(base) != "" else "/etc/nginx"
                pattern = os.path.join(base_dir, pattern)
            queue += ctx.host.glob(pattern) if any(c in pattern for c in "*?[") else [pattern]
    return seen


def _listeners_on(sockets: list[TcpSocket], host: str, port: int) -> list[TcpSocket]:
    wild = host in ("*", "0.0.0.0", "::", "")
    return [s for s in sockets if s.state == "LISTEN" and s.local_port == port
            and (wild or s.local_ip in (host, "0.0.0.0", "::") or (is_local(host) and is_local(s.local_ip)))]


class NetLogErrorsProbe(Probe):
    """Bind failures (EADDRINUSE) and EADDRNOTAVAIL in the tails of the app's and services' logs."""

    name = "net.log_errors"
    findings = ("net.bind_failed", "net.addr_not_available")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        read, hits = log_hits(ctx)
        if not read:
            yield from (unknown(f, "no app or service log could be read (give the logs in the profile)") for f in self.findings)
            return
        for fid in self.findings:
            items = [h for h in hits if h["finding"] == fid]
            if items:
                top = items[0]
                yield present(fid, f"{sum(h['count'] for h in items)} line(s), e.g. {top['file']}: {top['example']}", hits=items[:5])
            else:
                yield absent(fid, f"not in the tails of {len(read)} log(s)", logs=read)


def log_hits(ctx: ProbeContext) -> tuple[list[str], list[dict[str, Any]]]:
    """(logs read, recent hits of the network signatures), once per run."""

    def compute() -> tuple[list[str], list[dict[str, Any]]]:
        from prodx.probes.logs import TAIL_BYTES, _recent, app_logs
        from prodx.scanners.logscan import Matcher, Signature, scan_tail

        mine = NetLogErrorsProbe.findings
        sigs = [Signature(id=s["id"], finding=s["finding"], pattern=s["pattern"], description=s["description"],
                          ignore_case=bool(s.get("ignore_case", False)), examples=tuple(s.get("examples", ())))
                for s in ctx.kb.signatures if s["finding"] in mine]
        if not sigs:
            return [], []
        matcher = Matcher(sigs)
        paths = list(app_logs(ctx))
        for pattern in ctx.kb.locations["service_logs"]:
            paths += [p for p in ctx.host.glob(pattern) if p not in paths]
        now = ctx.host.now()
        read, hits = [], []
        for path in paths:
            if not ctx.host.exists(path):
                continue
            fs = scan_tail(ctx.host.real_path(path), matcher, tail_bytes=TAIL_BYTES)
            if fs.error:
                continue
            read.append(path)
            for h in fs.sorted_hits():
                if _recent(h.last_ts, now):
                    hits.append(h.to_json() | {"file": path})
        hits.sort(key=lambda h: -h["count"])
        return read, hits

    return ctx.fact("net.log_hits", compute)


class NetListenersProbe(Probe):
    """Do the expected services listen, and is a port they need held by someone else?"""

    name = "net.listeners"
    findings = ("net.service_not_listening", "net.port_conflict")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        try:
            sockets = tcp_sockets(ctx)
        except OSError as exc:
            yield from (unknown(fid, f"cannot read /proc/net/tcp ({exc.strerror or exc})") for fid in self.findings)
            return
        owners = socket_owners(ctx)
        procs = ctx.processes()
        partial = (f"; {len(owners.denied)} process(es) could not be read (needs root to read other users' "
                   "/proc/PID/fd)") if owners.denied else ""
        yield from self._not_listening(ctx, sockets, owners, procs, partial)
        yield from self._conflicts(ctx, sockets, owners, partial)

    @staticmethod
    def _not_listening(ctx: ProbeContext, sockets: list[TcpSocket], owners: SocketOwners,
                       procs: list[ProcessInfo], partial: str) -> Iterable[Finding]:
        fid = "net.service_not_listening"
        services = ctx.target.services
        if not services:
            yield unknown(fid, "no expected services known: list them in the profile ([app] services)")
            return
        tcp_by_inode = {s.inode: s for s in sockets if s.state == "LISTEN" and s.inode}
        unix = dict(unix_listeners(ctx))
        # Servers in a network namespace of their own listen there (socket inodes are global).
        for _ns, proc in app_netns(ctx):
            tcp_by_inode |= {s.inode: s for s in _netns_sockets(ctx, proc.pid) if s.state == "LISTEN" and s.inode}
            try:
                unix |= parse_proc_net_unix_listening(ctx.host.read_text(f"/proc/{proc.pid}/net/unix", 64 << 20))
            except OSError:
                pass
        silent, listening, undecided = [], {}, []
        for service in services:
            running = [p for p in procs if name_matches(p, service)]
            if not running:
                if any(service.startswith(s) or s.startswith(service) for s in _SERVERS):
                    silent.append({"service": service, "running": False})
                continue
            pids = {p.pid for p in running}
            ports = sorted({f"{s.local_ip}:{s.local_port}" for inode, s in tcp_by_inode.items()
                            if any(h.pid in pids for h in owners.by_inode.get(inode, []))})
            paths = sorted({unix[i] for i in unix if any(h.pid in pids for h in owners.by_inode.get(i, []))})
            if ports or paths:
                listening[service] = ports + paths
            elif pids & set(owners.denied):
                undecided.append(service)
            elif any(name_matches(p, s) for p in running for s in _SERVERS):
                silent.append({"service": service, "running": True, "pids": sorted(pids)[:10]})
        if silent:
            yield present(
                fid,
                "; ".join(f"{s['service']} {'runs but ' if s['running'] else 'is not running and '}holds no listening socket"
                          for s in silent),
                services=silent, listening=listening,
            )
        elif undecided:
            yield unknown(fid, f"cannot see the sockets of {', '.join(undecided)}: needs root to read other users' /proc/PID/fd")
        else:
            yield absent(fid, "every expected server listens: " + "; ".join(f"{k} on {', '.join(v)}" for k, v in listening.items()),
                         listening=listening)

    def _conflicts(self, ctx: ProbeContext, sockets: list[TcpSocket], owners: SocketOwners, partial: str) -> Iterable[Finding]:
        fid = "net.port_conflict"
        wanted: list[dict[str, Any]] = []  # {"host", "port", "by": [process names allowed], "why"}
        for path in nginx_config_files(ctx):
            try:
                ports = parse_nginx_listen(ctx.host.read_text(path, 1 << 20))
            except OSError:
                continue
            wanted += [{"host": h, "port": p, "by": ["nginx"], "why": f"listen in {path}"} for h, p in ports]
        _read, hits = log_hits(ctx)
        allowed = list(ctx.target.services)
        for h in hits:
            if h["finding"] != "net.bind_failed":
                continue
            where = parse_bind_failure(h["example"])
            if where:
                wanted.append({"host": where[0], "port": where[1], "by": allowed,
                               "why": f"bind failed in {h['file']}: {h['example'][:200]}"})
        for dep in ctx.target.dependencies:
            if dep.kind in _DB_PROCESSES:
                host, port = dep.address
                if is_local(host):
                    wanted.append({"host": host, "port": port, "by": list(_DB_PROCESSES[dep.kind]),
                                   "why": f"dependency {dep.name} ({dep.kind})"})
        if not wanted:
            yield unknown(fid, "no port to check: no nginx config, no local database dependency in the profile, "
                               "no bind failure in the logs")
            return
        conflicts, unsure = [], []
        for want in wanted:
            for s in _listeners_on(sockets, want["host"], want["port"]):
                holders = owners.by_inode.get(s.inode, [])
                if not holders:
                    if owners.denied:
                        unsure.append(want)
                    continue
                strangers = [p for p in holders if not any(name_matches(p, b) for b in want["by"])]
                if strangers and want["by"]:
                    conflicts.append({"port": want["port"], "address": want["host"], "wanted_by": want["by"],
                                      "why": want["why"], "holders": [_describe(p) for p in strangers]})
                    break
        checked = sorted({f"{w['host']}:{w['port']}" for w in wanted})
        if conflicts:
            yield present(
                fid,
                "; ".join(f"port {c['port']} ({c['why']}) is held by "
                          + ", ".join(f"{h['name']} (pid {h['pid']})" for h in c["holders"]) for c in conflicts),
                conflicts=conflicts,
            )
        elif unsure:
            yield unknown(fid, f"cannot tell who holds {', '.join(str(w['port']) for w in unsure)}{partial}")
        else:
            yield absent(fid, f"no wanted port is held by another process ({', '.join(checked)})", checked=checked)


# ---- reachability and DNS ----------------------------------------------------------------------

class NetReachProbe(Probe):
    """Can each dependency of the profile be reached over TCP?"""

    name = "net.reach"
    findings = ("net.dependency_unreachable",)
    cost = 1.0
    deadline_s = 2.5

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        fid = self.findings[0]
        deps = ctx.target.dependencies
        if not deps:
            yield unknown(fid, "no dependencies known: list them in the profile ([[dependency]] tcp or url)")
            return
        results: dict[str, dict[str, Any]] = {}

        def check(dep: Any) -> None:
            host, port = dep.address
            results[dep.name] = reach(ctx, host, port) | {"name": dep.name, "kind": dep.kind, "host": host, "port": port}

        threads = [threading.Thread(target=check, args=(d,), daemon=True) for d in deps]
        for t in threads:
            t.start()
        end = time.monotonic() + RESOLVE_TIMEOUT_S + CONNECT_TIMEOUT_S + 0.2
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        items = [results[d.name] for d in deps if d.name in results]
        bad = [r for r in items if not r["ok"]]
        if bad:
            yield present(fid, "; ".join(f"{r['name']} ({r['host']}:{r['port']}): {r['error']}" for r in bad), dependencies=items)
        elif len(items) < len(deps):
            yield unknown(fid, "some dependencies gave no answer in time", dependencies=items)
        else:
            yield absent(fid, "every dependency accepts TCP connections: "
                         + ", ".join(f"{r['name']} {r['connect_ms']} ms" for r in items), dependencies=items)


def _dns_query(server: str, name: str) -> dict[str, Any]:
    """One UDP DNS query (SOA of ``name``): ``{"rcode": n}`` for any answer, else the error.
    Any rcode, NXDOMAIN included, shows the server works."""
    tid = random.randrange(1 << 16)
    qname = b"".join(bytes([len(p)]) + p.encode("idna") for p in name.strip(".").split(".") if p) + b"\0"
    packet = struct.pack("!HHHHHH", tid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 6, 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(RESOLVE_TIMEOUT_S)
            s.connect((server, 53))
            s.send(packet)
            deadline = time.monotonic() + RESOLVE_TIMEOUT_S
            while time.monotonic() < deadline:
                data = s.recv(4096)
                if len(data) >= 4 and struct.unpack("!H", data[:2])[0] == tid:
                    return {"rcode": data[3] & 0x0F}
    except socket.timeout:
        pass
    except OSError as exc:
        return {"error": errno.errorcode.get(exc.errno or 0, str(exc.errno)), "detail": exc.strerror or str(exc)}
    return {"error": "timeout", "detail": f"no answer within {RESOLVE_TIMEOUT_S:.1f} s"}


#: DNS rcodes that mean the server itself failed (SERVFAIL, REFUSED), not the name.
_BAD_RCODES = {2: "SERVFAIL", 5: "REFUSED"}


class NetDnsProbe(Probe):
    """Do the names the app uses resolve, and do the configured nameservers answer?"""

    name = "net.dns"
    findings = ("net.dns_failure",)
    cost = 1.0
    deadline_s = 2.5

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        fid = self.findings[0]
        names = []
        for check in ctx.target.http:
            names.append(urlsplit(check.url).hostname or "")
        names += [d.address[0] for d in ctx.target.dependencies]
        names = [n for n in dict.fromkeys(names) if n and not _is_ip(n) and not is_local(n)]
        try:
            host_text = ctx.host.read_text("/etc/resolv.conf")
            conf = parse_resolv_conf(host_text)
        except OSError:
            host_text, conf = "", None
        servers = list(conf.nameservers[:3]) if conf else []
        probe_name = conf.search[0] if conf and conf.search else "."
        apps = _app_resolvers(ctx, host_text)
        app_servers = [s for a in apps for s in a["asked"] if s not in servers]
        if not names and not servers and not app_servers:
            yield unknown(fid, "no names to resolve (no URLs or dependencies in the profile) and no nameserver in /etc/resolv.conf")
            return
        results: dict[str, Any] = {}

        def lookup(n: str) -> None:
            results[n] = resolve(ctx, n)

        def ask(server: str) -> None:
            results[f"@{server}"] = ctx.host.observe("dns_query", [server, probe_name], lambda: _dns_query(server, probe_name))

        threads = [threading.Thread(target=lookup, args=(n,), daemon=True) for n in names]
        threads += [threading.Thread(target=ask, args=(s,), daemon=True) for s in [*servers, *app_servers]]
        for t in threads:
            t.start()
        end = time.monotonic() + RESOLVE_TIMEOUT_S + 0.3
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        failed_names = {n: results[n] for n in names if n in results and "error" in results[n]}
        server_answers = {s: results.get(f"@{s}", {"error": "timeout"}) for s in servers}
        dead = {s: r for s, r in server_answers.items() if _dead(r)}
        evidence = {"names": {n: results.get(n) for n in names}, "nameservers": server_answers, "asked_for": probe_name}
        problems = [f"{n}: {r['error']} ({r.get('detail', '')})" for n, r in failed_names.items()]
        if servers and len(dead) == len(servers):
            problems.append("no nameserver answers: " + ", ".join(f"{s} {_why(r)}" for s, r in dead.items()))
        for a in apps:
            a["answers"] = {s: results.get(f"@{s}", {"error": "timeout"}) for s in a["asked"]}
            if a["asked"] and all(_dead(r) for r in a["answers"].values()):
                problems.append(f"no nameserver of the resolv.conf {a['who']} uses answers: "
                                + ", ".join(f"{s} {_why(r)}" for s, r in a["answers"].items()))
        if apps:
            evidence["app_resolvers"] = apps
        if problems:
            yield present(fid, "; ".join(problems), **evidence)
        elif len([n for n in names if n in results]) < len(names):
            yield unknown(fid, "some names gave no answer in time", **evidence)
        else:
            what = [f"{len(names)} name(s) resolve"] if names else []
            what += [f"{len(servers) - len(dead)} of {len(servers)} nameserver(s) answer"] if servers else []
            what += [f"the nameservers {a['who']} uses answer" for a in apps if a["asked"]]
            yield absent(fid, ", ".join(what), **evidence)


def _dead(answer: dict[str, Any]) -> bool:
    return "error" in answer or answer.get("rcode") in _BAD_RCODES


def _why(answer: dict[str, Any]) -> str:
    return answer.get("error") or _BAD_RCODES[answer["rcode"]]


def _app_resolvers(ctx: ProbeContext, host_text: str) -> list[dict[str, Any]]:
    """The resolver configs of the app's processes that differ from this host's
    /etc/resolv.conf (read through /proc/PID/root), with the nameservers to ask from here.
    Hazard: a loopback nameserver of another network namespace (Docker's 127.0.0.11) is not
    the one this host's loopback reaches, so it is listed but not asked."""
    out: list[dict[str, Any]] = []
    seen = {host_text}
    netns = {proc.pid for _ns, proc in app_netns(ctx)}
    for proc in app_processes(ctx):
        try:
            text = ctx.host.read_text(f"/proc/{proc.pid}/root/etc/resolv.conf")
        except OSError:
            continue
        if text in seen:
            continue
        seen.add(text)
        conf = parse_resolv_conf(text)
        own_net = proc.pid in netns
        asked = [s for s in conf.nameservers[:3] if not (own_net and _is_loopback(s))]
        out.append({"who": f"{proc.name} (pid {proc.pid})", "nameservers": list(conf.nameservers), "asked": asked})
    return out


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


# ---- kernel connection tables ------------------------------------------------------------------

def _read_int(ctx: ProbeContext, path: str) -> int:
    return int(ctx.host.read_text(path).split()[0])


def _port_use(where: str, sockets: list[TcpSocket], port_range: tuple[int, int]) -> dict[str, Any]:
    """Local ports of ``port_range`` in use per destination, and TIME_WAIT, in one namespace."""
    lo, hi = port_range
    outgoing = Counter((s.local_ip, s.remote_ip, s.remote_port) for s in sockets
                       if s.state not in ("LISTEN", "CLOSE") and lo <= s.local_port <= hi)
    tw = Counter((s.remote_ip, s.remote_port) for s in sockets if s.state == "TIME_WAIT")
    top = [{"local": k[0], "destination": f"{k[1]}:{k[2]}", "ports_in_use": n} for k, n in outgoing.most_common(3)]
    tw_top = [{"destination": f"{k[0]}:{k[1]}", "time_wait": n} for k, n in tw.most_common(3)]
    return {"where": where, "port_range": [lo, hi], "range_size": hi - lo + 1, "top_destinations": top,
            "worst": top[0]["ports_in_use"] if top else 0, "tw_total": sum(tw.values()), "tw_top": tw_top,
            "tw_worst": tw_top[0]["time_wait"] if tw_top else 0}


def _netns_sockets(ctx: ProbeContext, pid: int) -> list[TcpSocket]:
    """Every TCP socket of ``pid``'s network namespace (/proc/PID/net/tcp and tcp6)."""
    out: list[TcpSocket] = []
    for name in ("tcp", "tcp6"):
        try:
            out += parse_proc_net_tcp(ctx.host.read_text(f"/proc/{pid}/net/{name}", 16 << 20))
        except FileNotFoundError:
            continue
    return out


def _netns_port_range(ctx: ProbeContext, pid: int) -> tuple[int, int]:
    """ip_local_port_range inside ``pid``'s network namespace: /proc/sys shows the reader's
    namespace only, so nsenter reads it there (root only; reads, changes nothing)."""
    r = ctx.host.run(["nsenter", f"--net=/proc/{pid}/ns/net", "cat", "/proc/sys/net/ipv4/ip_local_port_range"], 1.0)
    if r.returncode != 0:
        raise OSError(f"nsenter could not read its ip_local_port_range: {(r.stderr or r.error or 'no answer').strip()[:200]}")
    return parse_port_range(r.stdout)


class NetTablesProbe(Probe):
    """Conntrack fill, ephemeral ports per destination, TIME_WAIT and listen-queue overflows."""

    name = "net.tables"
    findings = ("net.conntrack_full", "net.ephemeral_ports_exhausted", "net.time_wait_high", "net.listen_overflows")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        first_netstat = self._netstat(ctx)
        first_ct = self._ct_stat(ctx)
        # Without the socket table the ports are unknown; conntrack and the listen-queue
        # counters do not need it.
        try:
            sockets: list[TcpSocket] | None = tcp_sockets(ctx)
        except OSError as exc:
            sockets = None
            why = f"cannot read /proc/net/tcp ({exc.strerror or exc})"
            yield from (unknown(fid, why) for fid in ("net.ephemeral_ports_exhausted", "net.time_wait_high"))
        if sockets is not None:
            yield from self._ports(ctx, sockets)
        time.sleep(SAMPLE_GAP_S)
        yield from self._conntrack(ctx, first_ct, self._ct_stat(ctx))
        yield from self._overflows(sockets or [], first_netstat, self._netstat(ctx))

    @staticmethod
    def _netstat(ctx: ProbeContext) -> dict[str, int] | None:
        try:
            return parse_netstat(ctx.host.read_text("/proc/net/netstat"))
        except OSError:
            return None

    @staticmethod
    def _ct_stat(ctx: ProbeContext) -> dict[str, int] | None:
        try:
            return parse_conntrack_stat(ctx.host.read_text("/proc/net/stat/nf_conntrack"))
        except OSError:
            return None

    @staticmethod
    def _conntrack(ctx: ProbeContext, before: dict[str, int] | None, after: dict[str, int] | None) -> Iterable[Finding]:
        fid = "net.conntrack_full"
        try:
            count = _read_int(ctx, "/proc/sys/net/netfilter/nf_conntrack_count")
            limit = _read_int(ctx, "/proc/sys/net/netfilter/nf_conntrack_max")
        except FileNotFoundError:
            try:
                modules = ctx.host.read_text("/proc/modules")
            except OSError:
                yield unknown(fid, "cannot read /proc/sys/net/netfilter/nf_conntrack_count or /proc/modules")
                return
            if "nf_conntrack " in modules:
                yield unknown(fid, "nf_conntrack is loaded but its counters are not visible here (a container?)")
            else:
                yield absent(fid, "connection tracking is not loaded (no nf_conntrack): there is no table to fill")
            return
        except (OSError, ValueError, IndexError) as exc:
            yield unknown(fid, f"cannot read the conntrack counters: {exc}")
            return
        drops = {k: after[k] - before.get(k, 0) for k in ("drop", "early_drop", "insert_failed")
                 if before is not None and after is not None and k in after}
        since_boot = {k: after[k] for k in ("drop", "early_drop", "insert_failed") if after and k in after}
        evidence = {"count": count, "max": limit, "fill_pct": round(100 * count / limit, 1) if limit else None,
                    "drops_during_sample": drops, "drops_since_boot": since_boot}
        if limit and count >= FULL_FRACTION * limit:
            yield present(fid, f"conntrack table holds {count:,} of {limit:,} entries", **evidence)
        elif drops.get("early_drop", 0) > 0 or drops.get("drop", 0) > 0:
            yield present(fid, f"conntrack dropped packets while we watched ({drops}); {count:,} of {limit:,} entries", **evidence)
        else:
            hist = f"; since boot: {since_boot}" if any(since_boot.values()) else ""
            yield absent(fid, f"conntrack holds {count:,} of {limit:,} entries{hist}", **evidence)

    @staticmethod
    def _ports(ctx: ProbeContext, sockets: list[TcpSocket]) -> Iterable[Finding]:
        try:
            spaces = [_port_use("this host", sockets, parse_port_range(ctx.host.read_text("/proc/sys/net/ipv4/ip_local_port_range")))]
        except (OSError, ValueError) as exc:
            reason = f"cannot read /proc/sys/net/ipv4/ip_local_port_range: {exc}"
            yield unknown("net.ephemeral_ports_exhausted", reason)
            yield unknown("net.time_wait_high", reason)
            return
        unread = []
        for _ns, proc in app_netns(ctx):
            where = f"the network namespace of {proc.name} (pid {proc.pid})"
            try:
                spaces.append(_port_use(where, _netns_sockets(ctx, proc.pid), _netns_port_range(ctx, proc.pid)))
            except (OSError, ValueError) as exc:
                unread.append(f"{where}: {exc}")
        extra = {"unread_namespaces": unread} if unread else {}
        exhausted = [u for u in spaces if u["worst"] >= FULL_FRACTION * u["range_size"]]
        worst = max(exhausted or spaces, key=lambda u: u["worst"] / u["range_size"])
        evidence = {k: worst[k] for k in ("port_range", "range_size", "top_destinations")} | {
            "namespace": worst["where"], "namespaces": [u["where"] for u in spaces], **extra}
        if exhausted:
            top = worst["top_destinations"][0]
            yield present("net.ephemeral_ports_exhausted",
                          f"{worst['worst']:,} of {worst['range_size']:,} local ports in use toward {top['destination']}"
                          + ("" if worst["where"] == "this host" else f" in {worst['where']}"), **evidence)
        else:
            yield absent("net.ephemeral_ports_exhausted",
                         f"at most {worst['worst']:,} of {worst['range_size']:,} local ports in use toward one destination",
                         **evidence)
        high = [u for u in spaces if u["tw_worst"] >= TIME_WAIT_SHARE * u["range_size"] or u["tw_total"] >= TIME_WAIT_TOTAL]
        tw = max(high or spaces, key=lambda u: u["tw_worst"] / u["range_size"])
        tw_evidence = {"time_wait_total": tw["tw_total"], "top_destinations": tw["tw_top"], "range_size": tw["range_size"],
                       "namespace": tw["where"], **extra}
        if high:
            yield present("net.time_wait_high", f"{tw['tw_total']:,} sockets in TIME_WAIT, {tw['tw_worst']:,} toward "
                          f"{tw['tw_top'][0]['destination']}" + ("" if tw["where"] == "this host" else f" in {tw['where']}"),
                          **tw_evidence)
        else:
            yield absent("net.time_wait_high", f"{tw['tw_total']:,} sockets in TIME_WAIT", **tw_evidence)

    @staticmethod
    def _overflows(sockets: list[TcpSocket], before: dict[str, int] | None, after: dict[str, int] | None) -> Iterable[Finding]:
        fid = "net.listen_overflows"
        queued = [{"listen": f"{s.local_ip}:{s.local_port}", "queued": s.rx_queue}
                  for s in sockets if s.state == "LISTEN" and s.rx_queue]
        if before is None or after is None:
            yield unknown(fid, "cannot read /proc/net/netstat")
            return
        keys = ("TcpExt.ListenOverflows", "TcpExt.ListenDrops")
        if any(k not in after or k not in before for k in keys):
            yield unknown(fid, "/proc/net/netstat has no readable TcpExt.ListenOverflows and ListenDrops counters")
            return
        delta = {k: after[k] - before[k] for k in keys}
        since_boot = {k: after[k] for k in keys}
        evidence = {"during_sample": delta, "sample_s": SAMPLE_GAP_S, "since_boot": since_boot, "queued": queued}
        if any(delta.values()):
            what = f"{delta['TcpExt.ListenOverflows']} overflow(s) and {delta['TcpExt.ListenDrops']} drop(s) in {SAMPLE_GAP_S} s"
            if queued:
                what += "; connections waiting to be accepted on " + ", ".join(f"{q['listen']} ({q['queued']})" for q in queued)
            yield present(fid, what, **evidence)
        else:
            hist = (f" ({since_boot['TcpExt.ListenOverflows']:,} overflows since boot)"
                    if since_boot["TcpExt.ListenOverflows"] else "")
            yield absent(fid, f"no listen-queue overflow while we watched{hist}", **evidence)
