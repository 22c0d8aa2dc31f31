"""Does anything still serve the backends the web servers hand requests to?

A web server that stays up while its app server died answers 502 on every dynamic page.
Reads the backends discovery found in the running web servers' configs (``fastcgi_pass
unix:/run/php/php8.2-fpm.sock;``, ``proxy_pass http://127.0.0.1:8000;``, Apache ``ProxyPass``
and ``SetHandler proxy:unix:...``) — in the second pass, the ones a log line named
("connect() to unix:/run/php/php8.2-fpm.sock failed (111: Connection refused)") — and
connects to each local one through ``host.observe``: ``unix_connect`` [path] or
``tcp_connect`` [address, port], answering ``{"ok": false, "error": "ECONNREFUSED"}``.

A backend that refuses, or whose socket file is gone, has no process serving it. Remote
backends are dependencies (net.reach), not processes of this host. No local backend known
leaves the finding unknown.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.network import CONNECT_TIMEOUT_S, is_local, tcp_connect

#: Errors that mean nothing listens: a stale socket or closed port, or no socket file at all.
_NOBODY = ("ECONNREFUSED", "ENOENT")
_MAX = 8


def unix_connect(path: str) -> dict[str, Any]:
    """``{"ok": true}`` or ``{"ok": false, "error": "ECONNREFUSED"|"ENOENT"|...}`` for a
    stream connect to the unix socket ``path``, bounded by CONNECT_TIMEOUT_S."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(CONNECT_TIMEOUT_S)
            s.connect(path)
    except socket.timeout:
        return {"ok": False, "error": "ETIMEDOUT", "detail": f"no answer within {CONNECT_TIMEOUT_S:.1f} s"}
    except OSError as exc:
        return {"ok": False, "error": errno.errorcode.get(exc.errno or 0, str(exc.errno)), "detail": exc.strerror or str(exc)}
    return {"ok": True}


def examined(ctx: ProbeContext) -> set[str]:
    """The backends already connected to in this run (shared by both passes)."""
    return ctx.fact("process.upstreams.examined", set)


class UpstreamsProbe(Probe):
    """Is a web server's local backend (PHP-FPM, gunicorn, a Node app) served by any process?"""

    name = "process.upstreams"
    findings = ("process.service_down",)
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        fid = self.findings[0]
        if ctx.target.second_pass:
            wanted = [(lead.value, f"named by {lead.origin}" + (f" in {lead.file}" if lead.file else ""))
                      for lead in ctx.target.leads if lead.kind == "upstream"]
        else:
            wanted = list(ctx.discovery().upstreams)
        seen = examined(ctx)
        local = [(t, why) for t, why in dict(wanted).items()
                 if (t.startswith("unix:") or is_local(t.rpartition(":")[0].strip("[]"))) and t not in seen][:_MAX]
        if not local:
            yield unknown(fid, "no local backend of a running web server is known (nginx *_pass, Apache ProxyPass)")
            return
        seen.update(t for t, _ in local)
        results: dict[str, dict[str, Any]] = {}
        failures: list[Exception] = []

        def check(target: str) -> None:
            try:
                if target.startswith("unix:"):
                    path = target[5:]
                    results[target] = ctx.host.observe("unix_connect", [path], lambda: unix_connect(path))
                else:
                    host, _, port = target.rpartition(":")
                    results[target] = tcp_connect(ctx, host.strip("[]"), int(port))
            except Exception as exc:  # noqa: BLE001 - re-raised below, for the runner to classify
                failures.append(exc)

        threads = [threading.Thread(target=check, args=(t,), daemon=True) for t, _ in local]
        for t in threads:
            t.start()
        end = time.monotonic() + CONNECT_TIMEOUT_S + 0.3
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        if failures and not results:
            raise failures[0]
        items = [{"backend": t, "why": why, **results[t]} for t, why in local if t in results]
        down = [i for i in items if not i["ok"] and i.get("error") in _NOBODY]
        if down:
            yield present(fid, "; ".join(f"nothing serves {d['backend']}, the backend of {d['why']}: {d['error']} "
                                         f"({d.get('detail', '')})" for d in down), backends=items)
        elif len(items) < len(local) or any(not i["ok"] for i in items):
            unsure = [i for i in items if not i["ok"]]
            yield unknown(fid, "; ".join(f"{i['backend']}: {i.get('error')}" for i in unsure)
                          or "some backends gave no answer in time", backends=items)
        else:
            yield absent(fid, "every local backend of the web servers accepts connections: "
                              + ", ".join(i["backend"] for i in items), backends=items)
