"""P(findings | hypothesis) with evidence groups: correlated findings counted once.

A hypothesis is given by its marginals: ``p(fid)`` = P(finding present | hypothesis), the
condition's listed value or the finding's leak. Findings in no group are independent given the
hypothesis, as before. The findings of one evidence group (``kb/data/groups.yaml``) are one
latent event E seen through several members: member m shows with probability s_m when E
happened (its sensitivity) and r_m when it did not, where r_m is what the member's leak leaves
once the group's chance rate c (P(E | none of the known conditions)) is accounted for:
r_m = (leak_m − c·s_m) / (1 − c). For a hypothesis h with marginals p_m:

    r'_m = min(r_m, p_m)
    q_h  = max over members of min(1, (p_m − r'_m) / (s_m − r'_m))
    s'_m = (p_m − (1 − q_h)·r'_m) / q_h
    P(observed members | h) = q_h·Π_obs P(m | E, h) + (1 − q_h)·Π_obs P(m | no E, h)

with P(m | E, h) = s'_m if m is present, 1 − s'_m if absent, and r'_m likewise without E.
q_h is the least event probability that every member's marginal allows; s'_m then reproduces
each member's marginal exactly (q_h·s'_m + (1 − q_h)·r'_m = p_m), so a member observed alone
weighs exactly what the KB says, while a second witness of an event already established adds
little and a member that contradicts it still counts. Unobserved members sum out exactly. For
"none of the known conditions" (and a condition that lists no member) q_h is the group's
chance. Pure functions; the same input gives the same output.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

from prodx.kb.loader import ConditionDef, EvidenceGroup, GroupMember, KnowledgeBase

#: P(finding present | hypothesis): a condition's value, or the finding's leak.
Marginal = Callable[[str], float]
#: Floor of a member's false-positive rate (a leak at or below chance·sensitivity, which kb
#: lint reports, would leave none).
_MIN_FALSE_POSITIVE = 1e-6


def marginal(kb: KnowledgeBase, cond: ConditionDef | None) -> Marginal:
    """The marginals of a condition (None: "none of the known conditions", every finding at
    its leak; a condition gives a finding it does not list the finding's ``unlisted_p``)."""
    return functools.partial(kb.likelihood, cond)


def _bernoulli_log(p: float, is_present: bool) -> float:
    return math.log(p if is_present else 1.0 - p)


def false_positive(group: EvidenceGroup, member: GroupMember, leak: float) -> float:
    """r_m = (leak − chance·sensitivity) / (1 − chance): P(member | no event), kept positive
    and below the sensitivity even for a group kb lint would reject."""
    r = (leak - group.chance * member.sensitivity) / (1.0 - group.chance)
    return min(max(r, _MIN_FALSE_POSITIVE), member.sensitivity / 2)


def _member_rates(group: EvidenceGroup, p: Marginal, chance: Marginal) -> list[tuple[GroupMember, float, float]]:
    """(member, p_m, r'_m) for each member, in the group's order."""
    out = []
    for m in group.members:
        pm = p(m.finding)
        out.append((m, pm, min(false_positive(group, m, chance(m.finding)), pm)))
    return out


def _event_probability(rates: list[tuple[GroupMember, float, float]]) -> float:
    """q = max over members of min(1, (p_m − r'_m) / (s_m − r'_m)); r'_m ≤ p_m keeps it ≥ 0."""
    return max(min(1.0, (pm - r) / (m.sensitivity - r)) for m, pm, r in rates)


def event_probability(group: EvidenceGroup, p: Marginal, chance: Marginal) -> float:
    """q_h: how likely the hypothesis with marginals ``p`` makes the group's event
    (``chance``: the marginals of "none of the known conditions", the findings' leaks)."""
    return _event_probability(_member_rates(group, p, chance))


def _group_terms(
    group: EvidenceGroup, p: Marginal, observed: Mapping[str, bool], chance: Marginal
) -> tuple[float, float, float, dict[str, tuple[float, float]]]:
    """(q, log of q·Π P(m | E), log of (1 − q)·Π P(m | no E), {member: (s'_m, r'_m)}) over
    the group's observed members."""
    rates = _member_rates(group, p, chance)
    q = _event_probability(rates)
    params: dict[str, tuple[float, float]] = {}
    with_event = math.log(q) if q > 0.0 else -math.inf
    without_event = math.log1p(-q) if q < 1.0 else -math.inf
    for m, pm, r in rates:
        # 0 < s ≤ 1: s − r = (p − r)/q ≥ 0 and q ≥ (p − r)/(1 − r). A member with s = 1 that
        # is absent rules the event out; the branch without it stays possible (q < 1 then).
        s = min(1.0, (pm - (1.0 - q) * r) / q) if q > 0.0 else pm
        params[m.finding] = (s, r if q > 0.0 else pm)
        if m.finding not in observed:
            continue
        present = observed[m.finding]
        if with_event > -math.inf:
            with_event += math.log(s) if present else (math.log1p(-s) if s < 1.0 else -math.inf)
        if without_event > -math.inf:
            without_event += _bernoulli_log(params[m.finding][1], present)
    return q, with_event, without_event, params


def _log_sum(a: float, b: float) -> float:
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))


def group_log_likelihood(group: EvidenceGroup, p: Marginal, observed: Mapping[str, bool], chance: Marginal) -> float:
    """log P(the group's observed members | hypothesis); 0.0 when none is observed."""
    if not any(m.finding in observed for m in group.members):
        return 0.0
    _q, with_event, without_event, _params = _group_terms(group, p, observed, chance)
    return _log_sum(with_event, without_event)


def log_likelihood_with(kb: KnowledgeBase, p: Marginal, observed: Mapping[str, bool]) -> float:
    """log P(observed | hypothesis with marginals ``p``): independent findings, then groups."""
    total = 0.0
    chance = marginal(kb, None)
    touched: list[str] = []
    for fid, is_present in sorted(observed.items()):
        gid = kb.group_of.get(fid)
        if gid is None:
            total += _bernoulli_log(p(fid), is_present)
        elif gid not in touched:
            touched.append(gid)
    for gid in sorted(touched):
        total += group_log_likelihood(kb.groups[gid], p, observed, chance)
    return total


def log_likelihood(kb: KnowledgeBase, cond: ConditionDef | None, observed: Mapping[str, bool]) -> float:
    """log P(E | c) over the observed findings (True present, False absent)."""
    return log_likelihood_with(kb, marginal(kb, cond), observed)


def predictive(
    kb: KnowledgeBase, p: Marginal, observed: Mapping[str, bool], fid: str, *, memo: dict | None = None
) -> float:
    """P(``fid`` present | hypothesis, what is observed): the finding's marginal, or for a
    group member its probability given the members already observed,
    (q·W·s'_f + (1 − q)·R·r'_f) / (q·W + (1 − q)·R) with W, R the products over them. ``memo``
    (a dict the caller keeps for one ``observed``) saves recomputing the group's terms."""
    gid = kb.group_of.get(fid)
    if gid is None:
        return p(fid)
    if fid in observed:  # asked again: predict it from the others
        observed, memo = {k: v for k, v in observed.items() if k != fid}, None
    key = (p, gid)
    terms = memo.get(key) if memo is not None else None
    if terms is None:
        terms = _group_terms(kb.groups[gid], p, observed, marginal(kb, None))
        if memo is not None:
            memo[key] = terms
    _q, with_event, without_event, params = terms
    s, r = params[fid]
    after = _log_sum(with_event + (math.log(s) if s > 0 else -math.inf), without_event + math.log(r))
    return min(1.0, max(0.0, math.exp(after - _log_sum(with_event, without_event))))


def finding_ratios(
    kb: KnowledgeBase, cond: ConditionDef, observed: Mapping[str, bool]
) -> dict[str, tuple[float, float, str]]:
    """For each observed finding: (its own likelihood ratio against chance, the ratio of the
    evidence it is counted in, its group id or ""). Chance is "none of the known conditions".

    A finding in no group counts alone: both ratios are P(f|c)/leak (or their complements).
    A group member's second ratio is its group's: P(observed members | c) / P(... | chance),
    the weight the posterior really gives them together. The own ratio says which way the
    member points by itself; ``member_contribution`` says what it adds to the others.
    """
    pc, p0 = marginal(kb, cond), marginal(kb, None)
    out: dict[str, tuple[float, float, str]] = {}
    group_ratio: dict[str, float] = {}
    for fid, is_present in observed.items():
        own = math.exp(_bernoulli_log(pc(fid), is_present) - _bernoulli_log(p0(fid), is_present))
        gid = kb.group_of.get(fid, "")
        if gid and gid not in group_ratio:
            group = kb.groups[gid]
            group_ratio[gid] = math.exp(
                group_log_likelihood(group, pc, observed, p0) - group_log_likelihood(group, p0, observed, p0)
            )
        out[fid] = (own, group_ratio[gid] if gid else own, gid)
    return out


def member_contribution(kb: KnowledgeBase, cond: ConditionDef, observed: Mapping[str, bool], fid: str) -> float:
    """The likelihood ratio (c against chance) that group member ``fid`` adds to the other
    observed members of its group: about 1 for a second witness of an established event."""
    group = kb.groups[kb.group_of[fid]]
    rest = {k: v for k, v in observed.items() if k != fid}
    pc, p0 = marginal(kb, cond), marginal(kb, None)
    with_c = group_log_likelihood(group, pc, observed, p0) - group_log_likelihood(group, pc, rest, p0)
    with_0 = group_log_likelihood(group, p0, observed, p0) - group_log_likelihood(group, p0, rest, p0)
    return math.exp(with_c - with_0)
