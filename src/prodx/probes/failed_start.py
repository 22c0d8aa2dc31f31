"""A stopped server whose last start failed on its own configuration.

A server that is down because its restart could not parse its config is not a crash: the
fix is the config, and starting it again fails the same way. For each server that should run
and does not — the profile's services with no live process, and (under systemd) the failed
units of known servers — reads:

- under systemd: ``systemctl show -p Result -p ActiveState -p SubState -p ExecMainStatus
  UNIT`` (``Result=exit-code``) and ``journalctl -u UNIT -n 60 --no-pager -o cat``, the
  lines after the last "Starting ..." (the last attempt), e.g.
  ``nginx: [emerg] unknown directive "servr_name" in /etc/nginx/sites-enabled/shop:3``;
- otherwise (or as well) the tails of the logs it may have written: the profile's logs, the
  well-known service logs (``kb/data/locations.yaml``) and discovery's, for the config-error
  and start signatures of that kind of server (``kb/data/signatures``: the ``service`` field).
  A config error with no start line after it is the last start's.

No server known to be stopped gives ``absent`` when the profile named the services or
systemd answered, ``unknown`` otherwise (without them a stopped server is invisible).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.processes import _table_or_reason, service_key, service_processes

_TAIL_BYTES = 256 * 1024
#: A config error older than this is history, not the last start of today's outage.
RECENT_S = 24 * 3600
_FINDING = "change.last_start_failed_config"
_STARTING = re.compile(r"^Start(ing|ed) ")


def kind_of(name: str, rules: list[dict[str, Any]]) -> str:
    """The kind of server (frameworks.yaml) a service or unit name stands for; "" if none.

    >>> from prodx.discovery.stack import rules
    >>> [kind_of(n, rules()["services"]) for n in ("nginx.service", "php8.2-fpm", "postgresql@15-main", "redis-server", "lab-worker")]
    ['nginx', 'php-fpm', 'postgresql', 'redis', '']
    """
    base = name.removesuffix(".service")
    key = service_key(base)
    for rule in rules:
        if re.search(rule["name"], key) or re.search(rule["name"], base) or base.startswith(rule["kind"]):
            return rule["kind"]
    return ""


def unit_of(name: str) -> str:
    """The systemd unit of a service name as the profile or the process table says it.

    >>> unit_of("php-fpm8.2"), unit_of("nginx"), unit_of("postgresql@15-main.service")
    ('php8.2-fpm.service', 'nginx.service', 'postgresql@15-main.service')
    """
    if name.endswith(".service"):
        return name
    m = re.fullmatch(r"php-fpm([0-9.]+)", name)
    return f"php{m.group(1)}-fpm.service" if m else f"{name}.service"


def last_start_error(lines: Iterable[str], errors: list[re.Pattern[str]], starts: list[re.Pattern[str]]) -> tuple[int, str] | None:
    """(index, line) of the last config-error line when no start line follows it; None
    otherwise.

    >>> err, start = [re.compile(r"\\[emerg\\] .* in /")], [re.compile("ready to accept")]
    >>> last_start_error(["x", "[emerg] unknown directive in /a:1", "y"], err, start)
    (1, '[emerg] unknown directive in /a:1')
    >>> last_start_error(["[emerg] unknown directive in /a:1", "ready to accept connections"], err, start) is None
    True
    """
    found: tuple[int, str] | None = None
    for i, line in enumerate(lines):
        if any(rx.search(line) for rx in errors):
            found = (i, line)
        elif found is not None and any(rx.search(line) for rx in starts):
            found = None
    return found


class FailedStartProbe(Probe):
    """Did a stopped server's last start fail on a configuration error?"""

    name = "changes.failed_start"
    findings = (_FINDING,)
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        from prodx.discovery.stack import rules

        service_rules = rules()["services"]
        systemd = self._systemd(ctx)
        stopped: dict[str, str] = {}  # name → why it should run
        if ctx.target.services_from_profile:
            table, why = _table_or_reason(ctx)
            if why:
                yield unknown(_FINDING, why)
                return
            for svc, procs in service_processes(ctx, table).items():
                if not procs:
                    stopped[svc] = "named in the profile's services"
        for unit in self._failed_units(ctx) if systemd else []:
            if kind_of(unit, service_rules) and not any(unit_of(s) == unit for s in stopped):
                stopped[unit] = "a failed systemd unit"
        if not stopped:
            if ctx.target.services_from_profile or systemd:
                yield absent(_FINDING, "no server that should run is stopped")
            else:
                yield unknown(_FINDING, "no stopped server is known: name the services in the profile "
                                        "(without systemd a stopped server leaves no process to discover)")
            return
        sigs = [s for s in ctx.kb.signatures if s.get("service")]
        hits, read, unread = [], [], []
        for name, why in stopped.items():
            kind = kind_of(name, service_rules)
            errors = [re.compile(s["pattern"]) for s in sigs if s["service"] == kind and s["finding"] == _FINDING]
            starts = [re.compile(s["pattern"]) for s in sigs if s["service"] == kind and s["finding"] != _FINDING]
            if not errors:
                unread.append(f"{name}: no config-error signature for {kind or 'this kind of server'}")
                continue
            found = self._journal(ctx, name, errors) if systemd else None
            if found is None:
                found = self._logs(ctx, errors, starts, read)
            else:
                read.append(f"journal of {unit_of(name)}")
            if found:
                hits.append({"service": name, "kind": kind, "why_expected": why, **found})
        if hits:
            yield present(_FINDING, "; ".join(f"{x['service']} is not running and its last start failed on its "
                                              f"configuration: {x['line'][:240]} ({x['source']})" for x in hits),
                          servers=hits)
        elif read:
            yield absent(_FINDING, f"stopped: {', '.join(stopped)}; no configuration error after their last start in "
                                   f"{', '.join(read[:6])}", stopped=list(stopped), read=read)
        else:
            yield unknown(_FINDING, f"stopped: {', '.join(stopped)}; neither a journal nor a log of theirs could be read"
                                    + (f" ({'; '.join(unread)})" if unread else ""))

    @staticmethod
    def _systemd(ctx: ProbeContext) -> bool:
        try:
            return ctx.host.read_text("/proc/1/comm").strip() == "systemd"
        except OSError:
            return False

    @staticmethod
    def _failed_units(ctx: ProbeContext) -> list[str]:
        r = ctx.host.run(["systemctl", "list-units", "--type=service", "--state=failed", "--plain", "--no-legend",
                          "--no-pager"], 1.0)
        return [line.split()[0] for line in r.stdout.splitlines() if line.split()] if r.ok else []

    @staticmethod
    def _journal(ctx: ProbeContext, name: str, errors: list[re.Pattern[str]]) -> dict[str, Any] | None:
        """The config error of the unit's last start attempt; {} when it failed otherwise or
        succeeded, None when systemd could not be asked."""
        unit = unit_of(name)
        show = ctx.host.run(["systemctl", "show", "-p", "Result", "-p", "ActiveState", "-p", "SubState",
                             "-p", "ExecMainStatus", unit], 1.0)
        journal = ctx.host.run(["journalctl", "-u", unit, "-n", "60", "--no-pager", "-o", "cat"], 1.0)
        if not show.ok or not journal.ok:
            return None
        props = dict(line.split("=", 1) for line in show.stdout.splitlines() if "=" in line)
        lines = journal.stdout.splitlines()
        last = max((i for i, line in enumerate(lines) if _STARTING.match(line)), default=-1)
        attempt = lines[last + 1 :] if last >= 0 else lines
        if props.get("Result", "success") == "success":
            return {}
        line = next((x for x in reversed(attempt) if any(rx.search(x) for rx in errors)), "")
        if not line:
            return {}
        from prodx.redact import redact

        return {"line": redact(line), "source": f"journalctl -u {unit}", "result": props.get("Result", ""),
                "exec_main_status": props.get("ExecMainStatus", "")}

    @staticmethod
    def _logs(ctx: ProbeContext, errors: list[re.Pattern[str]], starts: list[re.Pattern[str]],
              read: list[str]) -> dict[str, Any]:
        from prodx.redact import redact
        from prodx.scanners.timestamps import parse_ts

        paths = list(ctx.target.logs)
        for pattern in ctx.kb.locations["service_logs"]:
            paths += [p for p in ctx.host.glob(pattern) if p not in paths]
        paths += [p for p, _ in ctx.discovery().logs if p not in paths]
        now = ctx.host.now()
        for path in paths:
            try:
                tail = ctx.host.read_tail(path, _TAIL_BYTES)
            except OSError:
                continue
            if path not in read:
                read.append(path)
            lines = tail.decode("utf-8", "replace").splitlines()
            found = last_start_error(lines, errors, starts)
            if found is None:
                continue
            ts = parse_ts(found[1].encode())
            try:
                if ts and now - datetime.fromisoformat(ts).timestamp() > RECENT_S:
                    continue
            except ValueError:
                pass
            return {"line": redact(found[1]), "source": path, "at": ts or ""}
        return {}
