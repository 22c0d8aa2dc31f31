"""The next test: the unknown finding whose answer most reduces uncertainty per unit of cost.

Expected information gain = H(differential now) − Σ_outcome P(outcome) · H(differential
after that outcome), divided by the finding's cost (SPEC §3). Only findings a probe or a
question can settle, and that are still unknown, are candidates. P(outcome | c) is the
posterior's own likelihood (``prodx.engine.likelihood.predictive``): for a member of an
evidence group it is conditioned on the members already observed, so asking for a second
witness of an established event is worth what it really teaches, next to nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prodx.engine.likelihood import marginal, predictive
from prodx.engine.posterior import posterior
from prodx.kb.loader import KnowledgeBase


#: Tests expected to teach less than this (bits per unit cost) are not worth a person's time.
_MIN_GAIN_BITS = 0.02


@dataclass(frozen=True)
class NextTest:
    finding: str
    how: str  # "probe" or "ask"
    question: str
    gain: float  # expected bits per unit cost


def _entropy(probs: Mapping[str, float], none_p: float) -> float:
    return -sum(p * math.log2(p) for p in [*probs.values(), none_p] if p > 0)


def next_tests(
    kb: KnowledgeBase,
    observed: Mapping[str, bool],
    candidates: list[str],
    *,
    limit: int = 3,
) -> list[NextTest]:
    """The best ``limit`` tests among ``candidates`` (unknown finding ids), best first."""
    probs, none_p = posterior(kb, observed)
    # P(c | E, f) ∝ P(c | E) · P(f | c): one observation more needs no full recomputation.
    # Conditions with negligible mass are left out of the expectation; this keeps it cheap.
    relevant = {cid: p for cid, p in probs.items() if p > 1e-4}
    marginals = {cid: marginal(kb, kb.conditions[cid]) for cid in relevant}
    chance = marginal(kb, None)
    memo: dict = {}
    scored = []
    for fid in sorted(set(candidates)):
        fdef = kb.findings.get(fid)
        if fdef is None or fid in observed:
            continue
        if not any(fid in kb.conditions[c].findings for c in relevant):
            continue
        likelihood = {c: predictive(kb, marginals[c], observed, fid, memo=memo) for c in relevant}
        none_likelihood = predictive(kb, chance, observed, fid, memo=memo)
        expected = 0.0
        for outcome in (True, False):
            joint = {c: p * (likelihood[c] if outcome else 1 - likelihood[c]) for c, p in relevant.items()}
            joint_none = none_p * (none_likelihood if outcome else 1 - none_likelihood)
            p_outcome = sum(joint.values()) + joint_none
            if p_outcome <= 0:
                continue
            after = {c: v / p_outcome for c, v in joint.items()}
            expected += p_outcome * _entropy(after, joint_none / p_outcome)
        gain = (_entropy(relevant, none_p) - expected) / fdef.cost
        if gain > _MIN_GAIN_BITS:
            question = fdef.question or fdef.description
            scored.append(NextTest(fid, fdef.observed_by, question, gain))
    scored.sort(key=lambda t: (-t.gain, t.finding))
    return scored[:limit]
