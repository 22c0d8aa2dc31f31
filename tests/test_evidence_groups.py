"""Evidence groups: findings that are one event seen several ways are counted once.

Against the shipped KB (``kb/data/groups.yaml``) and small site KBs written to tmp_path: each
member alone weighs exactly what the condition files say; a second witness of an established
event adds little; a contradicting member still counts; the next test's likelihood is the
posterior's own; the evidence lists say what the posterior weighs; bad group files fail with
file, line and field.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from prodx.engine.likelihood import (
    _bernoulli_log,
    log_likelihood,
    log_likelihood_with,
    marginal,
    member_contribution,
    predictive,
)
from prodx.engine.next_test import next_tests
from prodx.engine.posterior import rank
from prodx.kb.lint import lint
from prodx.kb.loader import KBError, KnowledgeBase, load_kb
from prodx.model import FindingState
from prodx.probes import load_all


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_kb()


def _independent(kb: KnowledgeBase, cid: str | None, observed: dict[str, bool]) -> float:
    p = marginal(kb, kb.conditions[cid] if cid else None)
    return sum(_bernoulli_log(p(f), v) for f, v in observed.items())


def _ratio(kb: KnowledgeBase, cid: str, observed: dict[str, bool], *, grouped: bool = True) -> float:
    """P(observed | cid) / P(observed | none of the known)."""
    if grouped:
        return math.exp(log_likelihood(kb, kb.conditions[cid], observed) - log_likelihood(kb, None, observed))
    return math.exp(_independent(kb, cid, observed) - _independent(kb, None, observed))


def test_groups_shipped_every_member_alone_weighs_its_marginal(kb: KnowledgeBase) -> None:
    assert len(kb.groups) >= 20
    for group in kb.groups.values():
        for m in group.members:
            for state in (True, False):
                observed = {m.finding: state}
                for cid in [None, *sorted(kb.conditions)]:
                    grouped = log_likelihood(kb, kb.conditions[cid] if cid else None, observed)
                    assert grouped == pytest.approx(_independent(kb, cid, observed), abs=1e-9), (group.id, m.finding, cid)


def test_groups_second_witness_of_enospc_adds_little_where_independence_multiplied(kb: KnowledgeBase) -> None:
    one = {"storage.write_enospc": True}
    two = {"storage.write_enospc": True, "log.enospc": True}
    gain_grouped = _ratio(kb, "disk-full", two) / _ratio(kb, "disk-full", one)
    gain_independent = _ratio(kb, "disk-full", two, grouped=False) / _ratio(kb, "disk-full", one, grouped=False)
    assert gain_independent > 30  # the old model's second count of one ENOSPC
    assert gain_grouped < 3  # P(log | ENOSPC seen, disk-full) / P(log | ENOSPC seen, chance) ≈ 0.65 / 0.27


def test_groups_change_session_counts_once_against_an_unrelated_condition(kb: KnowledgeBase) -> None:
    session = {f: True for f in ("change.config_recent", "process.recent_restart", "change.reboot_recent")}
    # config-error against memory-oom (which lists none of them): one working session, not three clues.
    grouped = math.exp(log_likelihood(kb, kb.conditions["config-error"], session)
                       - log_likelihood(kb, kb.conditions["memory-oom"], session))
    independent = math.exp(_independent(kb, "config-error", session) - _independent(kb, "memory-oom", session))
    assert independent > 20
    assert grouped < independent / 3


def test_groups_contradicting_member_still_counts(kb: KnowledgeBase) -> None:
    said = {"symptom.oom": FindingState.PRESENT, "symptom.service_crashed": FindingState.PRESENT}
    contradicted = {**said, "memory.oom_kill_recent": FindingState.ABSENT, "log.oom_kill": FindingState.ABSENT}
    p = lambda states: next(r.probability for r in rank(kb, states, limit=50).ranked if r.condition == "memory-oom")  # noqa: E731
    assert p(said) > 2.5 * p(contradicted)
    # And the contradiction is listed against memory-oom: it still counts given the rest.
    row = next(r for r in rank(kb, contradicted, limit=50).ranked if r.condition == "memory-oom")
    assert "memory.oom_kill_recent" in row.against


def test_groups_unobserved_member_sums_out_and_predictive_is_the_likelihood_ratio(kb: KnowledgeBase) -> None:
    observed = {"storage.write_enospc": True, "storage.low_space": True, "log.enospc": False, "symptom.slow": True}
    for cid in (None, "disk-full", "inode-exhaustion", "memory-oom"):
        cond = kb.conditions[cid] if cid else None
        p = marginal(kb, cond)
        base = log_likelihood_with(kb, p, observed)
        for fid in ("storage.full", "symptom.no_space_error", "cpu.load_high"):
            present = log_likelihood_with(kb, p, {**observed, fid: True})
            absent = log_likelihood_with(kb, p, {**observed, fid: False})
            assert math.exp(present) + math.exp(absent) == pytest.approx(math.exp(base), rel=1e-9)
            assert predictive(kb, p, observed, fid) == pytest.approx(math.exp(present - base), rel=1e-9)


def test_next_test_does_not_ask_for_a_second_witness_of_an_established_event(kb: KnowledgeBase) -> None:
    observed = {"storage.write_enospc": True, "storage.full": True, "storage.low_space": True}
    tests = next_tests(kb, observed, sorted(set(kb.findings) - set(observed)), limit=10)
    asked = {t.finding for t in tests}
    assert not asked & {"log.enospc", "symptom.no_space_error"}
    p_disk = marginal(kb, kb.conditions["disk-full"])
    # Given the established event, another witness is about as likely as its sensitivity.
    assert predictive(kb, p_disk, observed, "log.enospc") == pytest.approx(0.65, abs=0.05)


def test_evidence_lists_group_witnesses_together_and_drop_a_missing_second_witness(kb: KnowledgeBase) -> None:
    states = {f: FindingState.PRESENT for f in ("storage.write_enospc", "storage.full", "storage.low_space")}
    states["log.enospc"] = FindingState.ABSENT
    row = next(r for r in rank(kb, states).ranked if r.condition == "disk-full")
    assert {"storage.write_enospc", "storage.full", "storage.low_space"} <= set(row.support)
    assert ("out-of-space", tuple(f for f in row.support if kb.group_of.get(f) == "out-of-space")) in row.support_groups
    # The log's silence is explained by its sensitivity once the write test saw ENOSPC.
    assert "log.enospc" not in row.against
    assert member_contribution(kb, kb.conditions["disk-full"], {**{f: True for f in states if f != "log.enospc"},
                                                                "log.enospc": False}, "log.enospc") > 0.67


def _site(tmp_path: Path, groups: str, name: str = "site") -> Path:
    site = tmp_path / name
    site.mkdir()
    (site / "groups.yaml").write_text(groups)
    return site


def test_groups_site_adds_a_group_and_replaces_one_of_the_same_id(tmp_path: Path) -> None:
    site = _site(tmp_path, """
- id: tls-soon
  event: A certificate will expire soon and the renewal failed.
  chance: 0.005
  members:
    - {finding: tls.cert_expiring_soon, sensitivity: 0.9}
    - {finding: tls.served_cert_stale, sensitivity: 0.5}
- id: quota-exceeded
  event: The app's user is over a disk quota.
  chance: 0.001
  members:
    - {finding: storage.write_edquot, sensitivity: 0.9}
    - {finding: log.quota_exceeded, sensitivity: 0.7}
""")
    kb = load_kb((str(site),))
    assert kb.group_of["tls.served_cert_stale"] == "tls-soon"
    assert kb.groups["quota-exceeded"].chance == 0.001
    assert "symptom.quota_error" not in kb.group_of  # the replaced group's member is free again


def test_groups_finding_in_two_groups_error_names_file_line_and_field(tmp_path: Path) -> None:
    text = """- id: my-space
  event: Writes fail for lack of space.
  chance: 0.001
  members:
    - {finding: tls.cert_expiring_soon, sensitivity: 0.9}
    - {finding: storage.write_enospc, sensitivity: 0.9}
"""
    with pytest.raises(KBError) as err:
        load_kb((str(_site(tmp_path, text)),))
    message = str(err.value)
    assert "groups.yaml:6:" in message and "[0].members[1].finding" in message and "out-of-space" in message


def test_groups_unknown_field_error_names_file_line_and_field(tmp_path: Path) -> None:
    text = """- id: my-group
  event: Something seen two ways.
  chance: 0.01
  members:
    - {finding: tls.cert_expiring_soon, sensitivity: 0.9, false_positive: 0.1}
    - {finding: tls.served_cert_stale, sensitivity: 0.5}
"""
    with pytest.raises(KBError) as err:
        load_kb((str(_site(tmp_path, text)),))
    assert "groups.yaml:5:" in str(err.value) and "false_positive" in str(err.value)


def test_groups_lint_flags_unknown_member_and_chance_that_exhausts_a_leak(tmp_path: Path) -> None:
    site = _site(tmp_path, """
- id: my-group
  event: Something seen two ways.
  chance: 0.5
  members:
    - {finding: tls.cert_expiring_soon, sensitivity: 0.9}
    - {finding: tls.not_a_finding, sensitivity: 0.5}
""")
    issues = [str(i) for i in lint(load_kb((str(site),)), {n: c.findings for n, c in load_all().items()})]
    assert any("my-group" in i and "unknown finding id tls.not_a_finding" in i for i in issues)
    assert any("my-group" in i and "tls.cert_expiring_soon" in i and "lower the chance" in i for i in issues)
