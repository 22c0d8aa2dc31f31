"""Plain words to symptom findings: the seed incident's phrases, fuzzy forms, negation, and
text that maps to nothing being reported back."""

from __future__ import annotations

import pytest

from prodx.engine.symptoms import match_symptoms
from prodx.model import FindingState


def _states(kb, *texts):
    findings, unmatched = match_symptoms(list(texts), kb)
    return {f.id: f.state for f in findings}, unmatched


@pytest.mark.parametrize(
    ("text", "fid"),
    [
        ("login silently fails", "symptom.login_silent_fail"),
        ("Logins stopped working, the correct password just reloads the login page", "symptom.login_silent_fail"),
        ("the register page returns 503", "symptom.http_5xx"),
        ("whole site gives HTTP 500", "symptom.http_5xx"),
        ("Twig could not write to the cache folder", "symptom.cache_write_error"),
        ("Unable to write in the cache directory", "symptom.cache_write_error"),
        ("logs stopped updating", "symptom.logs_stopped"),
        ("the log is cut off mid-line", "symptom.log_cut_off"),
        ("clearing the cache helped for a while", "symptom.cache_clear_helped"),
        ("echo test > x fails: No space left on device", "symptom.no_space_error"),
        ("df -h shows 7.5G available", "symptom.df_shows_free"),
    ],
)
def test_symptom_seed_phrase_maps_to_present_finding(kb, text, fid):
    states, _ = _states(kb, text)
    assert states.get(fid) is FindingState.PRESENT


@pytest.mark.parametrize("text", ["no errors in the log", "the logs show nothing", "Nothing in the logs"])
def test_symptom_negated_log_errors_is_absent(kb, text):
    states, _ = _states(kb, text)
    assert states.get("symptom.log_errors") is FindingState.ABSENT


def test_symptom_negator_before_phrase_makes_it_absent(kb):
    states, _ = _states(kb, "uploads do not fail")
    assert states.get("symptom.upload_fails") is FindingState.ABSENT


def test_symptom_cannot_describes_the_failure_not_its_absence(kb):
    states, _ = _states(kb, "users cannot log in")
    assert states.get("symptom.login_silent_fail") is FindingState.PRESENT


def test_symptom_one_text_with_several_clauses_maps_each(kb):
    states, unmatched = _states(kb, "login silently fails; register returns 503 and logs stopped updating")
    assert {"symptom.login_silent_fail", "symptom.http_5xx", "symptom.logs_stopped"} <= set(states)
    assert unmatched == []


def test_symptom_unmatched_text_is_reported_back_with_nearest(kb):
    states, unmatched = _states(kb, "the moon is blue", "uploads keep failing")
    assert [u.text for u in unmatched] == ["the moon is blue"]
    assert states.get("symptom.upload_fails") is FindingState.PRESENT


def test_symptom_unmatched_clause_beside_a_matched_one_is_reported(kb):
    _, unmatched = _states(kb, "login silently fails and the office printer smells of burnt toast")
    assert any("printer" in u.text for u in unmatched)
