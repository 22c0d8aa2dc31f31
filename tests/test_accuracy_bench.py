"""The accuracy benchmark's pure parts: scoring, calibration, Brier, cases (no lab run)."""

from __future__ import annotations

import doctest
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def lib():
    spec = importlib.util.spec_from_file_location("accuracy_lib", BENCH / "accuracy_lib.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["accuracy_lib"] = module
    spec.loader.exec_module(module)
    return module


def _doc(*ranked: tuple[str, float], none: float = 0.0) -> dict:
    return {"differential": [{"condition": c, "probability": p} for c, p in ranked], "none_of_the_known": none}


def test_accuracy_lib_doctests_pass(lib):
    failures, _tried = doctest.testmod(lib)
    assert failures == 0


def test_score_accepted_alternate_in_second_place_is_top3_not_top1(lib):
    doc = _doc(("inode-exhaustion", 0.5), ("disk-full", 0.3), ("memory-oom", 0.1), none=0.1)
    doc["findings"] = [{"id": "storage.inodes_exhausted", "state": "present"}, {"id": "storage.full", "state": "absent"}]
    row = lib.outcome("lab", "x", "profile", ("log-growth", "disk-full"), doc)
    assert (row.leader, row.rank, row.top1, row.top3) == ("inode-exhaustion", 2, False, True)
    assert "x (profile) led by inode-exhaustion, then disk-full, memory-oom; present: storage.inodes_exhausted" \
        in lib.outcome_table([row])


def test_summary_scenario_that_cannot_run_here_is_left_out_of_accuracy(lib):
    rows = [lib.outcome("lab", "a", "profile", ("x",), _doc(("x", 0.8), none=0.2), seconds=1.0),
            lib.outcome("lab", "b", "-", ("y",), None, skipped="needs root")]
    summary = lib.summarize(rows)
    assert (summary.runs, summary.scored, summary.top1, summary.top3) == (2, 1, 1, 1)


def test_summary_diagnosis_that_failed_counts_as_a_miss(lib):
    rows = [lib.outcome("lab", "a", "profile", ("x",), _doc(("x", 0.8), none=0.2), seconds=1.0),
            lib.outcome("lab", "b", "profile", ("y",), None, seconds=0.3, error="exit 3: internal error")]
    summary = lib.summarize(rows)
    assert (summary.scored, summary.top1, summary.top3, summary.failed) == (2, 1, 1, ("b (profile)",))
    assert "ERROR" in lib.outcome_table(rows)
    # No diagnosis predicts nothing: a miss, not a confident one, and out of the calibration.
    assert [b.count for b in lib.calibration(rows)] == [0, 0, 1, 0] and not rows[1].confident_wrong
    assert lib.brier_leader(rows) == pytest.approx(0.04)


def test_summary_confident_wrong_leader_is_flagged(lib):
    rows = [lib.outcome("lab", "a", "profile", ("x",), _doc(("y", 0.93), ("x", 0.05), none=0.02)),
            lib.outcome("lab", "b", "profile", ("x",), _doc(("y", 0.89), ("x", 0.1), none=0.01))]
    assert lib.summarize(rows).confident_wrong == ("a (profile)",)


def test_calibration_bands_count_right_and_wrong_per_band(lib):
    rows = [lib.outcome("lab", str(i), "p", ("x",), _doc((lead, p), none=(1 - p) / 4))
            for i, (lead, p) in enumerate([("x", 0.3), ("y", 0.4), ("x", 0.55), ("x", 0.75), ("y", 0.8),
                                           ("x", 0.95), ("x", 1.0)])]
    bands = lib.calibration(rows)
    assert [(b.count, b.correct) for b in bands] == [(2, 1), (1, 1), (2, 1), (2, 2)]
    assert bands[0].accuracy == 0.5 and bands[3].mean_predicted == pytest.approx(0.975)


def test_brier_leader_perfectly_sure_and_right_is_zero_and_sure_and_wrong_is_one(lib):
    right = lib.outcome("lab", "a", "p", ("x",), _doc(("x", 1.0)))
    wrong = lib.outcome("lab", "b", "p", ("x",), _doc(("y", 1.0)))
    assert lib.brier_leader([right]) == 0.0
    assert lib.brier_leader([wrong]) == 1.0
    assert lib.brier_leader([right, wrong]) == 0.5
    assert lib.brier_leader([]) is None


def test_brier_multiclass_counts_accepted_as_one_class_and_unreported_mass(lib):
    # x and its accepted alternate hold 0.6; y 0.2, none 0.1; 0.1 is left unreported.
    row = lib.outcome("lab", "a", "p", ("x", "x2"), _doc(("x", 0.4), ("y", 0.2), ("x2", 0.2), none=0.1))
    assert lib.brier_multiclass([row]) == pytest.approx(0.4 ** 2 + 0.2 ** 2 + 0.1 ** 2 + 0.1 ** 2)


def test_case_with_other_root_cause_scores_none_of_the_known_and_alternates(lib, tmp_path):
    (tmp_path / "001-a.yaml").write_text(
        "id: 001-a\nsymptoms: [CPU at 100 %]\nobservations: [a process named kswapd0]\n"
        "root_cause: other\nacceptable_alternates: [runaway-process]\n", encoding="utf-8")
    (tmp_path / "002-b.yaml").write_text("id: 002-b\nsymptoms: [x]\nroot_cause: other\n", encoding="utf-8")
    first, second = lib.load_cases(tmp_path)
    assert first.accepted == ("none-of-the-known", "runaway-process")
    assert lib.case_argv(first)[-4:] == ["--symptom", "CPU at 100 %", "--symptom", "a process named kswapd0"]
    named = lib.outcome("case", second.id, "-", second.accepted, _doc(("runaway-process", 0.7), none=0.3))
    assert (second.accepted, named.top1, named.top3) == (("none-of-the-known",), False, True)
    unnamed = lib.outcome("case", second.id, "-", second.accepted, _doc(("runaway-process", 0.3), none=0.7))
    assert (unnamed.leader, unnamed.top1) == ("none-of-the-known", True)


def test_score_none_of_the_known_above_the_right_condition_costs_it_a_rank(lib):
    row = lib.outcome("case", "a", "-", ("disk-full",), _doc(("disk-full", 0.2), ("memory-oom", 0.1), none=0.6))
    assert (row.leader, row.rank, row.top1, row.top3) == ("none-of-the-known", 2, False, True)


def test_accuracy_cases_only_on_a_small_case_folder_prints_figures_and_json(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "001-full.yaml").write_text(
        "id: 001-full\nsymptoms: ['write failed: No space left on device']\nroot_cause: disk-full\n"
        "acceptable_alternates: [log-growth]\ndifficulty: easy\n", encoding="utf-8")
    out_json = tmp_path / "acc.json"
    proc = subprocess.run([sys.executable, str(BENCH / "accuracy.py"), "--cases-only", "--cases", str(cases),
                           "--json", str(out_json)], capture_output=True, text=True, timeout=120, check=True)
    assert "top-3 accuracy  1/1  100.0 %" in proc.stdout
    doc = json.loads(out_json.read_text())
    assert doc["cases"]["rows"][0]["name"] == "001-full"
    assert doc["cases"]["symptoms+observations"]["top3"] == 1 and doc["cases"]["symptoms only"]["top3"] == 1


def test_paraphrase_bench_keeps_the_test_halfs_misses_out_of_sight_unless_asked():
    """`-v` lists the misses of the halves one may tune on; the test half's only with
    --show-test, so that tuning the words never reads them by accident."""
    run = [sys.executable, str(BENCH / "paraphrases.py"), "--half", "dev", "--half", "test", "-v"]
    hidden = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    shown = subprocess.run([*run, "--show-test"], capture_output=True, text=True, check=True).stdout
    dev_part, test_part = hidden.split("== test half ==")
    assert "    missed" in dev_part or "    denial" in dev_part
    assert "--show-test" in test_part and not any(
        line.startswith(("    missed", "    denial", "    alarm")) for line in test_part.splitlines())
    assert any(line.startswith(("    missed", "    denial", "    alarm"))
               for line in shown.split("== test half ==")[1].splitlines())


def test_reports_yaml_is_what_the_tuning_collections_give_and_never_reads_the_held_out_half():
    # Regenerating must give the committed file: a phrase change without `python
    # bench/learn_reports.py` would leave the blended likelihoods counted by an older reading.
    proc = subprocess.run([sys.executable, str(BENCH / "learn_reports.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sys.path.insert(0, str(BENCH))
    try:
        import learn_reports
    finally:
        sys.path.remove(str(BENCH))
    assert "heldout" not in learn_reports.COLLECTIONS
    with pytest.raises(ValueError):
        learn_reports.count(("tuning", "heldout"))


def test_the_resemblance_folds_run_on_the_first_looks_and_make_no_confident_wrong_leader():
    # bench/alike_folds.py: each collection's first look mixed with centroids learned from
    # the other collections, as the engine mixes them without probes.
    proc = subprocess.run([sys.executable, str(BENCH / "alike_folds.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    mixed = proc.stdout.split("== mixed")[1]
    pooled = [line for line in mixed.splitlines() if line.strip().startswith("pooled")]
    assert len(pooled) == 2
    assert all(line.endswith("wrong at P>=0.9: 0") for line in pooled)
