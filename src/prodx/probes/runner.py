"""Runs probes concurrently, each under its own deadline, and classifies how each ended.

A probe runs in a daemon thread. The runner waits for each until its deadline, then
abandons it: its findings so far are kept, the rest become ``unknown`` with the reason.
Calls that can block in the kernel live in forked children (``prodx.host.isolated``), so an
abandoned thread is at worst reading /proc and never keeps the report from printing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prodx.host.base import HostAccessDenied, NotCaptured
from prodx.model import Finding, FindingState, ProbeRun, ProbeStatus, unknown
from prodx.probes.base import Probe, ProbeContext

_STATE_RANK = {FindingState.PRESENT: 2, FindingState.ABSENT: 1, FindingState.UNKNOWN: 0}


@dataclass
class _Slot:
    probe: Probe
    findings: list[Finding] = field(default_factory=list)
    status: ProbeStatus | None = None
    detail: str = ""
    started: float = 0.0
    ended: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


def _drive(slot: _Slot, ctx: ProbeContext) -> None:
    probe = slot.probe
    slot.started = time.monotonic()
    try:
        for finding in probe.run(ctx):
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


def run_probes(
    probes: list[Probe], ctx: ProbeContext, deadline_s: float
) -> tuple[list[Finding], list[ProbeRun]]:
    """Run ``probes`` at once; return the merged findings (sorted by id) and each probe's run.

    The whole call returns within about ``deadline_s``. Findings a probe declared but did
    not assert are reported ``unknown`` with the reason, never left to look absent.
    """
    start = time.monotonic()
    slots: list[_Slot] = []
    runs: list[ProbeRun] = []
    extra: list[Finding] = []
    for probe in probes:
        if probe.writes and not ctx.write_test:
            runs.append(ProbeRun(probe.name, ProbeStatus.SKIPPED, 0.0, "turned off by --no-write-test"))
            extra += [unknown(f, "the write test was turned off (--no-write-test)") for f in probe.findings]
            continue
        if probe.needs_root and not ctx.host.is_root:
            reason = f"{probe.name} needs root"
            runs.append(ProbeRun(probe.name, ProbeStatus.UNPRIVILEGED, 0.0, reason))
            extra += [unknown(f, reason) for f in probe.findings]
            continue
        slot = _Slot(probe)
        threading.Thread(target=_drive, args=(slot, ctx), name=probe.name, daemon=True).start()
        slots.append(slot)
    for slot in slots:
        own_deadline = min(slot.probe.deadline_s, deadline_s)
        slot.done.wait(max(0.0, start + own_deadline - time.monotonic()))
        if not slot.done.is_set():
            slot.status = ProbeStatus.TIMEOUT
            slot.detail = f"abandoned after its {own_deadline:.1f} s deadline"
            slot.ended = time.monotonic()
    for slot in slots:
        status = slot.status or ProbeStatus.TIMEOUT
        kept = list(slot.findings)  # a copy: an abandoned thread may still append
        runs.append(ProbeRun(slot.probe.name, status, slot.ended - start, slot.detail))
        seen = {f.id for f in kept}
        if status is ProbeStatus.OK:
            reason = f"{slot.probe.name} did not assess it"
        else:
            reason = f"{slot.probe.name} ended {status.value}: {slot.detail}"
        kept += [unknown(f, reason) for f in slot.probe.findings if f not in seen]
        for f in kept:
            f.probe = f.probe or slot.probe.name
        extra += kept
    runs.sort(key=lambda r: r.name)
    return _merge(extra), runs
