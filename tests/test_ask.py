"""`prodx ask`: the Session's logic on the real KB, and the real command driven through a pty.

The pty tests answer as a truthful user would from one condition's point of view, derived from
the KB: yes when P(finding | condition) >= 0.6, no when <= 0.2, don't know otherwise.
"""

from __future__ import annotations

import doctest
import os
import sys

import pytest

import prodx.ask
from prodx.ask import Session, Stop, parse_answer
from prodx.engine.symptoms import match_symptoms
from prodx.kb.loader import KnowledgeBase
from prodx.model import Finding, FindingState, unknown

# Declared in the test extra (pexpect>=4.8,<5); without it only the pty tests cannot run.
pexpect = pytest.importorskip("pexpect")

START = "site returns 500"
#: Conditions a "site returns 500" conversation reaches within a few questions.
CONVERGING = ["bad-deploy", "config-error", "db-connections-exhausted", "deleted-open-files", "log-growth", "memory-leak"]
PROMPT = r"don't know / \[q\]uit > "


def truthful(kb: KnowledgeBase, cid: str, fid: str) -> FindingState:
    p = kb.conditions[cid].findings.get(fid, kb.findings[fid].leak)
    return FindingState.PRESENT if p >= 0.6 else FindingState.ABSENT if p <= 0.2 else FindingState.UNKNOWN


def start_findings(kb: KnowledgeBase, *texts: str) -> list[Finding]:
    return match_symptoms(list(texts) or [START], kb)[0]


def test_ask_module_doctests_pass():
    failures, _tried = doctest.testmod(prodx.ask)
    assert failures == 0


def test_parse_answer_on_every_documented_key_maps_to_a_state():
    assert parse_answer("yes") is FindingState.PRESENT
    assert parse_answer("N") is FindingState.ABSENT
    assert parse_answer("d") is FindingState.UNKNOWN
    assert parse_answer("") is None


def test_session_from_500_asks_a_question_a_person_can_answer(kb):
    session = Session(kb, start_findings(kb))
    test = session.next_question()
    assert test is not None and test.how == "ask"
    assert kb.findings[test.finding].observed_by == "ask" and test.question


def test_session_answer_yes_reranks_and_reports_the_moves(kb):
    session = Session(kb, start_findings(kb))
    before = session.differential().leader
    change = session.answer("symptom.log_hog", FindingState.PRESENT)
    assert change.leader_before == before.condition
    assert change.leader_after == session.differential().leader.condition == "log-growth"
    assert change.leader_ratio != 1.0
    log_growth = next(m for m in change.moves if m.condition == "log-growth")
    assert log_growth.after > log_growth.before
    assert log_growth.likelihood == kb.likelihood(kb.conditions["log-growth"], "symptom.log_hog")
    assert session.asked == ["symptom.log_hog"]


def test_session_with_an_account_reports_the_moves_of_the_differential_it_shows():
    # The account is read twice (prodx.engine.alike): the moves an answer reports are those
    # of the differential the person sees, not of the findings' reading alone.
    from prodx.engine.alike import resemblance
    from prodx.kb.loader import load_kb

    told = load_kb()
    text = "a teammate ran composer update and now the checkout page shows HTTP 500"
    findings = start_findings(told, text)
    session = Session(told, findings, said={f.id: f.state for f in findings},
                      alike=resemblance(told.alike, [text], told.lexicon))
    shown = {r.condition: r.probability for r in session.differential().ranked}
    change = session.answer("symptom.downgrade_helped", FindingState.ABSENT)
    after = {r.condition: r.probability for r in session.differential().ranked}
    for move in change.moves:
        assert move.before == pytest.approx(shown[move.condition])
        assert move.after == pytest.approx(after[move.condition])


def test_session_dont_know_leaves_differential_unchanged_and_is_not_asked_again(kb):
    session = Session(kb, start_findings(kb))
    first = session.next_question().finding
    before = session.differential()
    change = session.answer(first, FindingState.UNKNOWN)
    assert change.leader_ratio == 1.0
    assert [(r.condition, r.probability) for r in session.differential().ranked] == [
        (r.condition, r.probability) for r in before.ranked
    ]
    assert session.next_question().finding != first


def test_session_leader_past_confidence_is_done(kb):
    session = Session(kb, start_findings(kb), confidence=0.8)
    assert session.done() is None
    for fid in ("symptom.log_hog", "symptom.disk_filling", "symptom.no_space_error", "symptom.log_cut_off"):
        if fid in kb.findings:
            session.answer(fid, FindingState.PRESENT)
    leader = session.differential().leader
    assert leader.probability >= 0.8
    assert session.done() is Stop.CONFIDENT


def test_session_question_limit_stops_it(kb):
    session = Session(kb, start_findings(kb), max_questions=1)
    session.answer(session.next_question().finding, FindingState.UNKNOWN)
    assert session.done() is Stop.MAX_QUESTIONS


def test_session_timed_out_probe_is_offered_once_then_settled(kb):
    probe_fid = "storage.full"
    probe = kb.findings[probe_fid].probe
    findings = start_findings(kb) + [unknown(probe_fid, f"{probe} timed out")]
    session = Session(kb, findings, retryable_probes=frozenset({probe}))
    offered = session.next_question()
    assert offered.how == "probe" and kb.findings[offered.finding].probe == probe
    session.add_findings([Finding(probe_fid, FindingState.PRESENT, "/ is 100 % full")], settled_probe=probe)
    assert session.states()[probe_fid] is FindingState.PRESENT
    follow = session.next_question()
    assert follow is None or kb.findings[follow.finding].probe != probe


def test_session_without_retryable_probes_never_offers_a_probe(kb):
    session = Session(kb, start_findings(kb) + [unknown("storage.full", "no probes")])
    for _ in range(10):
        test = session.next_question()
        if test is None:
            break
        assert test.how == "ask"
        session.answer(test.finding, FindingState.UNKNOWN)


@pytest.mark.parametrize("cid", CONVERGING)
def test_session_truthful_answers_converge_to_the_condition(kb, cid):
    session = Session(kb, start_findings(kb))
    while session.done() is None:
        fid = session.next_question().finding
        session.answer(fid, truthful(kb, cid, fid))
    assert session.done() is Stop.CONFIDENT
    assert session.differential().leader.condition == cid
    assert len(session.asked) < len(kb.conditions)


def _spawn(*args: str) -> pexpect.spawn:
    env = dict(os.environ, NO_COLOR="1", TERM="dumb", COLUMNS="200", LINES="50")
    return pexpect.spawn(
        sys.executable, ["-m", "prodx", "ask", "--no-probes", *args],
        env=env, encoding="utf-8", timeout=60, dimensions=(50, 200),
    )


def _close(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


@pytest.mark.parametrize("cid", CONVERGING[:4])
def test_ask_cmd_truthful_user_through_pty_reaches_the_condition(kb, cid):
    child = _spawn("--symptom", START)
    try:
        asked = 0
        while True:
            i = child.expect([r"Question \d+ \((\S+), [\d.]+ bits\)", r"Stopped: (.+) after (\d+) question"])
            if i == 1:
                stop, count = child.match.group(1), int(child.match.group(2))
                break
            fid = child.match.group(1)
            child.expect(PROMPT)
            child.sendline({FindingState.PRESENT: "y", FindingState.ABSENT: "n", FindingState.UNKNOWN: "?"}[truthful(kb, cid, fid)])
            asked += 1
        child.expect(r"Diagnosis: (\S+) ")
        leader = child.match.group(1)
        child.expect(r"Remedy for (\S+) \(safe steps first\)")
        status = _close(child)
    finally:
        child.close(force=True)
    assert (stop, leader, count) == ("confident", cid, asked)
    assert asked < len(kb.conditions)
    assert status == 1


def test_ask_cmd_q_leaves_with_the_current_differential():
    child = _spawn("--symptom", START)
    try:
        child.expect(PROMPT)
        child.sendline("n")
        child.expect(r"leader (stays )?\S+")
        child.expect(PROMPT)
        child.sendline("q")
        child.expect(r"Stopped: left by the user after 1 question")
        child.expect("none of the known conditions")
        child.expect(r"Diagnosis: \S+")
        status = _close(child)
    finally:
        child.close(force=True)
    assert status in (0, 1)


def test_ask_cmd_closed_input_leaves_like_q():
    child = _spawn("--symptom", START)
    try:
        child.expect(PROMPT)
        child.sendeof()
        child.expect(r"Stopped: left by the user after 0 question")
        child.expect(r"Diagnosis: \S+")
        status = _close(child)
    finally:
        child.close(force=True)
    assert status in (0, 1)


def test_ask_cmd_unclear_answer_asks_again_without_counting():
    child = _spawn("--symptom", START, "--max-questions", "1")
    try:
        child.expect(PROMPT)
        child.sendline("maybe")
        child.expect("please answer y")
        child.expect(PROMPT)
        child.sendline("?")
        child.expect("the differential is unchanged")
        child.expect(r"Stopped: question limit reached after 1 question")
        _close(child)
    finally:
        child.close(force=True)


def _converse(kb: KnowledgeBase, child: pexpect.spawn, cid: str) -> tuple[str, str, int, int]:
    """Answer truthfully for ``cid`` until it stops: (stop reason, leader, questions, asked)."""
    asked = 0
    while True:
        i = child.expect([r"(?:Question|Test) \d+ \((\S+), [\d.]+ bits\)", r"Stopped: (.+) after (\d+) question"])
        if i == 1:
            stop, count = child.match.group(1), int(child.match.group(2))
            break
        fid = child.match.group(1)
        child.expect(r"\[q\]uit > ")
        child.sendline({FindingState.PRESENT: "y", FindingState.ABSENT: "n", FindingState.UNKNOWN: "?"}[truthful(kb, cid, fid)])
        asked += 1
    child.expect(r"Diagnosis: (\S+) ")
    return stop, child.match.group(1), count, asked


@pytest.mark.lab
@pytest.mark.parametrize("scenario", ["disk-full", "permission-denied"])
def test_ask_cmd_on_real_lab_scenario_reaches_its_condition(kb, scenario):
    from prodx.lab import get_scenario, staged

    if os.geteuid() != 0:
        pytest.skip("needs root (the lab loop-mounts and creates users)")
    unmet = get_scenario(scenario).needs.unmet()
    if unmet:
        pytest.skip(f"{scenario}: {'; '.join(unmet)}")
    with staged(scenario) as run:
        cid = run.scenario.accepted[0]
        env = dict(os.environ, NO_COLOR="1", TERM="dumb", COLUMNS="200", LINES="50")
        child = pexpect.spawn(sys.executable, ["-m", "prodx", "ask", "--profile", str(run.profile_path)],
                              env=env, encoding="utf-8", timeout=120, dimensions=(50, 200))
        try:
            stop, leader, count, asked = _converse(kb, child, cid)
            status = _close(child)
        finally:
            child.close(force=True)
    assert run.teardown_problems == []
    assert leader in run.scenario.accepted, (stop, leader, count)
    assert stop == "confident" and count == asked < len(kb.conditions)
    assert status == 1


def test_ask_cmd_nothing_understood_opens_with_not_enough_to_go_on_then_asks():
    child = _spawn("--symptom", "the frobnicator is grumpy")
    try:
        child.expect('symptom not understood: "the frobnicator is grumpy"')
        child.expect("Not enough to go on")
        opening = child.before
        child.expect(r"Question 1 \((symptom\.\S+), [\d.]+ bits\)")
        child.expect(PROMPT)
        child.sendline("q")
        child.expect("Still not enough to go on")
        status = _close(child)
    finally:
        child.close(force=True)
    assert "none of the known conditions" not in opening  # no ranking by prior
    assert status == 0
