"""The second pass: examine what the first pass's present findings name.

A log line says which folder could not be written, which host:port refused, which socket
the web server could not reach, which certificate a server could not load. The rules of
``kb/data/follow.yaml`` read those targets (``prodx.parsers.leads``); this module turns them
into targets for the same probes the first pass runs on a profile's:

    folder       storage.write_test in the nearest existing folder, storage.ownership from
                 the nearest folder the app's user owns (a folder recreated by root shows
                 below it), as the app's user
    endpoint     net.reach (TCP), and dep.databases when the rule or the port says what
                 listens there
    upstream     process.upstreams (does anything still serve the web server's backend)
    certificate  tls.certificates on the file; tls on the endpoint

What the first pass examined is not examined again. Reads, through the host: ``stat`` of the
named paths and their parents, the process table and open files (to tell whose log named a
folder). No lead, or none the first pass did not cover, plans nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from prodx.host.base import UserInfo
from prodx.model import Finding
from prodx.parsers.leads import Lead, find_leads
from prodx.probes.base import Probe, ProbeContext, Target
from prodx.profile import Dependency, TlsCheck

#: How far up from a named path the nearest existing folder (and the app's own) is looked for.
_MAX_CLIMB = 6
_SCHEMES = {"postgres": "postgres", "mysql": "mysql", "redis": "redis"}


@dataclass
class Step:
    """One probe of the second pass, its target, and the leads that made it."""

    probe: Probe
    ctx: ProbeContext
    leads: list[Lead] = field(default_factory=list)


def leads_of(findings: Iterable[Finding], ctx: ProbeContext) -> list[Lead]:
    """The leads named by the present probe findings (a person's symptoms name none)."""
    named = [(f.id, f.summary, f.evidence) for f in findings if f.present and not f.id.startswith("symptom.")]
    return find_leads(named, ctx.kb.follow["rules"], ctx.kb.follow["ports"])


def plan(findings: list[Finding], ctx: ProbeContext) -> list[Step]:
    """The second pass for ``findings`` (the first pass's, merged); empty when nothing new
    is named."""
    from prodx.probes import load_all

    leads = leads_of(findings, ctx)
    if not leads:
        return []
    probes = load_all()
    steps: list[Step] = []
    by_kind: dict[str, list[Lead]] = {}
    for lead in leads:
        by_kind.setdefault(lead.kind, []).append(lead)
    steps += _folders(ctx, by_kind.get("folder", []), probes)
    steps += _endpoints(ctx, by_kind.get("endpoint", []), probes)
    steps += _upstreams(ctx, by_kind.get("upstream", []), probes)
    steps += _certificates(ctx, by_kind.get("certificate", []) + by_kind.get("tls", []), probes)
    return steps


def annotate(findings: list[Finding], steps: list[Step]) -> None:
    """Say in each second-pass finding's evidence (and summary) which leads it followed."""
    by_probe = {s.probe.name: s.leads for s in steps}
    for f in findings:
        leads = by_probe.get(f.probe, [])
        if not leads:
            continue
        f.evidence["followed"] = [lead.to_json() for lead in leads]
        origins = ", ".join(dict.fromkeys(lead.origin for lead in leads))
        targets = ", ".join(dict.fromkeys(lead.value for lead in leads))
        note = f"second pass: followed {targets} named by {origins}"
        f.summary = f"{f.summary} ({note})" if f.summary else note


def _second(ctx: ProbeContext, leads: list[Lead], **fields: object) -> ProbeContext:
    base = Target(name=ctx.target.name, user=ctx.target.user, user_name=ctx.target.user_name,
                  user_source=ctx.target.user_source, second_pass=True, leads=list(leads))
    return ctx.derive(replace(base, **fields))


# ---- folders -----------------------------------------------------------------------------------

def nearest_dir(ctx: ProbeContext, path: str) -> str:
    """``path`` if it is a folder, else its nearest existing parent folder ("" if none is
    found within _MAX_CLIMB levels or only "/" is)."""
    probe = os.path.normpath(path)
    for _ in range(_MAX_CLIMB):
        if probe in ("/", ""):
            return ""
        try:
            if stat.S_ISDIR(ctx.host.stat(probe).st_mode):
                return probe
        except OSError:
            pass
        probe = os.path.dirname(probe)
    return ""


def owned_root(ctx: ProbeContext, directory: str, user: UserInfo) -> str:
    """The nearest folder at or above ``directory`` that ``user`` owns ("" if none within
    _MAX_CLIMB levels): where the app's own tree is, so a walk from it sees what was put there
    by someone else."""
    probe = directory
    for _ in range(_MAX_CLIMB):
        if probe in ("/", ""):
            return ""
        try:
            if ctx.host.stat(probe).st_uid == user.uid:
                return probe
        except OSError:
            return ""
        probe = os.path.dirname(probe)
    return ""


def _shared(ctx: ProbeContext, directory: str) -> bool:
    """A folder meant for several users to write (world-writable, e.g. a sticky sessions dir)."""
    try:
        return bool(ctx.host.stat(directory).st_mode & stat.S_IWOTH)
    except OSError:
        return False


def app_user(ctx: ProbeContext, lead: Lead) -> UserInfo | None:
    """Whose writes to test for a folder a log named: the user ``--as`` or the profile gave;
    else the app that wrote that log — the PHP-FPM pool whose error log it is, a (non-root)
    process holding it open, its (non-root) owner; else the run's app user."""
    target = ctx.target
    if target.user is not None and target.user_source in ("--as", "profile"):
        return target.user
    if lead.file:
        for pool in getattr(ctx.discovery(), "pools", []):
            if pool.error_log == lead.file and pool.user not in ("", "root"):
                found = ctx.host.user(pool.user)
                if found is not None:
                    return found
        from prodx.probes.openfiles import all_open_files

        files, _denied = all_open_files(ctx)
        for f, proc in files:
            if f.target == lead.file and proc.user not in ("", "root"):
                found = ctx.host.user(proc.user)
                if found is not None:
                    return found
        try:
            owner = ctx.host.stat(lead.file).st_uid
        except OSError:
            owner = 0
        if owner != 0:
            found = ctx.host.user(owner)
            if found is not None:
                return found
    return target.user


def _folders(ctx: ProbeContext, leads: list[Lead], probes: dict[str, type[Probe]]) -> list[Step]:
    tested = set(ctx.target.writable)
    writes: dict[str, tuple[UserInfo, list[Lead]]] = {}
    walks: dict[str, tuple[UserInfo, list[Lead]]] = {}
    for lead in leads:
        who = app_user(ctx, lead)
        directory = nearest_dir(ctx, lead.value) if who is not None else ""
        if who is None or not directory:
            continue
        root = owned_root(ctx, directory, who)
        # Only the app's own tree or a folder shared for writing: a line about a system file
        # the app failed to read would make the write test say nothing true.
        if not root and not _shared(ctx, directory):
            continue
        if directory not in tested:
            writes.setdefault(directory, (who, []))[1].append(lead)
        if root and root not in tested:
            walks.setdefault(root, (who, []))[1].append(lead)
    steps = []
    for name, group in (("storage.write_test", writes), ("storage.ownership", walks)):
        if not group:
            continue
        first = next(iter(group.values()))[0]
        used = [lead for _who, found in group.values() for lead in found]
        sub = _second(ctx, used, writable=list(group), user=first, user_name=first.name, writable_from_profile=True,
                      writable_users={d: who for d, (who, _found) in group.items()})
        steps.append(Step(probes[name](), sub, used))
    return steps


# ---- endpoints, upstreams, certificates ----------------------------------------------------------

def _examined_endpoints(ctx: ProbeContext) -> set[tuple[str, int]]:
    """What the first pass connected to already: the profile's dependencies and the local
    databases it found running (dep.databases examines those)."""
    known = {d.address for d in ctx.target.dependencies}
    for svc in ctx.discovery().services:
        if svc.role in ("database", "cache"):
            for listen in svc.ports:
                host, _, port = listen.rpartition(":")
                for local in ("127.0.0.1", "localhost", "::1", host.strip("[]")):
                    known.add((local, int(port)))
    return known


def _endpoints(ctx: ProbeContext, leads: list[Lead], probes: dict[str, type[Probe]]) -> list[Step]:
    known = _examined_endpoints(ctx)
    fresh = [lead for lead in leads if lead.address not in known]
    if not fresh:
        return []
    deps = []
    for lead in fresh:
        host, port = lead.address
        name = f"{lead.service or 'endpoint'} {lead.value} (named by {lead.origin})"
        if lead.service in _SCHEMES:
            deps.append(Dependency(name=name, url=f"{_SCHEMES[lead.service]}://{lead.value}"))
        else:
            deps.append(Dependency(name=name, tcp=f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"))
    sub = _second(ctx, fresh, dependencies=deps)
    steps = [Step(probes["net.reach"](), sub, fresh)]
    if any(lead.service for lead in fresh):
        steps.append(Step(probes["dep.databases"](), sub, [lead for lead in fresh if lead.service]))
    return steps


def _upstreams(ctx: ProbeContext, leads: list[Lead], probes: dict[str, type[Probe]]) -> list[Step]:
    from prodx.probes.upstreams import examined

    seen = examined(ctx)
    leads = [lead for lead in leads if lead.value not in seen]
    if not leads or "process.upstreams" not in probes:
        return []
    return [Step(probes["process.upstreams"](), _second(ctx, leads), leads)]


def _certificates(ctx: ProbeContext, leads: list[Lead], probes: dict[str, type[Probe]]) -> list[Step]:
    seen_files = {t.file for t in ctx.target.tls if t.file}
    seen_endpoints = {t.endpoint for t in ctx.target.tls if t.endpoint}
    checks, used = [], []
    for lead in leads:
        if lead.kind == "certificate" and lead.value not in seen_files:
            checks.append(TlsCheck(file=lead.value))
            used.append(lead)
        elif lead.kind == "tls" and lead.value not in seen_endpoints:
            host, _port = lead.address
            checks.append(TlsCheck(endpoint=lead.value, server_name=host))
            used.append(lead)
    if not checks:
        return []
    return [Step(probes["tls.certificates"](), _second(ctx, used, tls=checks), used)]
