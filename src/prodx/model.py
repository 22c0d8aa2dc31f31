"""The catalogue of result types shared by probes, engine and renderers.

Closed sets are enums; their string values appear only at the JSON edge.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


#: A condition at or above this probability is "likely": exit code 1, red headline.
LIKELY_PROBABILITY = 0.5


class FindingState(str, enum.Enum):
    """Whether a finding holds. UNKNOWN is never silently treated as ABSENT."""

    PRESENT = "present"
    ABSENT = "absent"
    UNKNOWN = "unknown"


class ProbeStatus(str, enum.Enum):
    """How a probe ended, as the runner classified it."""

    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"
    SKIPPED = "skipped"
    UNPRIVILEGED = "unprivileged"


class ExitStatus(enum.IntEnum):
    """Process exit codes (SPEC §3)."""

    NOTHING_LIKELY = 0
    CONDITION_LIKELY = 1
    USAGE_ERROR = 2
    INTERNAL_ERROR = 3


@dataclass
class Finding:
    """One observable fact about the host.

    Attributes:
        id: stable dotted id, e.g. ``storage.full``.
        state: present, absent or unknown.
        summary: one line for a person, with the real numbers and paths.
        evidence: the measurements behind it (JSON-serialisable).
        probe: the probe (or ``symptom`` for text a person entered) that asserted it.
        reason: why the state is unknown, or a note on how it was decided.
    """

    id: str
    state: FindingState
    summary: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    probe: str = ""
    reason: str = ""

    @property
    def present(self) -> bool:
        return self.state is FindingState.PRESENT

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "summary": self.summary,
            "evidence": self.evidence,
            "probe": self.probe,
            "reason": self.reason,
        }


def present(fid: str, summary: str, **evidence: Any) -> Finding:
    """A present finding; the runner fills in ``probe``."""
    return Finding(fid, FindingState.PRESENT, summary, evidence)


def absent(fid: str, summary: str = "", **evidence: Any) -> Finding:
    """An absent finding: the probe looked and the fact does not hold."""
    return Finding(fid, FindingState.ABSENT, summary, evidence)


def unknown(fid: str, reason: str, **evidence: Any) -> Finding:
    """A finding the probe could not decide, with the reason a person can act on."""
    return Finding(fid, FindingState.UNKNOWN, "", evidence, reason=reason)


@dataclass
class ProbeRun:
    """What the runner records of one probe: the ``probes`` entry of the JSON report."""

    name: str
    status: ProbeStatus
    duration_s: float
    detail: str = ""
    #: Run in the second pass, on what the first pass's findings named (prodx.probes.follow).
    followed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "duration_s": round(self.duration_s, 3),
            "detail": self.detail,
            "pass": 2 if self.followed else 1,
        }
