"""Benchmark: how much of what operators wrote in real incidents prodx understands.

Each stated symptom line and each observation line of the shared cases
(``/work/shared/cases/*.yaml``, public postmortems paraphrased) goes through
``prodx.engine.symptoms.match_symptoms`` on its own; a line is covered when it maps to at least
one ``symptom.*`` finding (present or absent). Prints, per case and overall, covered/total for
symptoms and observations, then every line that maps to nothing with the nearest known
symptoms, so a KB author sees where the catalogue is thin. Lines of pure context ("Ubuntu
16.04 with MySQL 5.7") rightly map to nothing, so 100 % is not the goal.

    python bench/symptoms.py
    python bench/symptoms.py --cases DIR --json /tmp/symptoms.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from prodx.engine.symptoms import match_symptoms
from prodx.kb.loader import KnowledgeBase, load_kb

CASES_DIR = Path(__file__).resolve().parents[2] / "shared" / "cases"
KINDS = ("symptoms", "observations")


def measure_line(text: str, kb: KnowledgeBase) -> dict[str, Any]:
    """One line: the symptom ids it maps to (with their state), and the nearest known
    symptoms when it maps to none."""
    findings, unmatched = match_symptoms([text], kb)
    nearest = list(unmatched[0].nearest) if not findings and unmatched else []
    return {"text": text, "maps_to": [f"{f.id}={f.state.value}" for f in findings], "nearest": nearest}


def measure(cases_dir: Path, kb: KnowledgeBase) -> list[dict[str, Any]]:
    """Every case's lines, measured; empty when the folder holds no case."""
    out = []
    for path in sorted(cases_dir.glob("*.yaml")):
        case = yaml.safe_load(path.read_text(encoding="utf-8"))
        out.append({"id": case.get("id", path.stem),
                    **{kind: [measure_line(line, kb) for line in case.get(kind) or []] for kind in KINDS}})
    return out


def _ratio(lines: list[dict[str, Any]]) -> tuple[int, int]:
    return sum(1 for line in lines if line["maps_to"]), len(lines)


def _fmt(covered: int, total: int) -> str:
    """covered/total with the share.

    >>> _fmt(66, 79), _fmt(0, 0)
    ('66/79 (84 %)', '0/0 (-)')
    """
    share = f"{covered / total:.0%}".replace("%", " %") if total else "-"
    return f"{covered}/{total} ({share})"


def report(cases: list[dict[str, Any]]) -> str:
    width = max((len(c["id"]) for c in cases), default=4)
    lines = [f"{'case':<{width}}  {'symptoms':>14}  {'observations':>14}  {'all lines':>14}"]
    for c in cases:
        s, o = _ratio(c["symptoms"]), _ratio(c["observations"])
        lines.append(f"{c['id']:<{width}}  {_fmt(*s):>14}  {_fmt(*o):>14}  {_fmt(s[0] + o[0], s[1] + o[1]):>14}")
    sym = _ratio([line for c in cases for line in c["symptoms"]])
    obs = _ratio([line for c in cases for line in c["observations"]])
    lines.append(f"{'overall':<{width}}  {_fmt(*sym):>14}  {_fmt(*obs):>14}  {_fmt(sym[0] + obs[0], sym[1] + obs[1]):>14}")
    silent = [c["id"] for c in cases if not any(line["maps_to"] for k in KINDS for line in c[k])]
    lines.append(f"cases with no line understood: {len(silent)}" + (f" ({', '.join(silent)})" if silent else ""))
    lines += ["", "Lines that map to no symptom, with the nearest known symptoms:"]
    for c in cases:
        for kind in KINDS:
            for line in c[kind]:
                if not line["maps_to"]:
                    near = ", ".join(line["nearest"]) or "none"
                    lines.append(f"  [{c['id'][:3]} {kind[:3]}] {line['text']}\n      nearest: {near}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=Path, default=CASES_DIR, help=f"Folder of case YAML files (default {CASES_DIR}).")
    parser.add_argument("--json", dest="json_path", type=Path, help="Also write the measurements as JSON to this file.")
    args = parser.parse_args(argv)
    cases = measure(args.cases, load_kb())
    if not cases:
        print(f"symptoms: no cases in {args.cases}", file=sys.stderr)
        return 2
    print(report(cases))
    if args.json_path:
        args.json_path.write_text(json.dumps({"schema": "prodx.bench-symptoms/1", "cases": cases}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
