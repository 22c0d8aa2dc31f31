"""The ``prodx.diagnosis/1`` JSON document (SPEC §3). Fields may be added, never changed."""

from __future__ import annotations

import json
from typing import Any

from prodx.diagnosis import Diagnosis
from prodx.kb.loader import ConditionDef

SCHEMA = "prodx.diagnosis/1"
_RISK_ORDER = {"safe": 0, "downtime": 1, "data-loss": 2}


def ordered_remedy(cond: ConditionDef) -> list[Any]:
    """Remedy steps, safe ones first, the KB's order kept within a risk level."""
    return sorted(cond.remedy, key=lambda r: _RISK_ORDER[r.risk])


def remedy_text(step: Any) -> str:
    text = step.step if step.risk == "safe" else f"[{step.risk.upper()}] {step.step}"
    return f"{text} — `{step.command}`" if step.command else text


#: Timeline entries kept: the most recent changes, and every first error.
_TIMELINE_MAX = 25


def _ts(text: str | None) -> float | None:
    from datetime import datetime

    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def timeline(d: Diagnosis) -> list[dict[str, Any]]:
    """What changed, in time order, against when the symptoms began: the ``events`` of
    present ``change.*`` findings, services that restarted (``process.recent_restart``), and
    the first line of each log finding (``first_ts`` of its hits). Empty when nothing dated
    was found."""
    from datetime import datetime

    out: list[dict[str, Any]] = []
    for f in d.findings:
        if not f.present:
            continue
        if f.id.startswith("change."):
            for e in f.evidence.get("events", []):
                if e.get("ts") is not None:
                    out.append({"ts": e["ts"], "when": e["when"], "kind": e["kind"], "what": e["what"], "finding": f.id})
        elif f.id == "process.recent_restart":
            for s in f.evidence.get("services", []):
                ts = _ts(s.get("started"))
                if ts is not None:
                    out.append({"ts": ts, "when": s["started"], "kind": "restart",
                                "what": f"{s.get('service', '?')} (pid {s.get('pid', '?')}) started", "finding": f.id})
        elif f.id.startswith("log."):
            firsts = [(t, h) for h in f.evidence.get("hits", []) if (t := _ts(h.get("first_ts"))) is not None]
            if firsts:
                t, h = min(firsts, key=lambda x: x[0])
                out.append({"ts": t, "when": datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds"),
                            "kind": "error", "what": f"first {f.id} line: {str(h.get('example', ''))[:120]}",
                            "finding": f.id})
    out.sort(key=lambda e: (e["ts"], e["kind"], e["what"]))
    errors = [e for e in out if e["kind"] == "error"]
    changes = [e for e in out if e["kind"] != "error"][-_TIMELINE_MAX:]
    return sorted(changes + errors, key=lambda e: (e["ts"], e["kind"], e["what"]))


def to_document(d: Diagnosis) -> dict[str, Any]:
    kb = d.kb
    differential = []
    for row in d.differential.ranked:
        cond = kb.conditions[row.condition]
        steps = ordered_remedy(cond)
        differential.append(
            {
                "condition": row.condition,
                "name": cond.name,
                "probability": round(row.probability, 4),
                "family_probability": round(row.family_probability, 4),
                "for": list(row.support),
                "against": list(row.against),
                "explains": list(row.explains),
                "remedy": [remedy_text(s) for s in steps],
                "remedy_steps": [{"step": s.step, "risk": s.risk, "command": s.command} for s in steps],
                "avoid": list(cond.avoid),
                "refines": kb.chain(row.condition)[1:],
                # Findings of "for" that are one event seen several ways, counted once.
                "evidence_groups": [
                    {"group": gid, "event": kb.groups[gid].event, "findings": list(fids)} for gid, fids in row.support_groups
                ],
                # How much the person's account reads like this condition's incidents, and
                # the account's words that make it so (prodx.engine.alike); null without one.
                "alike": {"share": round(row.alike, 4), "words": list(row.alike_words)} if d.alike else None,
            }
        )
    return {
        "schema": SCHEMA,
        "host": d.host,
        "started_at": d.started_at,
        "duration_s": round(d.duration_s, 3),
        "findings": [f.to_json() for f in d.findings],
        "differential": differential,
        "none_of_the_known": round(d.differential.none_probability, 4),
        # False: nothing observed or said bears on any condition; the differential is the
        # priors' and says nothing about this host (see unmatched_symptoms and next_tests).
        "enough_to_go_on": d.differential.enough_to_go_on,
        "likely": {"condition": d.differential.family_leader, "family_probability": round(d.differential.family_probability, 4)},
        "multiple_causes": [
            {"conditions": [p.first, p.second], "factor": round(p.factor, 1), "explained_only_together": list(p.explained_only_together)}
            for p in d.differential.pairs
        ],
        "next_tests": [
            {"finding": t.finding, "how": t.how, "question": t.question, "gain": round(t.gain, 4)} for t in d.next_tests
        ],
        "probes": [r.to_json() for r in d.probe_runs],
        "unmatched_symptoms": [{"text": u.text, "nearest": list(u.nearest)} for u in d.unmatched],
        "target": {
            "profile": d.profile.source,
            "user": d.target.user_name,
            "writable": d.target.writable,
            "logs": d.target.logs,
            "services": d.target.services,
            "sources": d.target_sources,
            "discovered": d.discovery.to_json() if d.discovery else None,
        },
        "timeline": timeline(d),
    }


def render_json(d: Diagnosis) -> str:
    return json.dumps(to_document(d), indent=2, sort_keys=False, default=str)
