"""The pure parts of the accuracy benchmark: scoring a diagnosis, the calibration table, the
Brier scores, loading the shared incident cases and printing the tables.

Reads nothing but what it is given (a diagnosis JSON document, a case YAML file); the runner
``bench/accuracy.py`` stages the lab scenarios and runs ``prodx diagnose``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The leader's probability bands of the calibration table: [low, high), the last one closed.
BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.0))
#: A wrong leader at or above this probability is a confident error (the issue allows none).
CONFIDENT_WRONG_P = 0.9
LIKELY_P = 0.5


@dataclass
class Outcome:
    """One scored diagnosis: a lab scenario (with or without its profile) or a shared case.

    ``accepted`` are the condition ids a fair judge accepts; empty means nothing can score
    (a case whose cause the KB does not name and that lists no alternates). ``skipped`` says
    why a run could not happen here (left out of the figures); ``error`` says why prodx gave
    no diagnosis (a crash or a bad exit: counted as a miss).
    """

    kind: str
    name: str
    variant: str
    accepted: tuple[str, ...]
    leader: str = ""
    probability: float = 0.0
    ranking: tuple[str, ...] = ()
    rank: int | None = None
    seconds: float | None = None
    error: str = ""
    skipped: str = ""
    #: Every reported hypothesis with its probability, "none-of-the-known" included.
    probabilities: dict[str, float] = field(default_factory=dict)
    #: The findings the diagnosis saw present (what to look at when it missed).
    present: tuple[str, ...] = ()

    @property
    def scored(self) -> bool:
        """Whether the row counts in the accuracy figures (it ran; a failed diagnosis is a miss)."""
        return not self.skipped

    @property
    def top1(self) -> bool:
        return self.rank == 1

    @property
    def top3(self) -> bool:
        return self.rank is not None and self.rank <= 3

    @property
    def confident_wrong(self) -> bool:
        return self.scored and not self.top1 and bool(self.leader) and self.probability >= CONFIDENT_WRONG_P

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(top1=self.top1, top3=self.top3, confident_wrong=self.confident_wrong)
        return out


NONE_ID = "none-of-the-known"


def score(doc: Mapping[str, Any], accepted: Sequence[str]) -> dict[str, Any]:
    """Leader, its probability, the ranking and the 1-based rank of the first accepted condition
    (None when no accepted one is in the differential) of a ``prodx.diagnosis/1`` document.

    "None of the known conditions" takes its place in the ranking by its probability: where it
    outranks the right condition, prodx did not name it; for a cause the KB does not know
    (``other``) it is the right answer.

    >>> doc = {"differential": [{"condition": "disk-full", "probability": 0.6},
    ...                         {"condition": "log-growth", "probability": 0.3}],
    ...        "none_of_the_known": 0.1}
    >>> s = score(doc, ["log-growth"])
    >>> s["leader"], s["probability"], s["rank"], s["ranking"]
    ('disk-full', 0.6, 2, ('disk-full', 'log-growth', 'none-of-the-known'))
    >>> score({"differential": [{"condition": "disk-full", "probability": 0.2}], "none_of_the_known": 0.7},
    ...       ["none-of-the-known"])["rank"]
    1
    >>> score({"differential": []}, ["x"])["rank"] is None
    True
    """
    rows = [(str(d["condition"]), float(d["probability"])) for d in doc.get("differential") or []]
    if doc.get("none_of_the_known") is not None:
        rows.append((NONE_ID, float(doc["none_of_the_known"])))
    rows.sort(key=lambda r: -r[1])  # stable: the report's order among equals
    ranking = tuple(cid for cid, _p in rows)
    rank = next((i for i, cid in enumerate(ranking, 1) if cid in accepted), None)
    probabilities = dict(rows)
    lead = rows[0] if rows else ("", 0.0)
    present = tuple(sorted(f["id"] for f in doc.get("findings") or () if f.get("state") == "present"))
    return {"leader": lead[0], "probability": lead[1],
            "ranking": ranking, "rank": rank, "probabilities": probabilities, "present": present}


def outcome(kind: str, name: str, variant: str, accepted: Sequence[str], doc: Mapping[str, Any] | None,
            *, seconds: float | None = None, error: str = "", skipped: str = "") -> Outcome:
    """An Outcome from a diagnosis document; without one, a miss (``error``) or a run that
    could not happen here (``skipped``)."""
    if skipped:
        return Outcome(kind, name, variant, tuple(accepted), seconds=seconds, skipped=skipped)
    if doc is None:
        return Outcome(kind, name, variant, tuple(accepted), seconds=seconds, error=error or "no diagnosis")
    return Outcome(kind, name, variant, tuple(accepted), seconds=seconds, error=error, **score(doc, accepted))


def band_of(p: float) -> int:
    """Index in BANDS of probability ``p``.

    >>> [band_of(p) for p in (0.0, 0.49, 0.5, 0.7, 0.89, 0.9, 1.0)]
    [0, 0, 1, 2, 2, 3, 3]
    """
    for i, (low, high) in enumerate(BANDS):
        if low <= p < high:
            return i
    return len(BANDS) - 1


@dataclass(frozen=True)
class Band:
    low: float
    high: float
    count: int
    correct: int
    mean_predicted: float | None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.count if self.count else None


def calibration(outcomes: Iterable[Outcome]) -> list[Band]:
    """Per probability band of the leader: how many runs, how many led correctly, the mean
    predicted probability. Rows without a diagnosis (skipped or failed) predict nothing and are
    left out; an empty band has count 0.

    >>> rows = [Outcome("lab", "a", "", ("x",), "x", 0.95, rank=1),
    ...         Outcome("lab", "b", "", ("x",), "y", 0.92, rank=2),
    ...         Outcome("lab", "c", "", ("x",), "x", 0.6, rank=1)]
    >>> [(b.low, b.count, b.correct) for b in calibration(rows)]
    [(0.0, 0, 0), (0.5, 1, 1), (0.7, 0, 0), (0.9, 2, 1)]
    """
    groups: list[list[Outcome]] = [[] for _ in BANDS]
    for o in outcomes:
        if o.scored and not o.error:
            groups[band_of(o.probability)].append(o)
    return [Band(low, high, len(g), sum(o.top1 for o in g),
                 statistics.fmean(o.probability for o in g) if g else None)
            for (low, high), g in zip(BANDS, groups)]


def brier_leader(outcomes: Iterable[Outcome]) -> float | None:
    """Mean of (leader's probability − 1 if the leader is right else 0)² over the runs that gave
    a diagnosis; None without any.

    >>> round(brier_leader([Outcome("lab", "a", "", ("x",), "x", 0.9, rank=1),
    ...                     Outcome("lab", "b", "", ("x",), "y", 0.6, rank=2)]), 3)
    0.185
    """
    errors = [(o.probability - (1.0 if o.top1 else 0.0)) ** 2 for o in outcomes if o.scored and not o.error]
    return statistics.fmean(errors) if errors else None


def brier_multiclass(outcomes: Iterable[Outcome]) -> float | None:
    """Mean over runs of Σ_k (p_k − y_k)² over the whole differential as reported.

    The accepted conditions count as one class (any of them is the right answer); "none of the
    known" is a class; the mass of conditions the report leaves out (beyond its top rows) is
    one more class, so the figure is a slight lower bound. Ranges 0 (certain and right) to 2.

    >>> o = Outcome("lab", "a", "", ("x", "x2"), "x", 0.7, rank=1,
    ...             probabilities={"x": 0.7, "x2": 0.1, "y": 0.1, "none-of-the-known": 0.1})
    >>> round(brier_multiclass([o]), 3)
    0.06
    """
    scores = []
    for o in outcomes:
        if not o.scored or o.error:
            continue
        right = sum(p for cid, p in o.probabilities.items() if cid in o.accepted)
        wrong = [p for cid, p in o.probabilities.items() if cid not in o.accepted]
        rest = max(0.0, 1.0 - right - sum(wrong))
        scores.append((1.0 - right) ** 2 + sum(p * p for p in wrong) + rest * rest)
    return statistics.fmean(scores) if scores else None


@dataclass(frozen=True)
class Summary:
    runs: int
    scored: int
    top1: int
    top3: int
    likely_right: int
    median_s: float | None
    confident_wrong: tuple[str, ...]
    failed: tuple[str, ...] = ()

    def pct(self, n: int) -> str:
        return f"{100.0 * n / self.scored:.1f} %" if self.scored else "n/a"


def summarize(outcomes: Sequence[Outcome]) -> Summary:
    """Accuracy over the scored rows, median wall time of the diagnoses, the confident errors.

    >>> s = summarize([Outcome("lab", "a", "p", ("x",), "x", 0.8, rank=1, seconds=1.0),
    ...                Outcome("lab", "b", "p", ("x",), "y", 0.95, rank=3, seconds=3.0),
    ...                Outcome("lab", "c", "p", ("x",), skipped="cannot run here"),
    ...                Outcome("lab", "d", "p", ("x",), error="exit 3", seconds=0.2)])
    >>> s.scored, s.top1, s.top3, s.likely_right, s.median_s, s.confident_wrong, s.failed
    (3, 1, 2, 1, 2.0, ('b (p)',), ('d (p)',))
    """
    scored = [o for o in outcomes if o.scored]
    times = [o.seconds for o in scored if o.seconds is not None and not o.error]
    return Summary(
        runs=len(outcomes), scored=len(scored),
        top1=sum(o.top1 for o in scored), top3=sum(o.top3 for o in scored),
        likely_right=sum(o.top1 and o.probability >= LIKELY_P for o in scored),
        median_s=statistics.median(times) if times else None,
        confident_wrong=tuple(f"{o.name} ({o.variant})" for o in scored if o.confident_wrong),
        failed=tuple(f"{o.name} ({o.variant})" for o in scored if o.error),
    )


# --- shared cases ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    title: str
    symptoms: tuple[str, ...]
    observations: tuple[str, ...]
    root_cause: str
    alternates: tuple[str, ...]
    difficulty: str

    @property
    def accepted(self) -> tuple[str, ...]:
        """The ids that score: the root cause ("none of the known conditions" for ``other``)
        and the acceptable alternates."""
        head = (NONE_ID,) if self.root_cause == "other" else (self.root_cause,)
        return head + tuple(a for a in self.alternates if a not in head)


def parse_case(data: Mapping[str, Any], fallback_id: str = "") -> Case:
    """A Case from one parsed case file.

    >>> c = parse_case({"id": "9", "symptoms": ["a"], "root_cause": "other",
    ...                 "acceptable_alternates": ["cpu-saturation"]})
    >>> c.accepted, c.observations
    (('none-of-the-known', 'cpu-saturation'), ())
    """
    return Case(
        id=str(data.get("id") or fallback_id),
        title=str(data.get("title", "")),
        symptoms=tuple(str(s) for s in data.get("symptoms") or ()),
        observations=tuple(str(s) for s in data.get("observations") or ()),
        root_cause=str(data.get("root_cause", "other")),
        alternates=tuple(str(a) for a in data.get("acceptable_alternates") or ()),
        difficulty=str(data.get("difficulty", "")),
    )


def load_cases(directory: Path) -> list[Case]:
    """Every ``*.yaml`` case in ``directory`` in name order; empty when there are none."""
    import yaml

    return [parse_case(yaml.safe_load(p.read_text(encoding="utf-8")) or {}, p.stem)
            for p in sorted(directory.glob("*.yaml"))]


def case_argv(case: Case, *, with_observations: bool = True) -> list[str]:
    """The ``prodx diagnose`` arguments for a case: no probes, each line one --symptom.

    >>> case_argv(parse_case({"id": "1", "symptoms": ["502"], "observations": ["disk full"]}))
    ['diagnose', '--no-probes', '--json', '--symptom', '502', '--symptom', 'disk full']
    """
    lines = case.symptoms + (case.observations if with_observations else ())
    argv = ["diagnose", "--no-probes", "--json"]
    for line in lines:
        argv += ["--symptom", line]
    return argv


# --- printing -------------------------------------------------------------------------------

def _fmt_p(p: float | None) -> str:
    return "   -" if p is None else f"{p:.2f}"


def outcome_table(outcomes: Sequence[Outcome]) -> str:
    """One line per run: name, variant, verdict, leader and its probability, rank, seconds.

    >>> print(outcome_table([Outcome("lab", "disk-full", "profile", ("disk-full",), "disk-full", 0.97,
    ...                              rank=1, seconds=1.234)]))
    run        variant  ok    leader     P     rank  time_s  expected
    disk-full  profile  top1  disk-full  0.97  1     1.23    disk-full
    """
    header = ("run", "variant", "ok", "leader", "P", "rank", "time_s", "expected")
    rows = [header]
    for o in outcomes:
        if o.skipped:
            verdict = "skip"
        elif o.error:
            verdict = "ERROR"
        elif o.confident_wrong:
            verdict = "WRONG!"
        else:
            verdict = "top1" if o.top1 else "top3" if o.top3 else "miss"
        rows.append((o.name, o.variant, verdict, o.leader or "-",
                     "" if o.skipped or o.error else _fmt_p(o.probability),
                     "" if o.skipped or o.error else str(o.rank) if o.rank else ">" + str(len(o.ranking)),
                     "" if o.seconds is None else f"{o.seconds:.2f}",
                     ",".join(o.accepted) or "(nothing scores)"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    lines += [f"  {o.name} ({o.variant}) skipped: {o.skipped}" for o in outcomes if o.skipped]
    lines += [f"  {o.name} ({o.variant}) no diagnosis (counted as a miss): {o.error}" for o in outcomes if o.error]
    lines += [f"  {o.name} ({o.variant}) led by {o.leader}, then {', '.join(o.ranking[1:3])}; present: "
              + (", ".join(o.present) or "nothing")
              for o in outcomes if not o.skipped and not o.error and not o.top1]
    return "\n".join(lines)


def summary_lines(title: str, s: Summary, *, timed: bool, names: bool = True) -> list[str]:
    """The figures as printed lines; ``names=False`` counts the confident errors and failures
    without naming them (the held-out half: its misses are not to be read)."""
    lines = [f"{title}: {s.scored} scored of {s.runs} runs ({s.runs - s.scored} cannot run here)",
             f"  top-1 accuracy  {s.top1}/{s.scored}  {s.pct(s.top1)}",
             f"  top-3 accuracy  {s.top3}/{s.scored}  {s.pct(s.top3)}",
             f"  led right with P >= {LIKELY_P}  {s.likely_right}/{s.scored}  {s.pct(s.likely_right)}"]
    if timed:
        lines.append("  median time to diagnosis  " + ("n/a" if s.median_s is None else f"{s.median_s:.2f} s"))
    def listed(items: tuple[str, ...]) -> str:
        return (", ".join(items) if names else f"{len(items)} (names with --show-heldout)") if items else "none"

    if s.failed:
        lines.append(f"  prodx gave no diagnosis (counted as misses): {listed(s.failed)}")
    lines.append(f"  wrong leader with P >= {CONFIDENT_WRONG_P}: {listed(s.confident_wrong)}")
    return lines


def calibration_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """The calibration table and the Brier scores as printed lines."""
    lines = ["band of leader's P   runs  right  observed  mean predicted"]
    for b in calibration(outcomes):
        label = f"{b.low:.1f} - {b.high:.1f}" if b.low > 0 else f"< {b.high:.1f}"
        observed = "   -" if b.accuracy is None else f"{100 * b.accuracy:5.1f} %"
        lines.append(f"{label:<20} {b.count:>4}  {b.correct:>5}  {observed:>8}  {_fmt_p(b.mean_predicted):>14}")
    lead, multi = brier_leader(outcomes), brier_multiclass(outcomes)
    lines.append("Brier score, leader's P vs right (0/1): " + ("n/a" if lead is None else f"{lead:.3f}"))
    lines.append("Brier score, whole differential (0..2): " + ("n/a" if multi is None else f"{multi:.3f}"))
    return lines
