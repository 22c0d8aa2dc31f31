"""The knowledge base explained to people: ``prodx kb show ID`` and the generated catalogue.

Reads only a loaded :class:`~prodx.kb.loader.KnowledgeBase`. Everything here is derived from
the KB data (no condition knowledge in code): how much each finding tells about a condition
is its likelihood ratio against the finding's leak, a condition's nearest competitors are the
conditions whose finding probabilities differ least from its own (symmetric Kullback-Leibler
divergence over the findings either lists), and a condition's organ is the area of the
findings that point to it most strongly. Output is deterministic: the same KB gives the same
bytes.
"""

from __future__ import annotations

import difflib
import math
from collections import defaultdict
from typing import Any

from prodx.kb.loader import ConditionDef, KnowledgeBase

#: Finding-id areas and the organ each belongs to, in the catalogue's order. ``log`` and
#: ``symptom`` findings point at many organs and decide none.
ORGANS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Storage", ("storage", "netfs")),
    ("Memory and CPU", ("memory", "cpu")),
    ("Workload and scheduled jobs", ("workload",)),
    ("Processes and limits", ("process",)),
    ("Security policy (SELinux, AppArmor)", ("mac",)),
    ("Network and dependencies", ("net", "dep")),
    ("Web and HTTP", ("http",)),
    ("Certificates and clock", ("tls", "clock")),
    ("What changed", ("change",)),
)
OTHER_ORGAN = "Other"
RISK_ORDER = {"safe": 0, "downtime": 1, "data-loss": 2}
_EPS = 1e-6


def _clip(p: float) -> float:
    return min(1 - _EPS, max(_EPS, p))


def likelihood_ratios(p: float, leak: float) -> tuple[float, float]:
    """(LR when present, LR when absent) of a finding with P(f|c) = p and leak ``leak``.

    >>> [round(r, 3) for r in likelihood_ratios(0.9, 0.01)]
    [90.0, 0.101]
    """
    p, leak = _clip(p), _clip(leak)
    return p / leak, (1 - p) / (1 - leak)


def weight(p: float, leak: float) -> float:
    """How much a finding tells: the larger |ln LR| of its presence or absence.

    >>> round(weight(0.9, 0.01), 2), round(weight(0.003, 0.05), 2), weight(0.05, 0.05)
    (4.5, 2.81, 0.0)
    """
    present, absent = likelihood_ratios(p, leak)
    return max(abs(math.log(present)), abs(math.log(absent)))


def _kl(p: float, q: float) -> float:
    p, q = _clip(p), _clip(q)
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def divergence(kb: KnowledgeBase, a: str, b: str) -> float:
    """Symmetric Kullback-Leibler divergence of two conditions over the findings either lists
    (0: no finding tells them apart)."""
    ca, cb = kb.conditions[a], kb.conditions[b]
    return sum(_kl(kb.likelihood(ca, f), kb.likelihood(cb, f)) + _kl(kb.likelihood(cb, f), kb.likelihood(ca, f))
               for f in sorted(set(ca.findings) | set(cb.findings)))


def nearest_conditions(kb: KnowledgeBase, cid: str, limit: int = 3) -> list[tuple[str, float]]:
    """The conditions hardest to tell from ``cid``, closest first, with their divergence."""
    others = [(divergence(kb, cid, other), other) for other in sorted(kb.conditions) if other != cid]
    return [(other, d) for d, other in sorted(others)[:limit]]


def tells_apart(kb: KnowledgeBase, a: str, b: str, limit: int = 3) -> list[dict[str, Any]]:
    """The findings that best separate ``a`` from ``b``: id, P under each, and the likelihood
    ratio a/b of the state (present or absent) that favours ``a`` most."""
    ca, cb = kb.conditions[a], kb.conditions[b]
    rows = []
    for fid in sorted(set(ca.findings) | set(cb.findings)):
        pa, pb = kb.likelihood(ca, fid), kb.likelihood(cb, fid)
        d = _kl(pa, pb) + _kl(pb, pa)
        if d <= 0:
            continue
        present = _clip(pa) / _clip(pb)
        absent = (1 - _clip(pa)) / (1 - _clip(pb))
        state, lr = ("present", present) if present >= 1 else ("absent", absent)
        rows.append((-d, fid, {"finding": fid, "p": pa, "p_other": pb, "favours_when": state, "ratio": lr}))
    return [row for _d, _f, row in sorted(rows, key=lambda r: (r[0], r[1]))[:limit]]


def organ_of(kb: KnowledgeBase, cid: str) -> str:
    """The organ whose findings point to ``cid`` most strongly; a refinement takes its root's."""
    root = kb.conditions[kb.chain(cid)[-1]]
    score: dict[str, float] = defaultdict(float)
    area_organ = {area: organ for organ, areas in ORGANS for area in areas}
    for fid, p in root.findings.items():
        organ = area_organ.get(fid.split(".", 1)[0])
        fdef = kb.findings.get(fid)
        if organ and fdef and p > fdef.leak:
            score[organ] += math.log(_clip(p) / _clip(fdef.leak)) * p
    return min(score, key=lambda o: (-score[o], o)) if score else OTHER_ORGAN


def refined_by(kb: KnowledgeBase, cid: str) -> list[str]:
    return sorted(c.id for c in kb.conditions.values() if c.refines == cid)


def remedy_safe_first(cond: ConditionDef) -> list[dict[str, str]]:
    """Remedy steps, safe first, then downtime, then data loss; the KB's order within each."""
    steps = sorted(enumerate(cond.remedy), key=lambda ir: (RISK_ORDER.get(ir[1].risk, 3), ir[0]))
    return [{"step": r.step, "risk": r.risk, "command": r.command} for _i, r in steps]


def condition_view(kb: KnowledgeBase, cid: str) -> dict[str, Any]:
    """Everything ``prodx kb show`` says about condition ``cid``, as plain data."""
    cond = kb.conditions[cid]
    findings = []
    for fid, written in cond.findings.items():
        fdef = kb.findings.get(fid)
        leak = fdef.leak if fdef else 0.01
        # A symptom's value is blended with how incidents were told (reports.yaml).
        p = kb.likelihood(cond, fid)
        present, absent = likelihood_ratios(p, leak)
        findings.append({"finding": fid, "p": p, "written": written, "leak": leak, "lr_present": present,
                         "lr_absent": absent, "weight": weight(p, leak), "description": fdef.description if fdef else ""})
    findings.sort(key=lambda f: (-f["weight"], f["finding"]))
    return {
        "kind": "condition", "id": cid, "name": cond.name, "summary": cond.summary, "prior": cond.prior,
        "organ": organ_of(kb, cid), "chain": kb.chain(cid), "refined_by": refined_by(kb, cid),
        "findings": findings,
        "explains": [{"finding": f, "why": why} for f, why in sorted(cond.explains.items())],
        "confirm": [{"finding": t.finding, "how": t.how} for t in cond.confirm],
        "rule_out": [{"finding": t.finding, "how": t.how} for t in cond.rule_out],
        "remedy": remedy_safe_first(cond), "avoid": list(cond.avoid), "references": list(cond.references),
        "nearest": [{"condition": other, "divergence": d, "tells_apart": tells_apart(kb, cid, other)}
                    for other, d in nearest_conditions(kb, cid)],
        "source": cond.source,
    }


def finding_view(kb: KnowledgeBase, fid: str) -> dict[str, Any]:
    """Everything ``prodx kb show`` says about finding ``fid``, as plain data."""
    fdef = kb.findings[fid]
    listed = sorted(((kb.likelihood(c, fid), c.id) for c in kb.conditions.values() if fid in c.findings),
                    key=lambda pc: (-pc[0], pc[1]))
    return {
        "kind": "finding", "id": fid, "description": fdef.description, "observed_by": fdef.observed_by,
        "probe": fdef.probe, "question": fdef.question, "cost": fdef.cost, "leak": fdef.leak,
        "unlisted": fdef.unlisted_p, "phrases": list(fdef.phrases),
        "conditions": [{"condition": cid, "p": p, "lr_present": likelihood_ratios(p, fdef.leak)[0]} for p, cid in listed],
        "signatures": [{"id": s["id"], "pattern": s["pattern"], "description": s.get("description", "")}
                       for s in sorted(kb.signatures, key=lambda s: s["id"]) if s.get("finding") == fid],
    }


def nearest_ids(kb: KnowledgeBase, wanted: str, limit: int = 5) -> list[str]:
    """Known condition and finding ids that look like ``wanted``: close spellings, then ids
    containing it. Empty when nothing is close."""
    ids = sorted(set(kb.conditions) | set(kb.findings))
    close = difflib.get_close_matches(wanted, ids, n=limit, cutoff=0.6)
    tail = wanted.lower().split(".")[-1]
    contains = [i for i in ids if tail and (tail in i or i.split(".")[-1] in wanted.lower()) and i not in close]
    return (close + contains)[:limit]


def _pct(p: float) -> str:
    """A probability as a short percentage.

    >>> _pct(0.9), _pct(0.003), _pct(0.0)
    ('90 %', '0.3 %', '0 %')
    """
    if p == 0 or p >= 0.1:
        return f"{p * 100:.0f} %"
    return f"{p * 100:.2g} %"


def _ratio(r: float) -> str:
    """A likelihood ratio as ×N (or ÷N below 1).

    >>> _ratio(90.0), _ratio(0.1), _ratio(2.46)
    ('×90', '÷10', '×2.5')
    """
    if r >= 1:
        return f"×{r:.2g}" if r < 10 else f"×{r:.0f}"
    inv = 1 / r
    return f"÷{inv:.2g}" if inv < 10 else f"÷{inv:.0f}"


def _step_line(step: dict[str, str]) -> str:
    mark = "" if step["risk"] == "safe" else f"[{step['risk'].upper()}] "
    return mark + step["step"] + (f"\n      $ {step['command']}" if step["command"] else "")


def render_condition(view: dict[str, Any]) -> str:
    """``prodx kb show`` for a condition, as plain text."""
    out = [f"{view['id']} — {view['name']}",
           f"organ: {view['organ']}   prior: {view['prior']:.3f}   chain: {' → '.join(view['chain'])}"
           + (f"   refined by: {', '.join(view['refined_by'])}" if view["refined_by"] else ""),
           "", view["summary"], "",
           "Findings, most telling first (P if this condition vs leak; likelihood ratio present / absent;",
           "a symptom's P blends the condition file's value, in brackets, with how incidents were told):"]
    width = max((len(f["finding"]) for f in view["findings"]), default=10)
    for f in view["findings"]:
        written = f"[{f['written']:.3g}]" if abs(f["written"] - f["p"]) > 5e-4 else ""
        out.append(f"  {f['finding']:<{width}}  {f['p']:<6.3g}{written:<8} vs {f['leak']:<6.3g}  "
                   f"present {_ratio(f['lr_present']):>6}  absent {_ratio(f['lr_absent']):>6}")
    if view["nearest"]:
        out += ["", "Nearest competitors and what tells them apart:"]
        for n in view["nearest"]:
            parts = [f"{t['finding']} {t['favours_when']} ({t['p']:.3g} vs {t['p_other']:.3g})" for t in n["tells_apart"]]
            out.append(f"  {n['condition']}: " + ("; ".join(parts) or "nothing (lint flags this)"))
    out += ["", "Explains:"] + [f"  {e['finding']}: {e['why']}" for e in view["explains"]]
    out += ["", "Confirm:"] + [f"  {t['finding']}: {t['how']}" for t in view["confirm"]]
    out += ["", "Rule out:"] + [f"  {t['finding']}: {t['how']}" for t in view["rule_out"]]
    out += ["", "Remedy (safe first):"] + [f"  {i}. {_step_line(s)}" for i, s in enumerate(view["remedy"], 1)]
    out += ["", "Do not:"] + [f"  - {a}" for a in view["avoid"]]
    if view["references"]:
        out += ["", "References:"] + [f"  {r}" for r in view["references"]]
    return "\n".join(out) + "\n"


def render_finding(view: dict[str, Any]) -> str:
    """``prodx kb show`` for a finding, as plain text."""
    how = f"probe {view['probe']}" if view["observed_by"] == "probe" else "asked"
    out = [view["id"], "", view["description"], "",
           f"observed by: {how}   cost: {view['cost']:g}   leak: {view['leak']:g}"]
    if view["question"]:
        out.append(f"question: {view['question']}")
    if view["phrases"]:
        out.append("phrases: " + "; ".join(view["phrases"]))
    out += ["", "Conditions that list it (P if that condition; likelihood ratio when present):"]
    out += [f"  {c['condition']:<28} {c['p']:<6.3g} {_ratio(c['lr_present'])}" for c in view["conditions"]] or ["  none"]
    if view["signatures"]:
        out += ["", "Log signatures:"] + [f"  {s['id']}: {s['pattern']}" for s in view["signatures"]]
    return "\n".join(out) + "\n"


# --- the Markdown catalogue -----------------------------------------------------------------

def _md(text: str) -> str:
    """Text safe to put in a Markdown list item: one line, and no stray HTML outside `code`.

    >>> _md("a <b>\\n c `: > f`")
    'a &lt;b&gt; c `: > f`'
    """
    parts = " ".join(text.split()).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans to keep
        parts = ["`".join(parts)]
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _what_you_see(kb: KnowledgeBase, cond: ConditionDef, limit: int = 5) -> tuple[list[str], list[str]]:
    """The symptoms and the observed findings that point to ``cond`` most, as descriptions."""
    def telling(symptoms: bool) -> list[str]:
        rows = []
        for fid, p in cond.findings.items():
            fdef = kb.findings.get(fid)
            if fdef is None or fdef.is_symptom != symptoms or p < 0.2 or p <= fdef.leak:
                continue
            rows.append((-(p * math.log(_clip(p) / _clip(fdef.leak))), fid, f"{_md(fdef.description)} ({_pct(p)}; `{fid}`)"))
        return [text for _s, _f, text in sorted(rows)[:limit]]

    return telling(True), telling(False)


def _condition_section(kb: KnowledgeBase, cid: str) -> list[str]:
    cond = kb.conditions[cid]
    chain = kb.chain(cid)
    meta = [f"prior {cond.prior:.3f}"]
    if len(chain) > 1:
        meta.append("a specific cause of " + " → ".join(f"[`{c}`](#{c})" for c in chain[1:]))
    if refined_by(kb, cid):
        meta.append("specific causes: " + ", ".join(f"[`{c}`](#{c})" for c in refined_by(kb, cid)))
    out = [f'<a id="{cid}"></a>', f"### `{cid}` — {_md(cond.name)}", "", "; ".join(meta), "", _md(cond.summary), ""]
    symptoms, findings = _what_you_see(kb, cond)
    out.append("**What you see**")
    out.append("")
    out += [f"- {s}" for s in symptoms] or ["- no symptom a person reports points to it more than to others"]
    if findings:
        out += ["", "What prodx observes:", ""] + [f"- {f}" for f in findings]
    out += ["", "**How prodx tells it apart**", ""]
    for other, _d in nearest_conditions(kb, cid):
        rows = tells_apart(kb, cid, other)
        parts = [f"`{t['finding']}` {t['favours_when']} ({_pct(t['p'])} here vs {_pct(t['p_other'])})" for t in rows]
        out.append(f"- from [`{other}`](#{other}): " + ("; ".join(parts) or "nothing tells them apart"))
    out += ["", "**Remedy** (safe first)", ""]
    for i, step in enumerate(remedy_safe_first(cond), 1):
        mark = "" if step["risk"] == "safe" else f"**{step['risk']}:** "
        command = f" `{step['command']}`" if step["command"] and "`" not in step["command"] else ""
        out.append(f"{i}. {mark}{_md(step['step'])}{command}")
    out += ["", "**What not to do**", ""] + [f"- {_md(a)}" for a in cond.avoid] + [""]
    return out


def catalogue(kb: KnowledgeBase) -> str:
    """The Markdown catalogue of every condition, grouped by organ, with an index."""
    by_organ: dict[str, list[str]] = defaultdict(list)
    for cid in sorted(kb.conditions):
        by_organ[organ_of(kb, cid)].append(cid)
    organs = [o for o, _a in ORGANS if o in by_organ] + ([OTHER_ORGAN] if OTHER_ORGAN in by_organ else [])

    def ordered(ids: list[str]) -> list[str]:
        # A general condition first, each of its specific causes right after it.
        roots = [c for c in ids if not kb.conditions[c].refines or kb.conditions[c].refines not in ids]
        out: list[str] = []

        def add(cid: str) -> None:
            out.append(cid)
            for child in refined_by(kb, cid):
                if child in ids and child not in out:
                    add(child)

        for root in roots:
            if root not in out:
                add(root)
        return out

    lines = ["# The prodx knowledge base", "",
             ("<!-- Generated by `prodx kb docs -o docs/catalogue.md`; do not edit. "
              "CI runs `prodx kb docs --check`. -->"), "",
             (f"{len(kb.conditions)} conditions, {len(kb.findings)} findings, {len(kb.signatures)} log signatures. "
              "For each condition: what you see, how prodx tells it from the conditions most like it "
              "(the findings whose probability differs most between the two), the remedy with safe "
              "steps first, and what not to do. `prodx kb show ID` prints every number."), "",
             "## Index", ""]
    for organ in organs:
        lines.append(f"- **{organ}**")
        for cid in ordered(by_organ[organ]):
            depth = len(kb.chain(cid)) - 1
            lines.append(f"{'  ' * (depth + 1)}- [`{cid}`](#{cid}) — {_md(kb.conditions[cid].name)}")
    lines.append("")
    for organ in organs:
        lines += [f"## {organ}", ""]
        for cid in ordered(by_organ[organ]):
            lines += _condition_section(kb, cid)
    return "\n".join(lines).rstrip("\n") + "\n"


def stale_message(expected: str, current: str, path: str, context_lines: int = 40) -> str | None:
    """None when ``current`` (the file's text) equals ``expected``; else a message with the
    first lines of a unified diff.

    >>> stale_message("a\\n", "a\\n", "x.md") is None
    True
    >>> print(stale_message("a\\nb\\n", "a\\n", "x.md"))
    x.md is stale; regenerate it with `prodx kb docs -o x.md`:
    --- x.md (checked in)
    +++ x.md (from the KB)
    @@ -1 +1,2 @@
     a
    +b
    """
    if expected == current:
        return None
    diff = list(difflib.unified_diff(current.splitlines(), expected.splitlines(),
                                     f"{path} (checked in)", f"{path} (from the KB)", lineterm=""))
    more = len(diff) - context_lines
    shown = diff[:context_lines] + ([f"... {more} more diff lines"] if more > 0 else [])
    return f"{path} is stale; regenerate it with `prodx kb docs -o {path}`:\n" + "\n".join(shown)
