"""A diagnosis as an incident note in GitHub-flavoured Markdown (``prodx diagnose --markdown``).

Built from the ``prodx.diagnosis/1`` document (:func:`prodx.report.diagnosis_json.to_document`)
and the KB the diagnosis used, so it says exactly what ``--json`` says, in the order a ticket
or a postmortem wants it: summary, symptoms, findings with evidence, differential, tests run,
next tests, remedy, timeline. No ANSI, no rich: plain text that pastes anywhere. Every free
text passes through :func:`prodx.redact.redact` (findings are redacted at the source already;
this is the second lock) and loses control characters. The same diagnosis gives the same
bytes; only the line under the title says when it ran.
"""

from __future__ import annotations

import re
from typing import Any

from prodx.diagnosis import Diagnosis
from prodx.engine.alike import SHOWN_SHARE
from prodx.kb.loader import KnowledgeBase
from prodx.redact import redact
from prodx.report.diagnosis_json import to_document

#: Rows of the differential table; the rest of the probability is in "none of the known".
DIFFERENTIAL_ROWS = 8
#: Unknown findings worth a line: those the top conditions of the differential list.
MATTERING_CONDITIONS = 3
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: Any) -> str:
    """Free text made safe for one Markdown line: redacted, no control characters or ANSI
    escapes, whitespace folded, and no stray HTML outside the text's own `code` spans.

    >>> clean("disk \\x1b[31mfull\\x1b[0m\\tat <mnt> `: > f`\\n password=hunter2")
    'disk full at &lt;mnt&gt; `: > f` password=[REDACTED]'
    """
    text = _CONTROL.sub(" ", redact(str(text)))
    parts = " ".join(text.split()).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans to keep
        parts = ["\\`".join(parts)]
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def code(text: Any) -> str:
    """Text as an inline code span, fenced with more backticks than it holds.

    >>> code("df -h"), code("a `b` c"), code("")
    ('`df -h`', '`` a `b` c ``', '')
    """
    text = _CONTROL.sub(" ", redact(str(text)))
    text = " ".join(text.split())
    if not text:
        return ""
    runs = [len(r) for r in re.findall(r"`+", text)]
    if not runs:
        return f"`{text}`"
    fence = "`" * (max(runs) + 1)
    return f"{fence} {text} {fence}"


def cell(text: str) -> str:
    """Text for a table cell: pipes escaped (inside code spans too, as GFM requires).

    >>> cell("a | b")
    'a \\\\| b'
    """
    return text.replace("|", "\\|")


def pct(p: float) -> str:
    """A probability as a percentage a person reads at a glance.

    >>> pct(0.9394), pct(0.059), pct(0.0004), pct(0)
    ('94 %', '5.9 %', '0.04 %', '0 %')
    """
    if p == 0 or p >= 0.1:
        return f"{p * 100:.0f} %"
    return f"{p * 100:.2g} %"


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["---"] * len(header)
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(cell(c) if c else " " for c in row) + " |" for row in rows]
    return out


def _finding_line(f: dict[str, Any]) -> str:
    text = f["summary"] or f["reason"] or f["state"]
    probe = f" _(probe {code(f['probe'])})_" if f["probe"] and f["probe"] != "symptom" else ""
    return f"- **{code(f['id'])}** — {clean(text)}{probe}"


def _summary(doc: dict[str, Any], kb: KnowledgeBase) -> list[str]:
    out = ["## Summary", ""]
    if not doc["enough_to_go_on"]:
        unclear = len(doc["unmatched_symptoms"])
        return out + ["**Not enough to go on.** Nothing observed or said bears on any known condition, so a "
                      "ranking would only repeat how common each failure is; none is given."
                      + (f" {unclear} line(s) were not understood (below)." if unclear else ""),
                      "", "Answer the questions below, or say what you see (error messages, status codes, "
                      "what changed) with `--symptom`.", ""]
    if not doc["differential"]:
        return out + ["No known condition fits what was observed.", ""]
    lead = doc["differential"][0]
    cond = kb.conditions[lead["condition"]]
    out.append(f"**Leading condition:** {code(lead['condition'])} — {clean(lead['name'])}, "
               f"probability **{pct(lead['probability'])}**.")
    if lead["refines"]:
        chain = " → ".join(code(c) for c in [lead["condition"], *lead["refines"]])
        out.append(f"Refinement chain: {chain} (with its family: {pct(lead['family_probability'])}).")
    out += ["", clean(cond.summary), ""]
    for pair in doc["multiple_causes"]:
        both = " and ".join(code(c) for c in pair["conditions"])
        out.append(f"Two causes at once? {both} together explain the findings {pair['factor']:,.0f}× better "
                   "than either alone.")
        out.append("")
    for group in lead.get("evidence_groups", []):
        seen = ", ".join(code(f) for f in group["findings"])
        out += [f"One event seen several ways, counted once: {seen} ({clean(group['event'])})", ""]
    out.append(f"None of the known conditions: {pct(doc['none_of_the_known'])}.")
    return out + [""]


def _symptoms(doc: dict[str, Any], kb: KnowledgeBase) -> list[str]:
    out = ["## Symptoms reported", ""]
    reported = [f for f in doc["findings"] if f["probe"] == "symptom"]
    lead = doc["differential"][0] if doc["differential"] else None
    explains = kb.conditions[lead["condition"]].explains if lead else {}
    if not reported and not doc["unmatched_symptoms"]:
        return out + ["_None reported (`--symptom TEXT` adds what people see)._", ""]
    for f in reported:
        quote = clean(f["evidence"].get("text", f["summary"]))
        denied = " (said not to happen)" if f["state"] == "absent" else ""
        if f["state"] == "present" and lead and f["id"] in lead["explains"]:
            why = f" — explained by {code(lead['condition'])}: {clean(explains.get(f['id'], ''))}"
        elif f["state"] == "present" and lead:
            why = f" — **not explained** by {code(lead['condition'])}"
        else:
            why = ""
        out.append(f"- “{quote}” → {code(f['id'])}{denied}{why}")
    for u in doc["unmatched_symptoms"]:
        near = ", ".join(code(n) for n in u["nearest"]) or "none"
        out.append(f"- “{clean(u['text'])}” → _not understood_ (nearest known symptoms: {near})")
    return out + [""]


def _findings(doc: dict[str, Any], kb: KnowledgeBase) -> list[str]:
    out = ["## Findings with evidence", ""]
    observed = [f for f in doc["findings"] if f["probe"] != "symptom"]
    present = [f for f in observed if f["state"] == "present"]
    out += ["### Present", ""]
    out += [_finding_line(f) for f in present] or ["_Nothing abnormal was observed._"]
    out.append("")
    listed: set[str] = set()
    for row in doc["differential"][:MATTERING_CONDITIONS]:
        listed |= set(kb.conditions[row["condition"]].findings)
    unknown = [f for f in observed if f["state"] == "unknown" and f["id"] in listed]
    if unknown:
        out += ["### Unknown, and it matters", "",
                "Findings the leading conditions depend on that prodx could not decide, and why:", ""]
        out += [_finding_line(f) for f in unknown] + [""]
    if doc["differential"]:
        lead = doc["differential"][0]
        by_id = {f["id"]: f for f in doc["findings"]}
        against = [by_id[fid] for fid in lead["against"] if fid in by_id]
        if against:
            out += [f"### Against {code(lead['condition'])}", ""]
            out += [_finding_line({**f, "summary": f"({f['state']}) {f['summary'] or kb.findings[f['id']].description}"
                                   if f["id"] in kb.findings else f["summary"]}) for f in against] + [""]
    return out


def _differential(doc: dict[str, Any]) -> list[str]:
    rows = []
    shown = doc["differential"][:DIFFERENTIAL_ROWS]
    # Findings every row shares (a full disk) tell the rows apart no better than nothing.
    common = set.intersection(*(set(r["for"]) for r in shown)) if len(shown) > 1 else set()
    for i, r in enumerate(shown, 1):
        own = [code(f) for f in r["for"] if f not in common][:4]
        alike = r.get("alike")
        if alike and alike["share"] >= SHOWN_SHARE and alike["words"]:
            own.append(f"account reads like it ({clean(', '.join(alike['words']))})")
        rows.append([str(i), pct(r["probability"]), code(r["condition"]), clean(r["name"]),
                     ", ".join(own) or "—", ", ".join(code(f) for f in r["against"][:3]) or "—"])
    rows.append(["", pct(doc["none_of_the_known"]), "—", "none of the known conditions", "", ""])
    return ["## Differential", "",
            *_table(["#", "P", "condition", "name", "distinctive evidence for", "against"], rows,
                    ["--:", "--:", "---", "---", "---", "---"]), ""]


def _tests_run(doc: dict[str, Any]) -> list[str]:
    out = ["## Tests run", ""]
    if not doc["probes"]:
        return out + ["_No probes run (`--no-probes`): reasoned from symptoms alone._", ""]
    counts: dict[str, int] = {}
    for p in doc["probes"]:
        counts[p["status"]] = counts.get(p["status"], 0) + 1
    out += [", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; the whole diagnosis took {doc['duration_s']:.2f} s.", ""]
    rows = [[code(p["name"]) + (" (second pass)" if p.get("pass") == 2 else ""), p["status"],
             f"{p['duration_s']:.3f} s", clean(p["detail"])]
            for p in sorted(doc["probes"], key=lambda p: (p["name"], p.get("pass", 1)))]
    return out + _table(["probe", "status", "duration", "detail"], rows, ["---", "---", "--:", "---"]) + [""]


def _next_tests(doc: dict[str, Any]) -> list[str]:
    out = ["## Next tests" if doc["enough_to_go_on"] else "## Questions to answer", ""]
    if not doc["next_tests"]:
        return out + ["_No test left would change the ranking much._", ""]
    for i, t in enumerate(doc["next_tests"], 1):
        how = "run the probe" if t["how"] == "probe" else "ask"
        out.append(f"{i}. {clean(t['question'])} ({code(t['finding'])}, {how}, {t['gain']:.2f} bits)")
    return out + [""]


def _remedy(doc: dict[str, Any]) -> list[str]:
    if not doc["differential"]:
        return []
    lead = doc["differential"][0]
    out = [f"## Remedy for {code(lead['condition'])}", "",
           "Safe steps first; steps that cause **downtime** or **data loss** are marked.", ""]
    for i, s in enumerate(lead["remedy_steps"], 1):
        mark = "" if s["risk"] == "safe" else f"**[{s['risk'].upper()}]** "
        command = f" — {code(s['command'])}" if s["command"] else ""
        out.append(f"{i}. {mark}{clean(s['step'])}{command}")
    if lead["avoid"]:
        out += ["", "### What not to do", ""] + [f"- {clean(a)}" for a in lead["avoid"]]
    return out + [""]


def _timeline(doc: dict[str, Any]) -> list[str]:
    out = ["## Timeline of changes", ""]
    if not doc["timeline"]:
        return out + ["_No dated change, restart or first error was found._", ""]
    rows = [[clean(e["when"]), e["kind"], clean(e["what"]), code(e["finding"])] for e in doc["timeline"]]
    return out + _table(["when", "kind", "what", "finding"], rows) + [""]


def render_document(doc: dict[str, Any], kb: KnowledgeBase) -> str:
    """The incident note for a ``prodx.diagnosis/1`` document diagnosed with ``kb``."""
    enough = doc["enough_to_go_on"]
    lead = doc["differential"][0] if doc["differential"] and enough else None
    title = f"Incident note: {clean(doc['host'])}"
    title += f" — {clean(lead['name'])}" if lead else " — no known condition" if enough else " — not enough to go on"
    lines = [f"# {title}", "",
             f"_Diagnosed by prodx at {clean(doc['started_at'])} on {clean(doc['host'])}._", ""]
    lines += _summary(doc, kb)
    lines += _symptoms(doc, kb)
    lines += _findings(doc, kb)
    # Not enough to go on: no ranking by prior, no remedy for a condition nothing points to.
    lines += _differential(doc) if enough else []
    lines += _tests_run(doc)
    lines += _next_tests(doc)
    lines += _remedy(doc) if enough else []
    lines += _timeline(doc)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_markdown(d: Diagnosis) -> str:
    """``prodx diagnose --markdown``: the diagnosis as an incident note."""
    return render_document(to_document(d), d.kb)
