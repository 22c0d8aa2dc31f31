"""The probe runner: concurrency, deadlines, and how failures are classified."""

from __future__ import annotations

import threading
import time

import pytest

from prodx.host import LocalHost
from prodx.host.base import HostAccessDenied
from prodx.model import FindingState, ProbeStatus, absent, present, unknown
from prodx.probes.base import REGISTRY, Probe, ProbeContext, Target
from prodx.probes.runner import run_probes

RELEASE = threading.Event()


class _Hangs(Probe):
    findings = ("storage.full", "storage.low_space")
    deadline_s = 0.3

    def run(self, ctx):
        yield present("storage.full", "seen before the hang")
        RELEASE.wait(30)  # a probe stuck like a stat on a dead mount
        yield absent("storage.low_space")


class _Denied(Probe):
    findings = ("storage.deleted_open_large",)

    def run(self, ctx):
        raise HostAccessDenied("needs root to read /proc/1/fd")
        yield  # pragma: no cover


class _Undeclared(Probe):
    findings = ("storage.full",)

    def run(self, ctx):
        yield present("storage.readonly", "not declared")


class _Writes(Probe):
    findings = ("storage.write_enospc",)
    writes = True

    def run(self, ctx):
        yield absent("storage.write_enospc")


class _Quiet(Probe):
    findings = ("log.silent", "log.truncated_tail")

    def run(self, ctx):
        yield absent("log.silent", "checked")


class _PartlyBlind(Probe):
    findings = ("storage.deleted_open_large", "storage.full")

    def run(self, ctx):
        yield unknown("storage.deleted_open_large", "needs root to read other users' /proc/PID/fd")
        yield absent("storage.full", "checked")


@pytest.fixture()
def ctx(kb):
    return ProbeContext(LocalHost(), Target(), kb)


def _named(cls, name):
    probe = cls()
    probe.name = name
    return probe


def test_runner_hung_probe_is_abandoned_with_timeout_and_keeps_what_it_saw(ctx):
    start = time.monotonic()
    findings, runs = run_probes([_named(_Hangs, "test.hangs")], ctx, deadline_s=5.0)
    elapsed = time.monotonic() - start
    RELEASE.set()
    assert runs[0].status is ProbeStatus.TIMEOUT
    by_id = {f.id: f for f in findings}
    assert by_id["storage.full"].state is FindingState.PRESENT
    assert by_id["storage.low_space"].state is FindingState.UNKNOWN
    assert "timeout" in by_id["storage.low_space"].reason
    assert elapsed < 5.0  # abandoned at its own 0.3 s deadline, not the 30 s hang


def test_runner_access_denied_gives_unprivileged_and_unknown_findings(ctx):
    findings, runs = run_probes([_named(_Denied, "test.denied")], ctx, deadline_s=2.0)
    assert runs[0].status is ProbeStatus.UNPRIVILEGED
    assert findings[0].state is FindingState.UNKNOWN
    assert "needs root" in findings[0].reason


def test_runner_undeclared_finding_is_an_error_not_a_finding(ctx):
    findings, runs = run_probes([_named(_Undeclared, "test.undeclared")], ctx, deadline_s=2.0)
    assert runs[0].status is ProbeStatus.ERROR
    assert "undeclared" in runs[0].detail
    assert all(f.id != "storage.readonly" for f in findings)


def test_runner_write_test_off_skips_writing_probe_with_unknowns(kb):
    ctx = ProbeContext(LocalHost(), Target(), kb, write_test=False)
    findings, runs = run_probes([_named(_Writes, "test.writes")], ctx, deadline_s=2.0)
    assert runs[0].status is ProbeStatus.SKIPPED
    assert findings[0].state is FindingState.UNKNOWN
    assert "--no-write-test" in findings[0].reason


def test_runner_declared_but_unasserted_finding_is_unknown_not_absent(ctx):
    findings, _runs = run_probes([_named(_Quiet, "test.quiet")], ctx, deadline_s=2.0)
    states = {f.id: f.state for f in findings}
    assert states == {"log.silent": FindingState.ABSENT, "log.truncated_tail": FindingState.UNKNOWN}


def test_probe_registry_ignores_unnamed_test_probes():
    assert not any(name.startswith("test.") for name in REGISTRY)


@pytest.mark.parametrize("as_root", [False, True])
def test_runner_a_probe_that_ran_without_root_and_missed_findings_for_it_is_unprivileged(kb, as_root):
    # A non-root run said "34 ok" although probes had left findings unknown for want of root.
    host = LocalHost()
    host.is_root = as_root
    findings, runs = run_probes([_named(_PartlyBlind, "test.partly_blind")], ProbeContext(host, Target(), kb), 5.0)
    assert runs[0].status is (ProbeStatus.OK if as_root else ProbeStatus.UNPRIVILEGED)
    if not as_root:
        assert runs[0].detail.startswith("1 of 2 finding(s) unknown without root: needs root")
    assert {f.id: f.state for f in findings} == {"storage.deleted_open_large": FindingState.UNKNOWN,
                                                 "storage.full": FindingState.ABSENT}
