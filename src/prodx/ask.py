"""``prodx ask``: the guided diagnosis, a conversation that re-ranks after every answer.

A ``Session`` holds what is known (the probes' findings and the symptoms), the answers a
person gave and the questions already asked. It picks the next question by expected
information gain per cost (``prodx.engine.next_test``) among findings a person can observe
(``how == "ask"``), or offers to re-run a probe whose findings are still unknown (it timed
out, or lacked time). Each answer re-ranks at once and says what moved and why. The session
is pure; ``run_ask`` is the thin terminal loop around it (reads stdin, writes stdout).
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prodx.engine.alike import Resemblance
from prodx.engine.next_test import NextTest, next_tests
from prodx.engine.likelihood import marginal, predictive
from prodx.engine.posterior import NONE_ID, Differential, observed_states, posterior, posterior_with_words, rank
from prodx.kb.loader import KnowledgeBase
from prodx.model import LIKELY_PROBABILITY, ExitStatus, Finding, FindingState, ProbeStatus

DEFAULT_CONFIDENCE = 0.8
#: Probe statuses whose unknown findings another run, with more time, might settle.
_RETRYABLE = (ProbeStatus.TIMEOUT, ProbeStatus.ERROR)


class Stop(str, enum.Enum):
    """Why a session ended."""

    CONFIDENT = "confident"
    NO_QUESTION = "no question is worth asking"
    MAX_QUESTIONS = "question limit reached"
    QUIT = "left by the user"


@dataclass(frozen=True)
class Move:
    """One condition's probability before and after an answer."""

    condition: str
    before: float
    after: float
    likelihood: float  # P(this answer | condition)


@dataclass(frozen=True)
class Change:
    """What one answer did to the differential."""

    finding: str
    state: FindingState
    leader_before: str
    leader_after: str
    moves: tuple[Move, ...]
    #: P(answer | leader before) / P(answer | any other hypothesis): how far the answer moved
    #: the odds of the leader before it (> 1 for it, < 1 against it, 1 for "don't know").
    leader_ratio: float


def parse_answer(text: str) -> FindingState | None | str:
    """A typed answer: a FindingState, ``"quit"``, or None when it is not understood.

    >>> parse_answer(" Y "), parse_answer("no"), parse_answer("?"), parse_answer("d")
    (<FindingState.PRESENT: 'present'>, <FindingState.ABSENT: 'absent'>, <FindingState.UNKNOWN: 'unknown'>, <FindingState.UNKNOWN: 'unknown'>)
    >>> parse_answer("q"), parse_answer("maybe")
    ('quit', None)
    """
    word = text.strip().lower()
    if word in ("y", "yes"):
        return FindingState.PRESENT
    if word in ("n", "no"):
        return FindingState.ABSENT
    if word in ("?", "d", "dk", "don't know", "dont know", "unknown"):
        return FindingState.UNKNOWN
    if word in ("q", "quit", "exit"):
        return "quit"
    return None


@dataclass
class Session:
    """The state of one guided diagnosis: findings, answers, questions asked.

    Args:
        kb: the knowledge base.
        findings: what the probes and the matched symptoms asserted.
        confidence: the leader's probability that ends the session.
        max_questions: at most this many questions (None: no limit).
        retryable_probes: probes whose unknown findings a re-run may settle (timed out);
            their findings are offered as "run the probe" tests.
        said, alike: the findings read from the person's account and what it reads like
            (prodx.engine.alike): the answers update both readings of the words.
    """

    kb: KnowledgeBase
    findings: list[Finding]
    confidence: float = DEFAULT_CONFIDENCE
    max_questions: int | None = None
    retryable_probes: frozenset[str] = frozenset()
    said: dict[str, FindingState] = field(default_factory=dict)
    alike: Resemblance | None = None
    answers: dict[str, FindingState] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def states(self) -> dict[str, FindingState]:
        """Every finding's state: the probes' and symptoms', overridden by the answers."""
        out = {f.id: f.state for f in self.findings}
        out.update({fid: s for fid, s in self.answers.items() if s is not FindingState.UNKNOWN})
        return out

    def _posterior(self, observed: dict[str, bool]) -> tuple[dict[str, float], float]:
        """The posterior as the differential computes it (the account read twice when there is one)."""
        if self.alike is None:
            return posterior(self.kb, observed)
        return posterior_with_words(self.kb, observed, observed_states(self.said), self.alike)

    def differential(self) -> Differential:
        return rank(self.kb, self.states(), said=self.said, alike=self.alike)

    def _candidates(self) -> list[str]:
        states = self.states()
        by_id = {f.id: f for f in self.findings}
        out = []
        for fid, fdef in self.kb.findings.items():
            if fid in self.asked or states.get(fid, FindingState.UNKNOWN) is not FindingState.UNKNOWN:
                continue
            if fdef.observed_by == "ask" or (fdef.probe in self.retryable_probes and fid in by_id):
                out.append(fid)
        return out

    def next_question(self) -> NextTest | None:
        """The best test still open: a question for the person or a probe to re-run; None
        when none is worth its cost (gain below the engine's threshold)."""
        tests = next_tests(self.kb, observed_states(self.states()), self._candidates(), limit=1)
        return tests[0] if tests else None

    def answer(self, fid: str, state: FindingState) -> Change:
        """Record the person's answer (``UNKNOWN`` for "don't know") and say what changed."""
        before_observed = observed_states(self.states())
        before_probs, before_none = self._posterior(before_observed)
        before = self.differential()
        if fid not in self.asked:
            self.asked.append(fid)
        self.answers[fid] = state
        after_probs, _ = self._posterior(observed_states(self.states()))
        after = self.differential()
        leader_before = before.leader.condition if before.leader else NONE_ID
        leader_after = after.leader.condition if after.leader else NONE_ID
        top = list(dict.fromkeys([r.condition for r in before.ranked[:3]] + [r.condition for r in after.ranked[:3]]))

        def answered(p: float) -> float:
            return 1.0 if state is FindingState.UNKNOWN else p if state is FindingState.PRESENT else 1 - p

        def likelihood(cid: str) -> float:
            # P(answer | c, what was known before): the posterior's own likelihood, so a second
            # witness of an event already established moves little (evidence groups).
            return answered(predictive(self.kb, marginal(self.kb, self.kb.conditions[cid]), before_observed, fid))

        moves = tuple(Move(c, before_probs[c], after_probs[c], likelihood(c)) for c in top)
        ratio = 1.0
        if state is not FindingState.UNKNOWN and leader_before in self.kb.conditions:
            chance = predictive(self.kb, marginal(self.kb, None), before_observed, fid)
            rest_mass = 1.0 - before_probs[leader_before]
            rest = sum(p * likelihood(c) for c, p in before_probs.items() if c != leader_before)
            rest += before_none * answered(chance)
            if rest > 0 and rest_mass > 0:
                ratio = likelihood(leader_before) / (rest / rest_mass)
        return Change(fid, state, leader_before, leader_after, moves, ratio)

    def add_findings(self, findings: Iterable[Finding], *, settled_probe: str = "") -> None:
        """Merge a probe re-run's findings; the probe is not offered again."""
        new = {f.id: f for f in findings}
        self.findings = [new.pop(f.id, f) for f in self.findings] + list(new.values())
        if settled_probe:
            self.retryable_probes = self.retryable_probes - {settled_probe}
            for fid, fdef in self.kb.findings.items():
                if fdef.probe == settled_probe and fid not in self.asked:
                    self.asked.append(fid)

    def done(self) -> Stop | None:
        """Why the session should end now, or None to go on asking."""
        leader = self.differential().leader
        if leader and leader.probability >= self.confidence:
            return Stop.CONFIDENT
        if self.max_questions is not None and len(self.asked) >= self.max_questions:
            return Stop.MAX_QUESTIONS
        if self.next_question() is None:
            return Stop.NO_QUESTION
        return None


def _pct(p: float) -> str:
    return f"{100 * p:.0f} %" if p >= 0.01 else "<1 %"


_ANSWER_WORD = {FindingState.PRESENT: "yes", FindingState.ABSENT: "no", FindingState.UNKNOWN: "don't know"}


def show_differential(session: Session, console: Any, *, rows: int = 5) -> None:
    """The top of the differential, compact: probability, condition, name."""
    from rich.table import Table

    d = session.differential()
    table = Table(show_edge=False, box=None, padding=(0, 1))
    table.add_column("P", justify="right")
    table.add_column("condition")
    table.add_column("name")
    for r in d.ranked[:rows]:
        table.add_row(_pct(r.probability), r.condition, session.kb.conditions[r.condition].name)
    table.add_row(_pct(d.none_probability), "—", "none of the known conditions", style="dim")
    console.print(table)


def show_change(session: Session, change: Change, console: Any) -> None:
    """Leader before → after, the top conditions' moves, the answer's likelihood ratio."""
    from prodx.report.safe import escape

    if change.state is FindingState.UNKNOWN:
        console.print("  [dim]noted: don't know — the differential is unchanged[/]")
        return
    word = _ANSWER_WORD[change.state]
    if change.leader_before == change.leader_after:
        console.print(f"  leader stays [bold]{change.leader_after}[/]")
    else:
        console.print(f"  leader [bold]{change.leader_before}[/] → [bold]{change.leader_after}[/]")
    for m in change.moves:
        arrow = "↑" if m.after > m.before + 0.005 else "↓" if m.after < m.before - 0.005 else "="
        console.print(f"  {arrow} {m.condition:<26} {_pct(m.before):>5} → {_pct(m.after):>5}  [dim]P({word})={m.likelihood:.2f}[/]")
    ratio = change.leader_ratio
    verdict = "for" if ratio > 1 else "against"
    console.print(f"  [dim]likelihood ratio for {escape(change.leader_before)}: {ratio:.2g} ({verdict} it)[/]")


def show_remedy(session: Session, console: Any) -> None:
    from prodx.report.safe import escape

    from prodx.report.diagnosis_json import ordered_remedy

    leader = session.differential().leader
    if leader is None:
        return
    cond = session.kb.conditions[leader.condition]
    console.print(f"[bold]Remedy for {leader.condition}[/] (safe steps first)")
    for i, step in enumerate(ordered_remedy(cond), 1):
        cmd = f"\n       [cyan]{escape(step.command)}[/]" if step.command else ""
        console.print(f"  {i}. \\[{step.risk}] {escape(step.step)}{cmd}")
    for text in cond.avoid:
        console.print(f"  [bold]Do not:[/] {escape(text)}")


def converse(
    session: Session,
    console: Any,
    read: Callable[[str], str],
    rerun_probe: Callable[[str], list[Finding]] | None = None,
) -> Stop:
    """Ask until the session is done or the person leaves; ``read`` raises EOFError when
    the input is closed, which leaves like ``q``."""
    from prodx.report.safe import escape

    while (stop := session.done()) is None:
        test = session.next_question()
        assert test is not None  # done() said a question is worth asking
        n = len(session.asked) + 1
        console.print()
        fdef = session.kb.findings[test.finding]
        if test.how == "probe":
            console.print(f"[bold]Test {n}[/] [dim]({test.finding}, {test.gain:.2f} bits)[/] probe {fdef.probe} did not finish: "
                          f"{escape(fdef.description)}")
            prompt = "Run it again with more time? \\[y]es / \\[n]o / \\[q]uit > "
        else:
            console.print(f"[bold]Question {n}[/] [dim]({test.finding}, {test.gain:.2f} bits)[/]")
            console.print(f"  {escape(test.question)}")
            prompt = "\\[y]es / \\[n]o / \\[?] don't know / \\[q]uit > "
        while True:
            try:
                raw = read(prompt)
            except (EOFError, KeyboardInterrupt):
                console.print()
                return Stop.QUIT
            reply = parse_answer(raw)
            if reply is not None:
                break
            console.print("  please answer y (yes), n (no), ? (don't know) or q (leave with the current differential)")
        if reply == "quit":
            return Stop.QUIT
        assert isinstance(reply, FindingState)
        if test.how == "probe":
            if reply is FindingState.PRESENT and rerun_probe is not None:
                before = session.differential().leader
                session.add_findings(rerun_probe(fdef.probe), settled_probe=fdef.probe)
                after = session.differential().leader
                console.print(f"  ran {fdef.probe}: leader {before.condition if before else '—'} → {after.condition if after else '—'}")
            else:
                session.add_findings([], settled_probe=fdef.probe)
            show_differential(session, console, rows=3)
            continue
        show_change(session, session.answer(test.finding, reply), console)
    return stop


def run_ask(*, confidence: float, max_questions: int | None, **options: Any) -> int:
    """Run ``prodx ask``: diagnose, converse on stdin/stdout, print the remedy; exit code."""
    from rich.console import Console

    from prodx.diagnosis import DiagnoseOptions, diagnose
    from prodx.kb.loader import KBError
    from prodx.profile import ProfileError

    opts = DiagnoseOptions.from_cli(options)
    try:
        result = diagnose(opts)
    except (KBError, ProfileError) as exc:
        print(f"prodx: {exc}", file=sys.stderr)
        return int(ExitStatus.USAGE_ERROR)
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    retry = frozenset(r.name for r in result.probe_runs if r.status in _RETRYABLE)
    session = Session(result.kb, list(result.findings), confidence, max_questions, retry, said=result.said,
                      alike=result.alike)

    def rerun(probe_name: str) -> list[Finding]:
        from prodx.host.local import LocalHost
        from prodx.probes import all_probes
        from prodx.probes.base import ProbeContext
        from prodx.probes.runner import run_probes

        ctx = ProbeContext(LocalHost(), result.target, result.kb, write_test=opts.write_test)
        ctx.seed("discovery", result.discovery)
        probes = [p for p in all_probes() if p.name == probe_name]
        found, _runs = run_probes(probes, ctx, max(opts.deadline_s, 10.0))
        return found

    present = [f.id for f in result.findings if f.present]
    console.print(f"[bold]prodx ask[/] · {result.host} · "
                  + ("no probes, reasoning from your words" if opts.no_probes else f"{len(result.probe_runs)} probes run"))
    console.print(f"[dim]present: {', '.join(present) if present else 'nothing yet'}[/]")
    for u in result.unmatched:
        near = f" (nearest: {', '.join(u.nearest)})" if u.nearest else ""
        console.print(f"  [yellow]symptom not understood:[/] \"{u.text}\"{near}")
    if session.differential().enough_to_go_on:
        show_differential(session, console)
    else:
        console.print("[bold yellow]Not enough to go on:[/] nothing observed or said bears on any known condition "
                      "yet, so no ranking is shown; the questions below start one.")
    console.print("[dim]Answer y (yes), n (no), ? (don't know); q leaves with the current differential.[/]")

    def read(prompt: str) -> str:
        return console.input(prompt)

    stop = converse(session, console, read, rerun)
    console.print()
    console.print(f"[bold]Stopped:[/] {stop.value} after {len(session.asked)} question(s).")
    if not session.differential().enough_to_go_on:
        console.print("[bold yellow]Still not enough to go on:[/] nothing known bears on any condition; no diagnosis.")
    else:
        show_differential(session, console)
    leader = session.differential().leader if session.differential().enough_to_go_on else None
    if leader:
        cond = session.kb.conditions[leader.condition]
        console.print(f"Diagnosis: {leader.condition} ({cond.name}) at {_pct(leader.probability)}")
        if leader.probability >= 0.2:
            show_remedy(session, console)
    final = session.differential()
    likely = final.enough_to_go_on and final.likely_probability >= LIKELY_PROBABILITY
    status = int(ExitStatus.CONDITION_LIKELY if likely else ExitStatus.NOTHING_LIKELY)
    if retry:
        # Hazard: an abandoned probe thread may sit in a /proc read; do not wait for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
