"""Engine scenarios: findings and symptoms in, expected differential out, against the real KB.

Each ``tests/engine_scenarios/*.yaml`` holds a ``description``, ``findings`` (id → present or
absent; a finding left out is unknown) and ``expect``:

- ``leader``: the condition ranked first, or ``none-of-the-known`` when that hypothesis must
  beat every condition;
- ``one_of``: the leader is one of these;
- ``min_probability``: the leader's posterior is at least this;
- ``max_probability``: no condition reaches this;
- ``top3``: all of these are among the first three, in this relative order;
- ``top3_any``: at least one of these is among the first three;
- ``not_leader``: none of these is ranked first.

The other tests check engine properties on the same KB: determinism, probability mass,
unknown findings, the next test between two close leaders, and pair detection.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from prodx.engine.next_test import next_tests
from prodx.engine.posterior import NONE_ID, Differential, observed_states, rank
from prodx.kb.loader import KnowledgeBase, load_kb
from prodx.model import FindingState

SCENARIO_DIR = Path(__file__).parent / "engine_scenarios"
SCENARIOS = sorted(SCENARIO_DIR.glob("*.yaml"))
_EXPECT_KEYS = {"leader", "one_of", "min_probability", "max_probability", "top3", "top3_any", "not_leader"}


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_kb()


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _states(findings: dict[str, str]) -> dict[str, FindingState]:
    return {fid: FindingState(state) for fid, state in findings.items()}


def _all(kb: KnowledgeBase, states: dict[str, FindingState]) -> Differential:
    return rank(kb, states, limit=len(kb.conditions))


def _table(diff: Differential) -> str:
    rows = [f"  {r.condition:<28} {r.probability:.3f}" for r in diff.ranked[:5]]
    return "\n".join([*rows, f"  {NONE_ID:<28} {diff.none_probability:.3f}"])


def test_scenario_files_exist_in_number() -> None:
    assert len(SCENARIOS) >= 20


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_file_is_well_formed_against_kb(kb: KnowledgeBase, path: Path) -> None:
    scenario = _load(path)
    assert set(scenario) == {"description", "findings", "expect"}, path.name
    assert scenario["description"].strip()
    unknown_ids = sorted(set(scenario["findings"]) - set(kb.findings))
    assert not unknown_ids, f"{path.name}: findings not in the catalogue: {unknown_ids}"
    assert set(scenario["findings"].values()) <= {"present", "absent"}, "leave a finding out to make it unknown"
    expect = scenario["expect"]
    assert expect and set(expect) <= _EXPECT_KEYS, f"{path.name}: unknown expect keys {set(expect) - _EXPECT_KEYS}"
    named = [expect.get("leader"), *expect.get("one_of", ()), *expect.get("top3", ()),
             *expect.get("top3_any", ()), *expect.get("not_leader", ())]
    missing = [c for c in named if c and c != NONE_ID and c not in kb.conditions]
    assert not missing, f"{path.name}: conditions not in the KB: {missing}"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_findings_rank_expected_leader(kb: KnowledgeBase, path: Path) -> None:
    scenario = _load(path)
    expect = scenario["expect"]
    diff = _all(kb, _states(scenario["findings"]))
    order = [r.condition for r in diff.ranked]
    top = diff.ranked[0]
    shown = f"{path.name}: {scenario['description']}\n{_table(diff)}"

    if expect.get("leader") == NONE_ID:
        assert diff.none_probability > top.probability, shown
    elif "leader" in expect:
        assert top.condition == expect["leader"], shown
        assert top.probability > diff.none_probability, shown
    if "one_of" in expect:
        assert top.condition in expect["one_of"], shown
        assert top.probability > diff.none_probability, shown
    if "min_probability" in expect:
        assert top.probability >= expect["min_probability"], shown
    if "max_probability" in expect:
        assert top.probability < expect["max_probability"], shown
    if "top3" in expect:
        positions = [order.index(c) for c in expect["top3"]]
        assert max(positions) < 3 and positions == sorted(positions), shown
    if "top3_any" in expect:
        assert set(order[:3]) & set(expect["top3_any"]), shown
    for cid in expect.get("not_leader", ()):
        assert top.condition != cid, shown


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_rank_same_findings_twice_gives_identical_json(kb: KnowledgeBase, path: Path) -> None:
    findings = _load(path)["findings"]
    first = _all(kb, _states(findings))
    # Same findings, inserted in the reverse order: the result must not depend on dict order.
    second = _all(kb, _states(dict(reversed(list(findings.items())))))
    dump = lambda d: json.dumps(asdict(d), sort_keys=True)  # noqa: E731
    assert dump(first) == dump(second)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_rank_any_scenario_probabilities_sum_to_at_most_one(kb: KnowledgeBase, path: Path) -> None:
    diff = _all(kb, _states(_load(path)["findings"]))
    total = sum(r.probability for r in diff.ranked)
    assert all(0.0 <= r.probability <= 1.0 for r in diff.ranked)
    assert total <= 1.0 + 1e-9
    assert total + diff.none_probability == pytest.approx(1.0)
    assert [r.probability for r in diff.ranked] == sorted((r.probability for r in diff.ranked), reverse=True)


def test_rank_finding_explicitly_unknown_equals_finding_left_out(kb: KnowledgeBase) -> None:
    findings = _states(_load(SCENARIO_DIR / "disk-full-backup-hog.yaml")["findings"])
    left_out = {f: s for f, s in findings.items() if not f.startswith("storage.hog_")}
    marked_unknown = {**findings, **{f: FindingState.UNKNOWN for f in findings if f.startswith("storage.hog_")}}
    assert _all(kb, left_out) == _all(kb, marked_unknown)
    assert "storage.hog_backup" not in observed_states(marked_unknown)


def test_rank_unknown_finding_is_not_read_as_absent(kb: KnowledgeBase) -> None:
    base = {"storage.full": FindingState.PRESENT, "storage.write_enospc": FindingState.PRESENT}
    unknown = _all(kb, {**base, "storage.hog_log": FindingState.UNKNOWN})
    absent = _all(kb, {**base, "storage.hog_log": FindingState.ABSENT})
    p = lambda d, c: next(r.probability for r in d.ranked if r.condition == c)  # noqa: E731
    assert p(absent, "log-growth") < p(unknown, "log-growth")


def test_rank_finding_id_outside_catalogue_changes_nothing(kb: KnowledgeBase) -> None:
    findings = _states(_load(SCENARIO_DIR / "log-growth-unrotated-container-logs.yaml")["findings"])
    with_stray = {**findings, "storage.not_a_finding": FindingState.UNKNOWN}
    assert _all(kb, with_stray) == _all(kb, findings)


def test_refinement_hog_named_ranks_specific_first_and_unnamed_general_first(kb: KnowledgeBase) -> None:
    full = {f: FindingState.PRESENT for f in ("storage.full", "storage.low_space", "storage.write_enospc")}
    inodes = {f: FindingState.PRESENT for f in ("storage.inodes_exhausted", "storage.write_enospc")}
    for base, general, hogs in (
        (full, "disk-full", {"storage.hog_log": "log-growth", "storage.hog_cache": "cache-growth"}),
        (inodes, "inode-exhaustion", {"storage.hog_sessions": "session-store-full"}),
    ):
        assert _all(kb, base).ranked[0].condition == general, "no hog named → the general condition"
        no_hog = {**base, **{h: FindingState.ABSENT for h in hogs}}
        assert _all(kb, no_hog).ranked[0].condition == general, "every hog ruled out → the general condition"
        for hog, specific in hogs.items():
            order = [r.condition for r in _all(kb, {**base, hog: FindingState.PRESENT}).ranked]
            assert order[0] == specific, f"{hog} present → {specific} first, got {order[:3]}"
            assert general in order[:3]


def test_next_test_disk_full_vs_inodes_from_symptoms_picks_storage_probe(kb: KnowledgeBase) -> None:
    observed = {"symptom.no_space_error": True, "symptom.login_silent_fail": True, "symptom.http_5xx": True}
    diff = rank(kb, {f: FindingState.PRESENT for f in observed})
    leaders = [r.condition for r in diff.ranked[:4]]
    assert {"disk-full", "inode-exhaustion"} <= set(leaders)
    probe_findings = sorted(f for f, d in kb.findings.items() if d.observed_by == "probe")
    best = next_tests(kb, observed, probe_findings)[0]
    assert best.finding in {"storage.inodes_exhausted", "storage.full"}
    assert best.how == "probe"


def test_next_test_two_close_leaders_picks_finding_that_separates_them(kb: KnowledgeBase) -> None:
    observed = {"symptom.no_space_error": True, "symptom.login_silent_fail": True, "symptom.http_5xx": True}
    candidates = sorted(set(kb.findings) - set(observed))
    best = next_tests(kb, observed, candidates)[0]
    a, b = kb.conditions["disk-full"], kb.conditions["inode-exhaustion"]
    leak = kb.findings[best.finding].leak
    pa, pb = a.findings.get(best.finding, leak), b.findings.get(best.finding, leak)
    assert max(pa, pb) / min(pa, pb) >= 10, f"{best.finding}: {pa} vs {pb} does not separate them"


def test_next_test_after_answer_is_observed_is_not_proposed_again(kb: KnowledgeBase) -> None:
    observed = {"symptom.no_space_error": True, "storage.inodes_exhausted": True}
    tests = next_tests(kb, observed, sorted(kb.findings))
    assert all(t.finding not in observed for t in tests)


@pytest.mark.parametrize(
    "name",
    [
        "log-growth-unrotated-container-logs",
        "deleted-open-files-rotated-log-held",
        "session-store-full-gc-disabled",
        "permission-denied-session-dir",
        "io-errors-failing-disk-remounted-ro",
        "ownership-changed-cache-clear-as-root",
    ],
)
def test_pairs_single_clear_cause_reports_no_pair(kb: KnowledgeBase, name: str) -> None:
    diff = rank(kb, _states(_load(SCENARIO_DIR / f"{name}.yaml")["findings"]))
    assert diff.pairs == []


def test_pairs_two_faults_at_once_reports_the_pair(kb: KnowledgeBase) -> None:
    # A root-owned cache folder AND a full disk: neither alone explains EACCES and ENOSPC.
    findings = {f: FindingState.PRESENT for f in (
        "storage.owner_mismatch", "log.permission_denied", "symptom.recent_permission_change",
        "storage.full", "storage.low_space", "storage.write_enospc", "log.enospc",
    )}
    diff = rank(kb, findings)
    pairs = {frozenset((p.first, p.second)) for p in diff.pairs}
    assert any("ownership-changed" in p and p & {"disk-full", "log-growth", "cache-growth", "deleted-open-files"} for p in pairs)


def test_rank_explains_lists_only_present_symptoms_the_condition_explains(kb: KnowledgeBase) -> None:
    findings = _states(_load(SCENARIO_DIR / "spec-story-symptoms-only.yaml")["findings"])
    diff = rank(kb, findings)
    present = {f for f, s in findings.items() if s is FindingState.PRESENT}
    leader = diff.ranked[0]
    assert leader.explains and set(leader.explains) <= present
    assert "symptom.login_silent_fail" in leader.explains
