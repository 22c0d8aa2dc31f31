"""Benchmark: how often prodx names the right cause, how sure it is, and how fast.

Two sources of truth:

- the lab (root): every scenario that can run here is staged for real in its sandbox
  (``prodx.lab.staged``, torn down on every way out, Ctrl-C included) and diagnosed by
  ``python -m prodx diagnose --json --profile <sandbox>/profile.toml`` as a child process; its
  wall time is the time to diagnosis. Each is diagnosed a second time without a profile, on
  the same staging (a separate row).
- real incidents, diagnosed from their words alone (``prodx diagnose --no-probes`` with each
  symptom and observation line as a ``--symptom``, in this process): the held-out half of the
  corpus (``bench/corpus/heldout``, never tuned on: the headline figure), its tuning half
  (``bench/corpus/tuning``), a second, third and fourth collection gathered for tuning after
  the split (``bench/corpus/tuning2``, ``tuning3``, ``tuning4``) and the shared cases
  (``/work/shared/cases``, one more tuning set); each twice, with the observations and from
  the symptoms alone. The root cause or an acceptable alternate must lead; for a cause the KB
  does not know (``other``) "none of the known conditions" is the right answer, and it takes
  its place in every ranking.

Prints a table per run (the held-out half's rows only with ``--show-heldout``: reading its
misses is how one starts tuning on it), top-1 / top-3 accuracy, the median time to
diagnosis, every wrong leader at P ≥ 0.9, and a calibration table (leader's probability band
against observed accuracy) with the Brier scores per set. Targets (issue 8): held-out half with
observations top-1 ≥ 70 %, top-3 ≥ 85 %; symptoms only top-3 ≥ 75 %; no wrong leader at
P ≥ 0.9 anywhere.

    sudo python bench/accuracy.py                      # lab and every case set
    python bench/accuracy.py --cases-only
    python bench/accuracy.py --cases-only --set tuning --set shared
    sudo python bench/accuracy.py --lab-only --scenario disk-full --scenario quota
    sudo python bench/accuracy.py --json /tmp/accuracy.json
    sudo python bench/accuracy.py --independent       # the same with evidence groups off
    python bench/accuracy.py --cases-only --files-only  # without how incidents are told

``--independent`` is the "before" of the evidence groups (README, "Correlated evidence"):
the KB's groups are dropped and every finding counts as independent evidence, as before
issue 8. ``--files-only`` is the "before" of how incidents are told (README): the symptom
likelihoods as the condition files give them, without the tuning incidents' counts. With
either, every diagnosis runs in this process (the lab's too, so times are not shown).
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
    load_cases,
    outcome,
    outcome_table,
    summarize,
    summary_lines,
)

CASES_DIR = Path(__file__).resolve().parents[2] / "shared" / "cases"
CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
#: The case sets, in the order they are reported: name → (folder, title).
CASE_SETS = {
    "heldout": (CORPUS_DIR / "heldout", "Corpus, held-out half (never tuned on)"),
    "tuning": (CORPUS_DIR / "tuning", "Corpus, tuning half"),
    "tuning2": (CORPUS_DIR / "tuning2", "Corpus, second collection (tuning)"),
    "tuning3": (CORPUS_DIR / "tuning3", "Corpus, third collection (tuning)"),
    "tuning4": (CORPUS_DIR / "tuning4", "Corpus, fourth collection (tuning)"),
    "shared": (CASES_DIR, "Shared cases (a tuning set)"),
}
#: (variant name, with the observations?)
CASE_VARIANTS = (("symptoms+observations", True), ("symptoms only", False))
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


def bench_kb(independent: bool, files_only: bool = False) -> Any:
    """The built-in KB; with ``independent`` its evidence groups dropped (every finding counts
    on its own); with ``files_only`` without how incidents are told."""
    from prodx.kb.loader import load_kb

    kb = load_kb(told=not files_only)
    if independent:
        kb.groups.clear()
        kb.group_of.clear()
    return kb


def diagnose_in_process(profile: str, kb: Any) -> tuple[dict[str, Any] | None, float, str]:
    """The lab's diagnosis in this process with ``kb``: (JSON document or None, wall seconds, error)."""
    from prodx.diagnosis import DiagnoseOptions
    from prodx.diagnosis import diagnose as run_diagnosis
    from prodx.report.diagnosis_json import to_document

    start = time.perf_counter()
    try:
        doc = to_document(run_diagnosis(DiagnoseOptions(profile_path=profile), kb=kb))
    except Exception as exc:  # noqa: BLE001 - a crash is a miss, and the bench goes on
        return None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
    return doc, time.perf_counter() - start, ""


def run_lab(names: list[str], kb: Any = None) -> list[Outcome]:
    """Stage and diagnose each scenario (all when ``names`` is empty); a row per diagnosis.
    With ``kb`` the diagnoses run in this process with it, not as `prodx diagnose` children."""
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
                    if kb is not None:
                        doc, wall, error = diagnose_in_process(str(run.profile_path) if with_profile else "", kb)
                    else:
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


def run_cases(directory: Path, name: str, kb: Any = None) -> list[Outcome]:
    """Diagnose each case of a folder from its words alone, with and without its observations;
    a row per case and variant. Runs in this process: the words are all there is to diagnose."""
    from prodx.diagnosis import DiagnoseOptions
    from prodx.diagnosis import diagnose as run_diagnosis
    from prodx.report.diagnosis_json import to_document

    cases = load_cases(directory)
    if not cases:
        raise SystemExit(f"accuracy: no cases in {directory}")
    kb = kb if kb is not None else bench_kb(False)
    out = []
    for i, case in enumerate(cases, 1):
        for variant, with_observations in CASE_VARIANTS:
            lines = list(case.symptoms + (case.observations if with_observations else ()))
            start = time.perf_counter()
            try:
                doc = to_document(run_diagnosis(DiagnoseOptions(symptoms=lines, no_probes=True), kb=kb))
                error = ""
            except Exception as exc:  # noqa: BLE001 - a crash is a miss, and the bench goes on
                doc, error = None, f"{type(exc).__name__}: {exc}"
            out.append(outcome(name, case.id, variant, case.accepted, doc,
                               seconds=time.perf_counter() - start, error=error))
        progress(f"[{i}/{len(cases)}] {name} {case.id}: {out[-2].leader or out[-2].error}")
    return out


def by_variant(rows: list[Outcome], variant: str) -> list[Outcome]:
    return [o for o in rows if o.variant == variant]


def report(lab: list[Outcome], cases: dict[str, list[Outcome]], *, lab_ran: bool, show_heldout: bool,
           timed: bool = True) -> str:
    lines: list[str] = []
    if lab_ran:
        lines += ["== Lab scenarios (real faults, prodx diagnose with and without the profile) ==",
                  outcome_table(lab), ""]
        lines += summary_lines("Lab", summarize(lab), timed=timed)
        lines += ["", "== Calibration over the lab runs =="] + calibration_lines(lab) + [""]
    for name, rows in cases.items():
        title = CASE_SETS[name][1] if name in CASE_SETS else name
        lines.append(f"== {title} (prodx diagnose --no-probes from their words) ==")
        shown = name != "heldout" or show_heldout
        if shown:
            lines += [outcome_table(rows), ""]
        for variant, _obs in CASE_VARIANTS:
            part = by_variant(rows, variant)
            lines += summary_lines(f"{title}, {variant}", summarize(part), timed=False, names=shown)
            lines += calibration_lines(part) + [""]
    return "\n".join(lines)


def figures(rows: list[Outcome]) -> dict[str, Any]:
    from accuracy_lib import brier_leader, brier_multiclass, calibration

    s = summarize(rows)
    return {"runs": s.runs, "scored": s.scored, "top1": s.top1, "top3": s.top3,
            "likely_right": s.likely_right, "median_s": s.median_s,
            "confident_wrong": list(s.confident_wrong), "failed": list(s.failed),
            "calibration": [{"low": b.low, "high": b.high, "count": b.count, "correct": b.correct,
                             "mean_predicted": b.mean_predicted} for b in calibration(rows)],
            "brier_leader": brier_leader(rows), "brier_multiclass": brier_multiclass(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--cases-only", action="store_true", help="Only the incident cases (no root needed).")
    only.add_argument("--lab-only", action="store_true", help="Only the lab scenarios.")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME", help="Only this lab scenario (repeatable).")
    parser.add_argument("--set", action="append", default=[], choices=sorted(CASE_SETS), dest="sets",
                        help="Only this case set (repeatable; default all).")
    parser.add_argument("--cases", type=Path, metavar="DIR", help="Diagnose the cases of this folder instead of the sets.")
    parser.add_argument("--show-heldout", action="store_true",
                        help="Print the held-out half's rows too (for the final report, not for tuning).")
    parser.add_argument("--json", type=Path, metavar="FILE", help="Also save every row and the figures as JSON.")
    parser.add_argument("--independent", action="store_true",
                        help="Evidence groups off: every finding counts on its own (the 'before' of the groups).")
    parser.add_argument("--files-only", action="store_true",
                        help="Symptom likelihoods as the condition files give them, without the counts of how "
                             "incidents are told (the 'before' of reports.yaml).")
    args = parser.parse_args(argv)
    lab_ran, cases_ran = not args.cases_only, not args.lab_only and not args.scenario
    if lab_ran and os.geteuid() != 0:
        parser.error("the lab needs root (loop mounts, throwaway users); use --cases-only without it")
    if args.cases:
        sets = {"cases": args.cases}
    else:
        sets = {name: CASE_SETS[name][0] for name in CASE_SETS if not args.sets or name in args.sets}
    lab: list[Outcome] = []
    cases: dict[str, list[Outcome]] = {}
    interrupted = False
    try:
        in_process = args.independent or args.files_only
        kb = bench_kb(args.independent, args.files_only)
        if lab_ran:
            lab = run_lab(args.scenario, kb if in_process else None)
        if cases_ran:
            for name, directory in sets.items():
                cases[name] = run_cases(directory, name, kb)
    except KeyboardInterrupt:
        interrupted = True
        print("accuracy: interrupted; the figures below cover the runs that finished", file=sys.stderr)
    print(report(lab, cases, lab_ran=lab_ran, show_heldout=args.show_heldout, timed=not in_process), end="")
    if args.json:
        doc: dict[str, Any] = {"schema": "prodx.accuracy/2", "interrupted": interrupted, "independent": args.independent,
                               "files_only": args.files_only,
                               "lab": {"rows": [o.as_dict() for o in lab], **figures(lab)}}
        for name, rows in cases.items():
            doc[name] = {"rows": [o.as_dict() for o in rows],
                         **{variant: figures(by_variant(rows, variant)) for variant, _obs in CASE_VARIANTS}}
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
