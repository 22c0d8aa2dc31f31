"""One diagnosis, end to end: KB, profile, symptoms, probes, differential, next tests.

The CLI and the lab call ``diagnose``; renderers take the ``Diagnosis`` it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from prodx.engine.next_test import NextTest, next_tests
from prodx.engine.posterior import Differential, observed_states, rank
from prodx.engine.symptoms import Unmatched, match_symptoms
from prodx.host.base import Host
from prodx.kb.loader import KnowledgeBase, load_kb
from prodx.model import Finding, FindingState, ProbeRun
from prodx.probes.base import ProbeContext, Target
from prodx.profile import Profile, load_profile

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

    def finding(self, fid: str) -> Finding | None:
        return next((f for f in self.findings if f.id == fid), None)


def build_target(host: Host, profile: Profile, as_user: str) -> Target:
    """What to examine: the profile's app, or the defaults every web host has."""
    user_name = as_user or profile.user
    if not user_name:
        user_name = next((u for u in DEFAULT_USERS if host.user(u)), "")
    writable = list(profile.writable) or [d for d in DEFAULT_WRITABLE if host.exists(d)]
    return Target(
        name=profile.name,
        user=host.user(user_name) if user_name else None,
        user_name=user_name,
        writable=writable,
        logs=list(profile.logs),
        services=list(profile.services),
        writable_from_profile=bool(profile.writable),
        http=list(profile.http),
        dependencies=list(profile.dependencies),
        tls=list(profile.tls),
    )


def _probe_candidates(kb: KnowledgeBase, states: dict[str, FindingState]) -> list[str]:
    return [fid for fid in kb.findings if states.get(fid, FindingState.UNKNOWN) is FindingState.UNKNOWN]


def diagnose(options: DiagnoseOptions, host: Host | None = None, kb: KnowledgeBase | None = None) -> Diagnosis:
    """Run a whole diagnosis. Raises KBError or ProfileError on bad configuration."""
    from prodx.host.local import LocalHost
    from prodx.probes import all_probes
    from prodx.probes.runner import run_probes

    start = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    kb = kb or load_kb(options.kb_dirs)
    profile = load_profile(options.profile_path) if options.profile_path else Profile()
    host = host or LocalHost()
    symptom_findings, unmatched = match_symptoms(options.symptoms, kb)
    target = build_target(host, profile, options.as_user)
    probe_findings: list[Finding] = []
    runs: list[ProbeRun] = []
    if not options.no_probes:
        ctx = ProbeContext(host, target, kb, write_test=options.write_test)
        probe_findings, runs = run_probes(all_probes(), ctx, options.deadline_s)
    findings = sorted(probe_findings + symptom_findings, key=lambda f: f.id)
    states = {f.id: f.state for f in findings}
    differential = rank(kb, states)
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
    )
