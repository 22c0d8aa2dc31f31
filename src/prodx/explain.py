"""``prodx explain ID``: a condition or a finding explained to a person.

Where ``prodx kb show`` is the KB author's view (every likelihood ratio, nearest competitors),
this is the reader's: what it is, how prodx observes it (the probe and what it reads, taken
from the probe's own docstrings, or the question it asks), what it explains (a condition's
symptoms and why; the conditions a finding supports or argues against, with P against the
finding's leak), and how to rule it in or out (the KB's confirm and rule-out tests, commands
included). The numbers come from :mod:`prodx.kb.docs`; nothing is recomputed here. The same
KB gives the same bytes.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from prodx.kb.docs import condition_view, finding_view, nearest_ids
from prodx.kb.loader import KnowledgeBase

SCHEMA = "prodx.explain/1"
#: Findings shown under "what points to it" and "what argues against it" for a condition.
TELLING_FINDINGS = 6

__all__ = ["SCHEMA", "explain_view", "nearest_ids", "print_rich", "render_text"]


def _first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line; empty for no docstring.

    >>> _first_paragraph('''Reads /proc/mounts.
    ...
    ... More detail.''')
    'Reads /proc/mounts.'
    """
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n", 1)[0].split())


def probe_reads(name: str) -> dict[str, str]:
    """What probe ``name`` examines (its class docstring) and what its module reads (the
    module docstring's first paragraph). Empty strings when no such probe is registered."""
    from prodx.probes import load_all

    cls = load_all().get(name)
    if cls is None:
        return {"probe": name, "what": "", "reads": ""}
    module = importlib.import_module(cls.__module__)
    return {"probe": name, "what": _first_paragraph(cls.__doc__), "reads": _first_paragraph(module.__doc__)}


def _how_observed(kb: KnowledgeBase, fid: str) -> dict[str, Any]:
    fdef = kb.findings[fid]
    out: dict[str, Any] = {"observed_by": fdef.observed_by, "question": fdef.question, "cost": fdef.cost}
    if fdef.observed_by == "probe" and fdef.probe:
        out.update(probe_reads(fdef.probe))
    return out


def _tests_naming(kb: KnowledgeBase, fid: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    confirm, rule_out = [], []
    for cid in sorted(kb.conditions):
        cond = kb.conditions[cid]
        confirm += [{"condition": cid, "how": t.how} for t in cond.confirm if t.finding == fid]
        rule_out += [{"condition": cid, "how": t.how} for t in cond.rule_out if t.finding == fid]
    return confirm, rule_out


def _condition(kb: KnowledgeBase, cid: str) -> dict[str, Any]:
    view = condition_view(kb, cid)
    rows = [{**f, "how": _how_observed(kb, f["finding"]) if f["finding"] in kb.findings else {}} for f in view["findings"]]
    return {
        "kind": "condition", "id": cid, "name": view["name"], "summary": view["summary"], "prior": view["prior"],
        "organ": view["organ"], "chain": view["chain"], "refined_by": view["refined_by"],
        "points_to_it": [r for r in rows if r["p"] > r["leak"]][:TELLING_FINDINGS],
        "argues_against_it": [r for r in rows if r["p"] < r["leak"]][:TELLING_FINDINGS],
        "explains": [{**e, "description": kb.findings[e["finding"]].description if e["finding"] in kb.findings else ""}
                     for e in view["explains"]],
        "confirm": view["confirm"], "rule_out": view["rule_out"],
        "remedy": view["remedy"], "avoid": view["avoid"],
        "nearest": [n["condition"] for n in view["nearest"]],
    }


def _finding(kb: KnowledgeBase, fid: str) -> dict[str, Any]:
    view = finding_view(kb, fid)
    leak = view["leak"]
    confirm, rule_out = _tests_naming(kb, fid)
    explained_by = [{"condition": cid, "why": kb.conditions[cid].explains[fid]}
                    for cid in sorted(kb.conditions) if fid in kb.conditions[cid].explains]
    return {
        "kind": "finding", "id": fid, "description": view["description"], "leak": leak,
        "how": _how_observed(kb, fid), "phrases": view["phrases"],
        "supports": [c for c in view["conditions"] if c["p"] > leak],
        "argues_against": [c for c in view["conditions"] if c["p"] < leak],
        "explained_by": explained_by,
        "confirm": confirm, "rule_out": rule_out,
        "signatures": view["signatures"],
    }


def explain_view(kb: KnowledgeBase, item_id: str) -> dict[str, Any]:
    """Everything ``prodx explain`` says about a condition or finding id, as plain data.

    Raises KeyError when the KB has neither (``nearest_ids`` names the close ones).
    """
    if item_id in kb.conditions:
        return _condition(kb, item_id)
    if item_id in kb.findings:
        return _finding(kb, item_id)
    raise KeyError(item_id)


def _how_line(how: dict[str, Any]) -> str:
    if how.get("observed_by") == "probe" and how.get("probe"):
        text = f"probe {how['probe']}"
        if how.get("what"):
            text += f": {how['what']}"
        return text
    return f"asked: {how.get('question', '')}"


def _pct(p: float) -> str:
    """A probability for a person.

    >>> _pct(0.9), _pct(0.003)
    ('90 %', '0.3 %')
    """
    return f"{p * 100:.0f} %" if p == 0 or p >= 0.1 else f"{p * 100:.2g} %"


def lines(view: dict[str, Any]) -> list[tuple[str, str]]:
    """The explanation as (kind, text) lines; kind is ``title``, ``heading``, ``text`` or
    ``item``. Plain text and rich output are both drawn from these."""
    out: list[tuple[str, str]] = []
    if view["kind"] == "condition":
        out.append(("title", f"{view['id']} — {view['name']}"))
        meta = f"a condition of {view['organ'].lower()}; prior {view['prior']:.3f}"
        if len(view["chain"]) > 1:
            meta += "; a specific cause of " + " → ".join(view["chain"][1:])
        if view["refined_by"]:
            meta += "; its specific causes: " + ", ".join(view["refined_by"])
        out += [("text", meta), ("heading", "What it is"), ("text", view["summary"])]
        out.append(("heading", "How prodx observes it (P if this condition vs leak, the base rate)"))
        for f in view["points_to_it"]:
            out.append(("item", f"{f['finding']} ({_pct(f['p'])} vs {_pct(f['leak'])}): {f['description']}"))
            if f["how"]:
                out.append(("detail", _how_line(f["how"])))
        if view["argues_against_it"]:
            out.append(("heading", "What argues against it when present"))
            out += [("item", f"{f['finding']} ({_pct(f['p'])} vs {_pct(f['leak'])}): {f['description']}")
                    for f in view["argues_against_it"]]
        out.append(("heading", "What it explains"))
        out += [("item", f"{e['finding']}: {e['why']}") for e in view["explains"]] or [("text", "no reported symptom")]
        out.append(("heading", "Rule it in"))
        out += [("item", f"{t['finding']}: {t['how']}") for t in view["confirm"]] or [("text", "no confirm test in the KB")]
        out.append(("heading", "Rule it out"))
        out += [("item", f"{t['finding']}: {t['how']}") for t in view["rule_out"]] or [("text", "no rule-out test in the KB")]
        if view["nearest"]:
            out += [("heading", "Often confused with"), ("text", ", ".join(view["nearest"])
                                                          + f" (prodx kb show {view['id']} says what tells them apart)")]
        out.append(("heading", "Remedy (safe first)"))
        for s in view["remedy"]:
            mark = "" if s["risk"] == "safe" else f"[{s['risk'].upper()}] "
            out.append(("item", mark + s["step"]))
            if s["command"]:
                out.append(("command", s["command"]))
        if view["avoid"]:
            out.append(("heading", "Do not"))
            out += [("item", a) for a in view["avoid"]]
        return out
    out += [("title", view["id"]), ("text", view["description"]), ("heading", "How prodx observes it")]
    how = view["how"]
    if how.get("observed_by") == "probe" and how.get("probe"):
        out.append(("item", f"the probe {how['probe']}" + (f": {how['what']}" if how.get("what") else "")))
        if how.get("reads"):
            out.append(("detail", how["reads"]))
        if how.get("question"):
            out.append(("item", f"or ask: {how['question']}"))
    else:
        out.append(("item", f"a question for you: {how.get('question', '')}"))
        if view["phrases"]:
            out.append(("detail", "understood in words such as: " + "; ".join(f'"{p}"' for p in view["phrases"][:6])))
    out.append(("text", f"leak {_pct(view['leak'])}: how often it is present on a sick server when no known condition is the cause"))
    out.append(("heading", "What it supports (P if that condition vs leak)"))
    out += [("item", f"{c['condition']} ({_pct(c['p'])} vs {_pct(view['leak'])})") for c in view["supports"]] or [("text", "no condition")]
    if view["argues_against"]:
        out.append(("heading", "What it argues against when present"))
        out += [("item", f"{c['condition']} ({_pct(c['p'])} vs {_pct(view['leak'])})") for c in view["argues_against"]]
    if view["explained_by"]:
        out.append(("heading", "Explained by"))
        out += [("item", f"{e['condition']}: {e['why']}") for e in view["explained_by"]]
    if view["confirm"] or view["rule_out"]:
        out.append(("heading", "How to check it yourself"))
        seen: set[str] = set()
        for t in view["confirm"] + view["rule_out"]:
            if t["how"] not in seen:
                seen.add(t["how"])
                out.append(("item", f"{t['how']} (a test for {t['condition']})"))
    if view["signatures"]:
        out.append(("heading", "Log lines that show it"))
        out += [("item", f"{s['id']}: {s['pattern']}") for s in view["signatures"]]
    return out


_INDENT = {"title": "", "heading": "", "text": "", "item": "  - ", "detail": "      ", "command": "      $ "}


def render_text(view: dict[str, Any]) -> str:
    """The explanation as plain text (piped output)."""
    out: list[str] = []
    for kind, text in lines(view):
        if kind == "heading":
            out += ["", text + ":"]
        else:
            out.append(_INDENT[kind] + text)
    return "\n".join(out) + "\n"


def print_rich(view: dict[str, Any], console: Any) -> None:
    """The explanation on a terminal, with headings and commands styled."""
    from prodx.report.safe import escape

    style = {"title": "bold", "heading": "bold cyan", "text": "", "item": "", "detail": "dim", "command": "green"}
    for kind, text in lines(view):
        if kind == "heading":
            console.print()
        body = escape(_INDENT[kind] + text)
        console.print(f"[{style[kind]}]{body}[/]" if style[kind] else body)
