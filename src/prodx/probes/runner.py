"""Runs probes concurrently, each under its own deadline, and classifies how each ended.

A probe runs in a daemon thread. The runner waits for each until its deadline, then
abandons it: its findings so far are kept, the rest become ``unknown`` with the reason.
Calls that can block in the kernel live in forked children (``prodx.host.isolated``), so an
abandoned thread is at worst reading /proc and never keeps the report from printing.

Then, in what is left of the same deadline, a second pass (``prodx.probes.follow``) examines
what the first pass's present findings name: a folder a log says cannot be written, the
host:port that refused, a certificate file. Its probes run the same way and are abandoned the
same way; what it cannot decide adds nothing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prodx.host.base import HostAccessDenied, NotCaptured
from prodx.model import Finding, FindingState, ProbeRun, ProbeStatus, unknown
from prodx.probes.base import Probe, ProbeContext

#: How probes word an unknown that only root could have settled.
_PRIVILEGE = re.compile(r"needs root|run as root|permission denied|not permitted|\bEACCES\b", re.IGNORECASE)
_STATE_RANK = {FindingState.PRESENT: 2, FindingState.ABSENT: 1, FindingState.UNKNOWN: 0}
#: A second pass with less time left than this is not started.
_MIN_SECOND_PASS_S = 0.2


@dataclass
class _Slot:
    probe: Probe
    ctx: ProbeContext
    findings: list[Finding] = field(default_factory=list)
    status: ProbeStatus | None = None
    detail: str = ""
    started: float = 0.0
    ended: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


def _drive(slot: _Slot) -> None:
    probe = slot.probe
    slot.started = time.monotonic()
    try:
        for finding in probe.run(slot.ctx):
            if finding.id not in probe.findings:
                raise ValueError(f"probe {probe.name} asserted undeclared finding {finding.id}")
            finding.probe = probe.name
            slot.findings.append(finding)
        slot.status = ProbeStatus.OK
    except HostAccessDenied as exc:
        slot.status, slot.detail = ProbeStatus.UNPRIVILEGED, str(exc)
    except NotCaptured as exc:
        slot.status, slot.detail = ProbeStatus.SKIPPED, str(exc)
    except PermissionError as exc:
        slot.status = ProbeStatus.UNPRIVILEGED
        slot.detail = f"permission denied reading {exc.filename or 'the host'}"
    except Exception as exc:  # noqa: BLE001 - classified as the probe's error, the run goes on
        slot.status, slot.detail = ProbeStatus.ERROR, f"{type(exc).__name__}: {exc}"
    finally:
        slot.ended = time.monotonic()
        slot.done.set()


def _merge(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per id: present beats absent beats unknown; first seen wins a tie."""
    best: dict[str, Finding] = {}
    for f in findings:
        if f.id not in best or _STATE_RANK[f.state] > _STATE_RANK[best[f.id].state]:
            best[f.id] = f
    return [best[k] for k in sorted(best)]


def _run_pass(
    jobs: list[tuple[Probe, ProbeContext]], start: float, end: float, *, second: bool = False
) -> tuple[list[Finding], list[ProbeRun]]:
    """Run ``jobs`` at once from ``start``; each is abandoned at its own deadline or at
    ``end``, whichever comes first. Findings a probe declared but did not assert come back
    ``unknown`` with the reason."""
    slots: list[_Slot] = []
    runs: list[ProbeRun] = []
    extra: list[Finding] = []
    for probe, ctx in jobs:
        if probe.writes and not ctx.write_test:
            runs.append(ProbeRun(probe.name, ProbeStatus.SKIPPED, 0.0, "turned off by --no-write-test", second))
            extra += [unknown(f, "the write test was turned off (--no-write-test)") for f in probe.findings]
            continue
        if probe.needs_root and not ctx.host.is_root:
            reason = f"{probe.name} needs root"
            runs.append(ProbeRun(probe.name, ProbeStatus.UNPRIVILEGED, 0.0, reason, second))
            extra += [unknown(f, reason) for f in probe.findings]
            continue
        slot = _Slot(probe, ctx)
        threading.Thread(target=_drive, args=(slot,), name=probe.name, daemon=True).start()
        slots.append(slot)
    for slot in slots:
        own_end = min(start + slot.probe.deadline_s, end)
        slot.done.wait(max(0.0, own_end - time.monotonic()))
        if not slot.done.is_set():
            slot.status = ProbeStatus.TIMEOUT
            slot.detail = f"abandoned after its {own_end - start:.1f} s deadline"
            slot.ended = time.monotonic()
    for slot in slots:
        status, detail = slot.status or ProbeStatus.TIMEOUT, slot.detail
        kept = list(slot.findings)  # a copy: an abandoned thread may still append
        seen = {f.id for f in kept}
        if status is ProbeStatus.OK:
            reason = f"{slot.probe.name} did not assess it"
            short = [f for f in kept if f.state is FindingState.UNKNOWN and _PRIVILEGE.search(f.reason)]
            if short and not slot.ctx.host.is_root:
                # It ran, but some of what it looks at needs root: its status says so.
                status = ProbeStatus.UNPRIVILEGED
                detail = f"{len(short)} of {len(slot.probe.findings)} finding(s) unknown without root: {short[0].reason}"
        else:
            reason = f"{slot.probe.name} ended {status.value}: {slot.detail}"
        runs.append(ProbeRun(slot.probe.name, status, slot.ended - start, detail, second))
        kept += [unknown(f, reason) for f in slot.probe.findings if f not in seen]
        for f in kept:
            f.probe = f.probe or slot.probe.name
        extra += kept
    return extra, runs


def _plan_bounded(findings: list[Finding], ctx: ProbeContext, end: float) -> list:
    """The second pass's plan, made in a daemon thread abandoned at ``end``: planning stats the
    named paths, and a stat on a dead network mount never returns."""
    from prodx.probes.follow import plan

    box: list[list] = []

    def make() -> None:
        try:
            box.append(plan(findings, ctx))
        except Exception:  # noqa: BLE001 - a plan that cannot be made means no second pass
            box.append([])

    worker = threading.Thread(target=make, name="prodx-follow-plan", daemon=True)
    worker.start()
    worker.join(max(0.0, end - time.monotonic()))
    return box[0] if box else []


def run_probes(
    probes: list[Probe], ctx: ProbeContext, deadline_s: float, *, follow: bool = True
) -> tuple[list[Finding], list[ProbeRun]]:
    """Run ``probes`` at once, then (``follow``) the second pass on what their present
    findings name; return the merged findings (sorted by id) and each probe's run.

    The whole call returns within about ``deadline_s``: the second pass gets what the first
    left of it. Findings a probe declared but did not assert are reported ``unknown`` with
    the reason, never left to look absent; the second pass only adds what it decided.
    """
    start = time.monotonic()
    end = start + deadline_s
    found, runs = _run_pass([(p, ctx) for p in probes], start, end)
    merged = _merge(found)
    if follow and end - time.monotonic() >= _MIN_SECOND_PASS_S:
        from prodx.probes.follow import annotate

        steps = _plan_bounded(merged, ctx, end)
        if steps:
            more, more_runs = _run_pass([(s.probe, s.ctx) for s in steps], time.monotonic(), end, second=True)
            decided = [f for f in more if f.state is not FindingState.UNKNOWN]
            annotate(decided, steps)
            merged = _merge([*merged, *decided])
            runs += more_runs
    runs.sort(key=lambda r: (r.name, r.followed))
    return merged, runs
