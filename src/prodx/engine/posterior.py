"""The differential: posterior probability of every condition given the findings.

Single-fault model (SPEC §3): P(c | E) ∝ prior(c) · P(E | c), where a finding a condition
does not list has the finding's leak probability. Findings in no evidence group are
independent given c (Π_present P(f|c) · Π_absent (1 − P(f|c))); the findings of one evidence
group are one event seen several ways and are combined by ``prodx.engine.likelihood`` so that
the same evidence is not counted twice. Unknown findings are left out. The hypothesis "none of
the known conditions" has the prior mass the conditions leave (at least ``NONE_PRIOR_FLOOR``)
and produces every finding at its leak. Pure functions of findings and KB: the same input
gives the same output.

With a person's account (``prodx.engine.alike``), what the words said is read twice: as the
findings the symptom reader understood, and as a resemblance to the learned incidents. The
two readings are mixed, P_words(c) = (1 − w) · P(c | said) + w · alike(c), and every other
finding (what the probes measured, a person's answers) updates that mixture by its own
likelihood: P(c | E) ∝ P_words(c) · P(E | c) / P(said | c), the grouped likelihoods of all the
evidence over those of the words' findings alone (so an evidence group split between the two
is still counted once). README, "Incidents like this one".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prodx.engine.alike import Resemblance
from prodx.engine.likelihood import Marginal, finding_ratios, log_likelihood, log_likelihood_with, member_contribution
from prodx.kb.loader import ConditionDef, KnowledgeBase
from prodx.model import FindingState

__all__ = ["NONE_ID", "Differential", "Pair", "Ranked", "log_likelihood", "observed_states", "posterior", "rank"]

NONE_ID = "none-of-the-known"
NONE_PRIOR_FLOOR = 0.05
#: A likelihood ratio beyond these bounds makes a finding count for or against a condition.
_FOR_LR = 1.5
_AGAINST_LR = 1 / 1.5
#: A pair of conditions is reported when its joint probability beats the best single
#: condition's by this factor.
_PAIR_FACTOR = 20.0
_PAIR_CANDIDATES = 8


@dataclass(frozen=True)
class Ranked:
    """One row of the differential."""

    condition: str
    probability: float
    support: tuple[str, ...] = ()
    against: tuple[str, ...] = ()
    explains: tuple[str, ...] = ()
    #: Its own probability plus that of every condition refining it (disk-full includes
    #: log-growth): how likely it is that this failure is happening, whatever its cause.
    family_probability: float = 0.0
    #: Evidence groups with two or more findings in ``support``: (group id, those findings),
    #: one event seen several ways and counted once.
    support_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: How much the account reads like this condition's incidents (a share of 1 over every
    #: learned cause) and the account's words that make it so; 0 and () without an account.
    alike: float = 0.0
    alike_words: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pair:
    """Two conditions that together explain the findings far better than either alone."""

    first: str
    second: str
    factor: float
    explained_only_together: tuple[str, ...] = ()


@dataclass
class Differential:
    ranked: list[Ranked]
    none_probability: float
    pairs: list[Pair] = field(default_factory=list)

    #: The most general condition whose family holds the most probability, and that mass.
    family_leader: str = ""
    family_probability: float = 0.0
    #: False when nothing observed bears on any condition: the ranking is the priors'.
    enough_to_go_on: bool = True

    @property
    def leader(self) -> Ranked | None:
        return self.ranked[0] if self.ranked else None

    @property
    def likely_probability(self) -> float:
        """The probability that decides "likely" (exit code 1): the best condition or family."""
        own = self.ranked[0].probability if self.ranked else 0.0
        return max(own, self.family_probability)


def none_prior(kb: KnowledgeBase) -> float:
    return max(NONE_PRIOR_FLOOR, 1.0 - sum(c.prior for c in kb.conditions.values()))


def posterior(kb: KnowledgeBase, observed: Mapping[str, bool]) -> tuple[dict[str, float], float]:
    """Normalised posteriors of every condition, and of "none of the known conditions"."""
    logs = {
        cid: math.log(c.prior) + log_likelihood(kb, c, observed)
        for cid, c in sorted(kb.conditions.items())
    }
    none_log = math.log(none_prior(kb)) + log_likelihood(kb, None, observed)
    top = max([none_log, *logs.values()])
    weights = {cid: math.exp(v - top) for cid, v in logs.items()}
    none_w = math.exp(none_log - top)
    total = none_w + sum(weights.values())
    return {cid: w / total for cid, w in weights.items()}, none_w / total


def posterior_with_words(
    kb: KnowledgeBase, observed: Mapping[str, bool], said: Mapping[str, bool], alike: Resemblance
) -> tuple[dict[str, float], float]:
    """The posterior with the words read twice (module docstring): ``said`` are the findings
    the symptom reader took from the account, ``observed`` all findings (``said`` among them,
    unless a measurement overrode one)."""
    words, words_none = posterior(kb, said)
    w = alike.weight
    logs = {}
    for cid, c in sorted(kb.conditions.items()):
        mixed = (1 - w) * words[cid] + w * alike.share(cid)
        logs[cid] = math.log(max(mixed, 1e-300)) + log_likelihood(kb, c, observed) - log_likelihood(kb, c, said)
    mixed_none = (1 - w) * words_none + w * alike.share(NONE_ID)
    none_log = math.log(max(mixed_none, 1e-300)) + log_likelihood(kb, None, observed) - log_likelihood(kb, None, said)
    top = max([none_log, *logs.values()])
    weights = {cid: math.exp(v - top) for cid, v in logs.items()}
    none_w = math.exp(none_log - top)
    total = none_w + sum(weights.values())
    return {cid: x / total for cid, x in weights.items()}, none_w / total


def observed_states(states: Mapping[str, FindingState]) -> dict[str, bool]:
    """Present/absent findings as booleans; unknown ones are left out, never read as absent."""
    return {
        fid: state is FindingState.PRESENT
        for fid, state in sorted(states.items())
        if state is not FindingState.UNKNOWN
    }


def _evidence_split(
    kb: KnowledgeBase, cond: ConditionDef, observed: Mapping[str, bool]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The findings for and against ``cond``, strongest first, as the posterior weighs them.

    A finding in no group counts by its own likelihood ratio. A group member is listed for c
    when it points to c by itself and its group, counted once, does too; against c when it
    points away by itself and still does given the other members (a contradicting witness
    counts; a missing second witness of an established event does not)."""
    support, against = [], []
    for fid, (own, counted, gid) in finding_ratios(kb, cond, observed).items():
        if own >= _FOR_LR and counted >= _FOR_LR:
            support.append((-counted, gid, -own, fid))
        elif own <= _AGAINST_LR:
            weight = counted if not gid or counted <= _AGAINST_LR else member_contribution(kb, cond, observed, fid)
            if weight <= _AGAINST_LR:
                against.append((weight, gid, own, fid))
    support.sort()
    against.sort()
    grouped: dict[str, list[str]] = {}
    for *_key, gid, _own, fid in support:
        if gid:
            grouped.setdefault(gid, []).append(fid)
    groups = tuple((gid, tuple(fids)) for gid, fids in grouped.items() if len(fids) > 1)
    return tuple(f for *_k, f in support), tuple(f for *_k, f in against), groups


def _noisy_or(kb: KnowledgeBase, ca: ConditionDef, cb: ConditionDef) -> Marginal:
    """The marginals of "a and b at once": a finding shows if a, b or chance makes it show."""

    def p(fid: str) -> float:
        pa, pb = ca.findings.get(fid, 0.0), cb.findings.get(fid, 0.0)
        return 1 - (1 - pa) * (1 - pb) * (1 - kb.likelihood(None, fid))

    return p


def _pairs(kb: KnowledgeBase, observed: Mapping[str, bool], candidates: list[str]) -> list[Pair]:
    """Pairs whose noisy-OR joint likelihood beats the best single condition by _PAIR_FACTOR;
    the pair's findings are combined by the same grouped likelihood as a single condition's."""
    singles = {
        cid: math.log(kb.conditions[cid].prior) + log_likelihood(kb, kb.conditions[cid], observed)
        for cid in candidates
    }
    if not singles:
        return []
    best_single = max(singles.values())
    out = []
    for i, a in enumerate(candidates):
        for b in candidates[i + 1 :]:
            ca, cb = kb.conditions[a], kb.conditions[b]
            if b in kb.chain(a) or a in kb.chain(b):
                continue  # a refinement and its parent are one story, not two faults
            total = math.log(ca.prior) + math.log(cb.prior) + log_likelihood_with(kb, _noisy_or(kb, ca, cb), observed)
            only_together = []
            for fid, is_present in observed.items():
                pa, pb = ca.findings.get(fid, 0.0), cb.findings.get(fid, 0.0)
                if is_present and pa >= 0.3 and pb < 0.1 or is_present and pb >= 0.3 and pa < 0.1:
                    only_together.append(fid)
            factor = math.exp(min(700.0, total - best_single))
            if factor >= _PAIR_FACTOR:
                out.append(Pair(a, b, factor, tuple(sorted(only_together))))
    out.sort(key=lambda p: (-p.factor, p.first, p.second))
    return out[:3]


def _pair_candidates(kb: KnowledgeBase, observed: Mapping[str, bool], order: list[str]) -> list[str]:
    """The leading conditions, plus for each present finding the leader explains poorly the
    conditions that explain it best: a second fault rarely ranks high on its own."""
    candidates = list(order[:_PAIR_CANDIDATES])
    leader = kb.conditions[order[0]] if order else None
    for fid, is_present in observed.items():
        if not is_present or leader is None or kb.likelihood(leader, fid) >= 0.3:
            continue
        best = sorted(kb.conditions.values(), key=lambda c: (-c.prior * c.findings.get(fid, 0.0), c.id))[:2]
        candidates += [c.id for c in best if c.findings.get(fid, 0.0) >= 0.3 and c.id not in candidates]
    return candidates


def rank(kb: KnowledgeBase, states: Mapping[str, FindingState], *, limit: int = 10,
         said: Mapping[str, FindingState] | None = None, alike: Resemblance | None = None) -> Differential:
    """The differential for the given finding states, most probable first. With ``alike``
    (what a person's account reads like) and ``said`` (the findings the symptom reader took
    from it), the words are read twice (module docstring)."""
    observed = observed_states(states)
    if alike is not None:
        probs, none_p = posterior_with_words(kb, observed, observed_states(said or {}), alike)
    else:
        probs, none_p = posterior(kb, observed)
    order = sorted(probs, key=lambda cid: (-probs[cid], cid))
    present = {fid for fid, is_present in observed.items() if is_present}
    family = dict(probs)
    for cid, p in probs.items():
        for ancestor in kb.chain(cid)[1:]:
            family[ancestor] += p
    ranked = []
    for cid in order[:limit]:
        cond = kb.conditions[cid]
        support, against, groups = _evidence_split(kb, cond, observed)
        explains = tuple(sorted(f for f in cond.explains if f in present))
        ranked.append(Ranked(cid, probs[cid], support, against, explains, family[cid], groups,
                             alike.share(cid) if alike else 0.0, alike.words.get(cid, ()) if alike else ()))
    pairs = _pairs(kb, observed, _pair_candidates(kb, observed, order))
    roots = [cid for cid in family if not kb.conditions[cid].refines]
    top_root = min(roots, key=lambda cid: (-family[cid], cid)) if roots else ""
    return Differential(ranked, none_p, pairs, top_root, family.get(top_root, 0.0), enough_to_go_on(kb, observed))


def enough_to_go_on(kb: KnowledgeBase, observed: Mapping[str, bool]) -> bool:
    """Whether anything observed or said bears on a condition: a symptom understood (present
    or absent), or a present finding whose likelihood ratio against chance moves some
    condition beyond the for/against bounds. False means the differential is the priors'.
    Absent probe findings alone do not count: "nothing wrong seen" is not a lead."""
    for fid, is_present in observed.items():
        if fid.startswith("symptom."):
            return True
        if not is_present:
            continue
        leak = kb.likelihood(None, fid)
        if any(not _AGAINST_LR < kb.likelihood(c, fid) / leak < _FOR_LR for c in kb.conditions.values()):
            return True
    return False
