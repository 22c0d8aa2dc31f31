"""The differential: posterior probability of every condition given the findings.

Single-fault model (SPEC §3): P(c | E) ∝ prior(c) · Π_present P(f|c) · Π_absent (1 − P(f|c)),
where a finding a condition does not list has the finding's leak probability. Unknown
findings are left out. The hypothesis "none of the known conditions" has the prior mass the
conditions leave (at least ``NONE_PRIOR_FLOOR``) and produces every finding at its leak.
Pure functions of findings and KB: the same input gives the same output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prodx.kb.loader import ConditionDef, KnowledgeBase
from prodx.model import FindingState

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

    @property
    def leader(self) -> Ranked | None:
        return self.ranked[0] if self.ranked else None

    @property
    def likely_probability(self) -> float:
        """The probability that decides "likely" (exit code 1): the best condition or family."""
        own = self.ranked[0].probability if self.ranked else 0.0
        return max(own, self.family_probability)


def _p(kb: KnowledgeBase, cond: ConditionDef | None, fid: str) -> float:
    if cond is not None and fid in cond.findings:
        return cond.findings[fid]
    fdef = kb.findings.get(fid)
    return fdef.leak if fdef else 0.01


def log_likelihood(kb: KnowledgeBase, cond: ConditionDef | None, observed: Mapping[str, bool]) -> float:
    """log P(E | c) over the observed findings (True present, False absent)."""
    total = 0.0
    for fid, is_present in observed.items():
        p = _p(kb, cond, fid)
        total += math.log(p if is_present else 1.0 - p)
    return total


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


def observed_states(states: Mapping[str, FindingState]) -> dict[str, bool]:
    """Present/absent findings as booleans; unknown ones are left out, never read as absent."""
    return {
        fid: state is FindingState.PRESENT
        for fid, state in sorted(states.items())
        if state is not FindingState.UNKNOWN
    }


def _evidence_split(kb: KnowledgeBase, cond: ConditionDef, observed: Mapping[str, bool]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    support, against = [], []
    for fid, is_present in observed.items():
        p, leak = _p(kb, cond, fid), _p(kb, None, fid)
        ratio = p / leak if is_present else (1 - p) / (1 - leak)
        if ratio >= _FOR_LR:
            support.append((-ratio, fid))
        elif ratio <= _AGAINST_LR:
            against.append((ratio, fid))
    return tuple(f for _r, f in sorted(support)), tuple(f for _r, f in sorted(against))


def _pairs(kb: KnowledgeBase, observed: Mapping[str, bool], candidates: list[str]) -> list[Pair]:
    """Pairs whose noisy-OR joint likelihood beats the best single condition by _PAIR_FACTOR."""
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
            total = math.log(ca.prior) + math.log(cb.prior)
            only_together = []
            for fid, is_present in observed.items():
                pa, pb = ca.findings.get(fid, 0.0), cb.findings.get(fid, 0.0)
                p = 1 - (1 - pa) * (1 - pb) * (1 - _p(kb, None, fid))
                total += math.log(p if is_present else 1 - p)
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
        if not is_present or leader is None or _p(kb, leader, fid) >= 0.3:
            continue
        best = sorted(kb.conditions.values(), key=lambda c: (-c.prior * c.findings.get(fid, 0.0), c.id))[:2]
        candidates += [c.id for c in best if c.findings.get(fid, 0.0) >= 0.3 and c.id not in candidates]
    return candidates


def rank(kb: KnowledgeBase, states: Mapping[str, FindingState], *, limit: int = 10) -> Differential:
    """The differential for the given finding states, most probable first."""
    observed = observed_states(states)
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
        support, against = _evidence_split(kb, cond, observed)
        explains = tuple(sorted(f for f in cond.explains if f in present))
        ranked.append(Ranked(cid, probs[cid], support, against, explains, family[cid]))
    pairs = _pairs(kb, observed, _pair_candidates(kb, observed, order))
    roots = [cid for cid in family if not kb.conditions[cid].refines]
    top_root = min(roots, key=lambda cid: (-family[cid], cid)) if roots else ""
    return Differential(ranked, none_p, pairs, top_root, family.get(top_root, 0.0))
