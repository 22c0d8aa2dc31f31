"""One diagnosis, end to end: KB, profile, symptoms, probes, differential, next tests.

The CLI and the lab call ``diagnose``; renderers take the ``Diagnosis`` it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prodx.discovery import Discovery
from prodx.engine.alike import Resemblance, resemblance
from prodx.engine.next_test import NextTest, next_tests
from prodx.engine.posterior import Differential, observed_states, rank
from prodx.engine.symptoms import Unmatched, match_symptoms
from prodx.host.base import Host
from prodx.kb.loader import KnowledgeBase, load_kb
from prodx.model import Finding, FindingState, ProbeRun
from prodx.probes.base import ProbeContext, Target
from prodx.probes.mounts import Mount
from prodx.profile import Profile, ProfileError, load_profile

#: World-writable folders every web host uses; the write test's default when no profile.
DEFAULT_WRITABLE = ("/tmp", "/var/tmp", "/var/lib/php/sessions")
#: The unprivileged user whose writes are tested when neither --as nor a profile says.
DEFAULT_USERS = ("www-data", "apache", "nginx", "nobody")
DEFAULT_DEADLINE_S = 3.0


@dataclass
class DiagnoseOptions:
    profile_path: str = ""
    symptoms: list[str] = field(default_factory=list)
    no_probes: bool = False
    as_user: str = ""
    deadline_s: float = DEFAULT_DEADLINE_S
    kb_dirs: tuple[str, ...] = ()
    write_test: bool = True

    @classmethod
    def from_cli(cls, options: dict[str, Any]) -> DiagnoseOptions:
        """From the parsed options every diagnosing command takes (``cli.diagnosing_options``)."""
        return cls(
            profile_path=options["profile_path"],
            symptoms=list(options["symptoms"]),
            no_probes=options["no_probes"],
            as_user=options["as_user"],
            deadline_s=options["deadline_s"],
            kb_dirs=tuple(options["kb_dirs"]),
            write_test=not options["no_write_test"],
        )


@dataclass
class Diagnosis:
    host: str
    started_at: str
    duration_s: float
    kb: KnowledgeBase
    profile: Profile
    target: Target
    findings: list[Finding]
    differential: Differential
    next_tests: list[NextTest]
    probe_runs: list[ProbeRun]
    unmatched: list[Unmatched]
    #: Where each target value came from (profile, discovery, default), and what discovery saw.
    target_sources: dict[str, Any] = field(default_factory=dict)
    discovery: Discovery | None = None
    #: The findings the symptom reader took from the person's account, and what the account
    #: reads like (prodx.engine.alike); empty and None without an account.
    said: dict[str, FindingState] = field(default_factory=dict)
    alike: Resemblance | None = None

    def finding(self, fid: str) -> Finding | None:
        return next((f for f in self.findings if f.id == fid), None)


def build_target(host: Host, profile: Profile, as_user: str, found: Discovery | None = None) -> Target:
    """What to examine: the profile's app, discovery's findings for what it leaves empty, or
    the defaults every web host has."""
    return build_target_with_sources(host, profile, as_user, found)[0]


def build_target_with_sources(
    host: Host, profile: Profile, as_user: str, found: Discovery | None = None
) -> tuple[Target, dict[str, Any]]:
    """``build_target`` and where each value came from: ``--as``, the profile, discovery (with
    the file or process that told it) or the defaults."""
    found = found or Discovery()
    sources: dict[str, Any] = {}
    if as_user or profile.user:
        user_name = as_user or profile.user
        sources["user"] = "--as" if as_user else "profile"
    elif found.user[0] and host.user(found.user[0]):
        user_name = found.user[0]
        sources["user"] = f"discovery: {found.user[1]}"
    else:
        user_name = next((u for u in DEFAULT_USERS if host.user(u)), "")
        sources["user"] = f"default: the first of {', '.join(DEFAULT_USERS)} that exists" if user_name else ""
    if profile.writable:
        writable = list(profile.writable)
        sources["writable"] = {p: "profile" for p in writable}
    else:
        picked = dict(found.writable)
        picked.update({d: "default" for d in DEFAULT_WRITABLE if d not in picked and host.exists(d)})
        writable = list(picked)
        sources["writable"] = {p: w if w == "default" else f"discovery: {w}" for p, w in picked.items()}
    if profile.logs:
        logs = list(profile.logs)
        sources["logs"] = {p: "profile" for p in logs}
    else:
        logs = [p for p, _ in found.logs]
        sources["logs"] = {p: f"discovery: {w}" for p, w in found.logs}
    if profile.services:
        services = list(profile.services)
        sources["services"] = {s: "profile" for s in services}
    else:
        services = found.service_names
        sources["services"] = {s.name: f"discovery: {s.kind} pid {s.pid}" for s in reversed(found.services)}
        sources["services"].update({n: f"discovery: {why}" for n, why in found.supervised if n not in sources["services"]})
    target = Target(
        name=profile.name,
        user=host.user(user_name) if user_name else None,
        user_name=user_name,
        user_source=sources["user"].split(":", 1)[0],
        writable=writable,
        logs=logs,
        services=services,
        # Folders discovery read from the app's own config (session.save_path, a framework's
        # var/cache) are the app's as much as a profile's list is.
        writable_from_profile=bool(profile.writable) or bool(found.writable),
        services_from_profile=bool(profile.services) or bool(found.supervised),
        # Who writes each discovered folder, unless --as or the profile named one user for all.
        writable_users={} if (as_user or profile.user) else
        {p: u for p, name in found.writable_users.items() if p in writable and (u := host.user(name)) is not None},
        http=list(profile.http),
        dependencies=list(profile.dependencies),
        tls=list(profile.tls),
    )
    return target, sources


def merge_reported(measured: list[Finding], reported: list[Finding]) -> list[Finding]:
    """Every finding once, sorted by id: what a probe measured (present or absent) wins over
    what a person said of the same fact; what they said fills what the probes left unknown."""
    by_id = {f.id: f for f in measured}
    for f in reported:
        known = by_id.get(f.id)
        if known is None or known.state is FindingState.UNKNOWN:
            by_id[f.id] = f
    return sorted(by_id.values(), key=lambda f: f.id)


def _discover(host: Host) -> Discovery:
    from prodx.discovery import discover

    try:
        return discover(host)
    except Exception as exc:  # noqa: BLE001 - discovery is a convenience: the diagnosis goes on
        return Discovery(notes=[f"discovery failed: {type(exc).__name__}: {exc}"])


def _measure_mounts(host: Host) -> list[Mount] | None:
    """The relevant mounts with their statvfs; the hung ones are avoided from now on. None when
    the mount table cannot be read (the storage probe then says why)."""
    from prodx.host.base import CallOutcome
    from prodx.probes.mounts import measure_mounts

    try:
        mounts = measure_mounts(host)
    except OSError:
        return None
    host.avoid_mounts([m.mount_point for m in mounts if m.stats and m.stats.outcome is CallOutcome.HUNG])
    return mounts


def _probe_candidates(kb: KnowledgeBase, states: dict[str, FindingState]) -> list[str]:
    return [fid for fid in kb.findings if states.get(fid, FindingState.UNKNOWN) is FindingState.UNKNOWN]


def diagnose(options: DiagnoseOptions, host: Host | None = None, kb: KnowledgeBase | None = None) -> Diagnosis:
    """Run a whole diagnosis. Raises KBError or ProfileError on bad configuration."""
    from prodx.host.local import LocalHost, hung_paths
    from prodx.probes import all_probes
    from prodx.probes.runner import run_probes

    start = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    kb = kb or load_kb(options.kb_dirs)
    if options.profile_path and host is None and hung_paths([options.profile_path]):
        raise ProfileError(options.profile_path, None, "", "on a mount that does not answer (statvfs hung): "
                                                        "copy the profile to a local disk")
    profile = load_profile(options.profile_path) if options.profile_path else Profile()
    host = host or LocalHost()
    symptom_findings, unmatched = match_symptoms(options.symptoms, kb)
    said = {f.id: f.state for f in symptom_findings}
    alike = resemblance(kb.alike, options.symptoms, kb.lexicon)
    # Mounts first: one that does not answer statvfs is never touched again (discovery and
    # every probe get MountHung for its paths), so no thread of ours can block on it.
    mounts = None if options.no_probes else _measure_mounts(host)
    found = None if options.no_probes else _discover(host)
    target, sources = build_target_with_sources(host, profile, options.as_user, found)
    probe_findings: list[Finding] = []
    runs: list[ProbeRun] = []
    if not options.no_probes:
        ctx = ProbeContext(host, target, kb, write_test=options.write_test)
        ctx.seed("discovery", found)
        if mounts is not None:
            ctx.seed("mounts", mounts)
        probe_findings, runs = run_probes(all_probes(), ctx, options.deadline_s)
    findings = merge_reported(probe_findings, symptom_findings)
    states = {f.id: f.state for f in findings}
    differential = rank(kb, states, said=said, alike=alike)
    tests = next_tests(kb, observed_states(states), _probe_candidates(kb, states))
    return Diagnosis(
        host=host.hostname(),
        started_at=started_at,
        duration_s=time.monotonic() - start,
        kb=kb,
        profile=profile,
        target=target,
        findings=findings,
        differential=differential,
        next_tests=tests,
        probe_runs=runs,
        unmatched=unmatched,
        target_sources=sources,
        discovery=found,
        said=said,
        alike=alike,
    )
