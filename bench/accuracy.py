"""Benchmark: how often prodx names the right cause, how sure it is, and how fast.

Two sources of truth:

- the lab (root): every scenario that can run here is staged for real in its sandbox
  (``prodx.lab.staged``, torn down on every way out, Ctrl-C included) and diagnosed by
  ``python -m prodx diagnose --json --profile <sandbox>/profile.toml`` as a child process; its
  wall time is the time to diagnosis. Each is diagnosed a second time without a profile, on
  the same staging (a separate row).
- the real incidents in ``/work/shared/cases/*.yaml``: ``prodx diagnose --no-probes --json``
  with each symptom and observation line as a ``--symptom``; the root cause or an acceptable
  alternate must lead (``other`` as root cause: only the alternates score).

Prints a table per run, top-1 / top-3 accuracy, the median time to diagnosis, every wrong
leader at P ≥ 0.9, and a calibration table (leader's probability band against observed
accuracy) with the Brier scores over the lab runs. Targets (issue 4): lab top-1 ≥ 95 %,
top-3 = 100 %, median ≤ 1.5 s, no confident wrong leader; cases top-3 ≥ 80 %.

    sudo python bench/accuracy.py                      # lab and cases
    python bench/accuracy.py --cases-only
    sudo python bench/accuracy.py --lab-only --scenario disk-full --scenario quota
    sudo python bench/accuracy.py --json /tmp/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_lib import (
    Outcome,
    calibration_lines,
    case_argv,
    load_cases,
    outcome,
    outcome_table,
    summarize,
    summary_lines,
)

CASES_DIR = Path(__file__).resolve().parents[2] / "shared" / "cases"
#: Only stops a hang; diagnose answers in about a second.
DIAGNOSE_TIMEOUT_S = 120.0


def progress(text: str) -> None:
    if sys.stderr.isatty():
        print(text, file=sys.stderr, flush=True)


def diagnose(args: list[str]) -> tuple[dict[str, Any] | None, float, str]:
    """Run ``python -m prodx ARGS`` as a child: (JSON document or None, wall seconds, error)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "prodx", *args], capture_output=True, text=True,
                              timeout=DIAGNOSE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - start, f"no answer within {DIAGNOSE_TIMEOUT_S:.0f} s"
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        return None, wall, f"exit {proc.returncode}: {tail[0][:120]}"
    try:
        return json.loads(proc.stdout), wall, ""
    except ValueError as exc:
        return None, wall, f"bad JSON: {exc}"


def run_lab(names: list[str]) -> list[Outcome]:
    """Stage and diagnose each scenario (all when ``names`` is empty); a row per diagnosis."""
    from prodx.lab import LabError, all_scenarios, staged

    scenarios = all_scenarios()
    unknown = [n for n in names if n not in scenarios]
    if unknown:
        raise SystemExit(f"accuracy: no lab scenario named {', '.join(unknown)}; known: {', '.join(scenarios)}")
    out: list[Outcome] = []
    selected = [(n, c) for n, c in scenarios.items() if not names or n in names]
    for i, (name, cls) in enumerate(selected, 1):
        scenario = cls()
        unmet = cls.needs.unmet()
        if unmet:
            out.append(outcome("lab", name, "-", scenario.accepted, None, skipped="; ".join(unmet)))
            progress(f"[{i}/{len(selected)}] {name}: skipped ({'; '.join(unmet)})")
            continue
        progress(f"[{i}/{len(selected)}] {name}: staging")
        variants = [("profile", True), ("no profile", False)]
        rows: list[Outcome] = []
        try:
            with staged(scenario) as run:
                for variant, with_profile in variants:
                    argv = ["diagnose", "--json"] + (["--profile", str(run.profile_path)] if with_profile else [])
                    doc, wall, error = diagnose(argv)
                    rows.append(outcome("lab", name, variant, scenario.accepted, doc, seconds=wall, error=error))
                    progress(f"[{i}/{len(selected)}] {name} ({variant}): {rows[-1].leader or error} "
                             f"{rows[-1].probability:.2f} in {wall:.2f} s")
        except LabError as exc:
            # The lab could not stage the fault here (a step failed): not a verdict on prodx.
            rows = [outcome("lab", name, v, scenario.accepted, None, skipped=f"lab: {exc}") for v, _ in variants]
        out += rows
    return out


def run_cases(directory: Path) -> list[Outcome]:
    """Diagnose each shared case from its words alone; a row per case."""
    cases = load_cases(directory)
    if not cases:
        raise SystemExit(f"accuracy: no cases in {directory}")
    out = []
    for i, case in enumerate(cases, 1):
        doc, wall, error = diagnose(case_argv(case))
        out.append(outcome("case", case.id, case.difficulty or "-", case.accepted, doc, seconds=wall, error=error))
        progress(f"[{i}/{len(cases)}] {case.id}: {out[-1].leader or error}")
    return out


def report(lab: list[Outcome], cases: list[Outcome], *, lab_ran: bool, cases_ran: bool) -> str:
    lines: list[str] = []
    if lab_ran:
        lines += ["== Lab scenarios (real faults, prodx diagnose with and without the profile) ==",
                  outcome_table(lab), ""]
        lines += summary_lines("Lab", summarize(lab), timed=True)
        lines += ["", "== Calibration over the lab runs =="] + calibration_lines(lab) + [""]
    if cases_ran:
        lines += ["== Shared cases (prodx diagnose --no-probes, symptoms and observations) ==",
                  outcome_table(cases), ""]
        lines += summary_lines("Cases", summarize(cases), timed=False) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--cases-only", action="store_true", help="Only the shared cases (no root needed).")
    only.add_argument("--lab-only", action="store_true", help="Only the lab scenarios.")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME", help="Only this lab scenario (repeatable).")
    parser.add_argument("--cases", type=Path, default=CASES_DIR, metavar="DIR", help=f"Case folder (default {CASES_DIR}).")
    parser.add_argument("--json", type=Path, metavar="FILE", help="Also save every row and the figures as JSON.")
    args = parser.parse_args(argv)
    lab_ran, cases_ran = not args.cases_only, not args.lab_only and not args.scenario
    if lab_ran and os.geteuid() != 0:
        parser.error("the lab needs root (loop mounts, throwaway users); use --cases-only without it")
    lab: list[Outcome] = []
    cases: list[Outcome] = []
    interrupted = False
    try:
        if lab_ran:
            lab = run_lab(args.scenario)
        if cases_ran:
            cases = run_cases(args.cases)
    except KeyboardInterrupt:
        interrupted = True
        print("accuracy: interrupted; the figures below cover the runs that finished", file=sys.stderr)
    print(report(lab, cases, lab_ran=lab_ran, cases_ran=cases_ran), end="")
    if args.json:
        def figures(rows: list[Outcome]) -> dict[str, Any]:
            s = summarize(rows)
            return {"runs": s.runs, "scored": s.scored, "top1": s.top1, "top3": s.top3,
                    "likely_right": s.likely_right, "median_s": s.median_s,
                    "confident_wrong": list(s.confident_wrong), "failed": list(s.failed)}

        from accuracy_lib import brier_leader, brier_multiclass, calibration

        doc = {"schema": "prodx.accuracy/1", "interrupted": interrupted,
               "lab": {"rows": [o.as_dict() for o in lab], **figures(lab),
                       "calibration": [{"low": b.low, "high": b.high, "count": b.count, "correct": b.correct,
                                        "mean_predicted": b.mean_predicted} for b in calibration(lab)],
                       "brier_leader": brier_leader(lab), "brier_multiclass": brier_multiclass(lab)},
               "cases": {"rows": [o.as_dict() for o in cases], **figures(cases)}}
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
