"""Zero-config discovery: the stack that runs on a host, and what a profile would say about it.

``discover(host)`` finds the running servers (``stack.find_services``), reads the configs
their masters were started with and the project folders they point at
(``frameworks.read_layout``, ``configs``), and proposes the app's user, writable folders,
logs, services, certificates, TLS listeners and backends, each with where it came from.
``profile_text`` writes that as a commented profile TOML (``prodx init``). An empty
``Discovery`` means no known server runs here; ``notes`` say what could not be read and why.
"""

from __future__ import annotations

import json
import os
import stat as statmod
from dataclasses import dataclass, field
from typing import Any

from prodx.discovery.frameworks import Layout, read_layout
from prodx.discovery.stack import Service, Stack, find_services, rules
from prodx.host.base import Host

__all__ = ["Discovery", "Service", "discover", "profile_text"]

#: Whose processes are the app's, best first: the pool workers run the app's code.
_APP_USER_KINDS = ("php-fpm", "gunicorn", "uwsgi", "node", "java", "apache", "nginx")


@dataclass
class Discovery:
    """What discovery proposes, each value as (value, where it came from)."""

    services: list[Service] = field(default_factory=list)
    user: tuple[str, str] = ("", "")
    writable: list[tuple[str, str]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    app_roots: list[tuple[str, str]] = field(default_factory=list)
    frameworks: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: From the servers' configs: certificate files (path, why), chain files, TLS listeners
    #: (host:port, server name, why) and the web servers' backends (unix:/path or host:port, why).
    certificates: list[tuple[str, str]] = field(default_factory=list)
    chain_files: list[tuple[str, str]] = field(default_factory=list)
    tls_endpoints: list[tuple[str, str, str]] = field(default_factory=list)
    upstreams: list[tuple[str, str]] = field(default_factory=list)
    #: Programs a supervisor starts (process name, why): they should run, running or not.
    supervised: list[tuple[str, str]] = field(default_factory=list)
    #: Writable folder → the user who writes there; the PHP-FPM pools read (user, error log).
    writable_users: dict[str, str] = field(default_factory=dict)
    pools: list[Any] = field(default_factory=list)

    @property
    def service_names(self) -> list[str]:
        """The running servers' names, then the supervised programs' (running or not)."""
        return list(dict.fromkeys([*(s.name for s in self.services), *(n for n, _ in self.supervised)]))

    def to_json(self) -> dict[str, Any]:
        return {
            "services": [s.to_json() for s in self.services],
            "user": {"value": self.user[0], "source": self.user[1]},
            "writable": [{"path": p, "source": w} for p, w in self.writable],
            "logs": [{"path": p, "source": w} for p, w in self.logs],
            "app_roots": [{"path": p, "source": w} for p, w in self.app_roots],
            "frameworks": [{"path": p, "framework": f} for p, f in self.frameworks],
            "certificates": [{"path": p, "source": w} for p, w in self.certificates],
            "tls_endpoints": [{"endpoint": e, "server_name": n, "source": w} for e, n, w in self.tls_endpoints],
            "upstreams": [{"target": t, "source": w} for t, w in self.upstreams],
            "writable_users": self.writable_users,
            "supervised": [{"name": n, "source": w} for n, w in self.supervised],
            "notes": self.notes,
        }


def _app_user(stack: Stack, layout: Layout) -> tuple[str, str]:
    for pool in layout.pools:
        if pool.user and pool.user != "root":
            return pool.user, f"user of PHP-FPM pool [{pool.name}] in {pool.source}"
    for kind in _APP_USER_KINDS:
        for svc in stack.of_kind(kind):
            users = [u for u in svc.worker_users if u != "root"] or ([svc.user] if svc.user not in ("", "root") else [])
            if users:
                return users[0], f"{svc.name} worker processes run as {users[0]} (pid {svc.pid})"
    return "", ""


def _is_dir(host: Host, path: str) -> bool:
    try:
        return statmod.S_ISDIR(host.stat(path).st_mode)
    except OSError:
        return False


def discover(host: Host) -> Discovery:
    """Everything discovery can tell about ``host`` without a profile; never raises for a
    host that hides things (the notes say what was hidden)."""
    stack = find_services(host)
    layout = read_layout(host, stack.services, rules()) if stack.services else Layout()
    found = Discovery(services=stack.services, notes=stack.notes + layout.notes)
    found.user = _app_user(stack, layout)
    found.writable = [(p, w) for p, w in layout.writable if _is_dir(host, p)]
    logs: list[tuple[str, str]] = []
    for svc in stack.services:
        logs += [(p, f"held open by {svc.name} (pid {svc.pid})") for p in svc.logs]
    logs += [(p, w) for p, w in layout.logs if host.exists(p)]
    seen: set[str] = set()
    found.logs = [(p, w) for p, w in logs if not (p in seen or seen.add(p))]
    found.app_roots = layout.app_roots
    found.frameworks = layout.frameworks
    found.certificates, found.chain_files = layout.certificates, layout.chain_files
    found.tls_endpoints, found.upstreams = layout.tls_endpoints, layout.upstreams
    found.writable_users, found.pools = layout.writable_users, layout.pools
    found.supervised = layout.supervised
    return found


def _toml_list(items: list[tuple[str, str]], indent: str = "    ") -> str:
    if not items:
        return "[]"
    lines = [f"{indent}{json.dumps(value)},  # {why}" for value, why in items]
    return "[\n" + "\n".join(lines) + "\n]"


def profile_text(found: Discovery, host_name: str) -> str:
    """A commented profile TOML of what ``found`` holds, for a person to review.

    Loads with ``prodx.profile.parse_profile``; every value says where it came from.
    """
    name = os.path.basename(found.app_roots[0][0]) if found.app_roots else host_name
    lines = [
        f"# prodx profile written by `prodx init` on {host_name}: what discovery found.",
        "# Review every line: remove what is not your app's, add what discovery could not see.",
    ]
    for svc in found.services:
        ports = f" listening on {', '.join(svc.ports)}" if svc.ports else ""
        lines.append(f"#   {svc.kind}: {svc.name} pid {svc.pid} as {svc.user or '?'}{ports}"
                     + (f", config {svc.config}" if svc.config else ""))
    for root, fw in found.frameworks:
        lines.append(f"#   {fw} project at {root}")
    for note in found.notes:
        lines.append(f"#   not seen: {note}")
    user, why = found.user
    lines += [
        "",
        "[app]",
        f"name = {json.dumps(name)}",
        (f"user = {json.dumps(user)}  # {why}" if user else "# user = \"www-data\"  # discovery found no unprivileged app process"),
        f"writable = {_toml_list(found.writable)}",
        f"logs = {_toml_list(found.logs)}",
        "services = " + _toml_list([(s.name, f"{s.kind}, pid {s.pid}") for s in _first_of_each(found.services)]),
        "",
    ]
    for svc in found.services:
        if svc.role in ("database", "cache"):
            for port in svc.ports[:1]:
                scheme = {"postgresql": "postgres", "mysql": "mysql", "redis": "redis"}.get(svc.kind)
                host, _, number = port.rpartition(":")
                if host in ("0.0.0.0", "[::]"):
                    host = "127.0.0.1"
                lines += [f"[[dependency]]  # {svc.kind} pid {svc.pid}", f"name = {json.dumps(svc.kind)}",
                          f"tcp = {json.dumps(f'{host}:{number}')}" if not scheme else f"url = {json.dumps(f'{scheme}://{host}:{number}')}",
                          ""]
    return "\n".join(lines)


def _first_of_each(services: list[Service]) -> list[Service]:
    seen: set[str] = set()
    return [s for s in services if not (s.name in seen or seen.add(s.name))]
