"""Incidents like this one (prodx.engine.alike): the whole account weighed against the learned
incidents, mixed into what the words alone give, and never louder than what the probes measure."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from prodx.engine.alike import AlikeModel, resemblance
from prodx.engine.posterior import NONE_ID, posterior, rank
from prodx.engine.symptoms import match_symptoms
from prodx.kb.loader import DATA_DIR, load_kb
from prodx.model import FindingState

BENCH = Path(__file__).resolve().parents[1] / "bench"
PRESENT, ABSENT = FindingState.PRESENT, FindingState.ABSENT


@pytest.fixture(scope="module")
def kb():
    return load_kb()


def _said(kb, text: str) -> dict[str, FindingState]:
    findings, _unmatched = match_symptoms([text], kb)
    return {f.id: f.state for f in findings}


def test_the_shipped_model_is_learned_from_tuning_collections_only(kb) -> None:
    data = json.loads((DATA_DIR / "alike.json").read_text())
    assert "heldout" not in data["collections"]
    assert kb.alike is not None and 0 < kb.alike.weight < 1
    # Every label is a condition of the KB or "none of the known"; each centroid is unit length.
    for label, centroid in kb.alike.centroids.items():
        assert label == NONE_ID or label in kb.conditions
        assert math.isclose(math.sqrt(sum(x * x for x in centroid.values())), 1.0, abs_tol=1e-3)
    sys.path.insert(0, str(BENCH))
    try:
        import learn_reports
    finally:
        sys.path.remove(str(BENCH))
    with pytest.raises(ValueError):
        learn_reports.learn_alike(("tuning", "heldout"))


def test_the_files_only_kb_has_no_learned_resemblance() -> None:
    assert load_kb(told=False).alike is None


def test_shares_cover_every_learned_cause_and_name_the_accounts_own_words(kb) -> None:
    text = "a teammate ran Composer update and now the checkout page is blank"
    r = resemblance(kb.alike, [text], kb.lexicon)
    assert r is not None
    assert set(r.shares) == set(kb.alike.centroids)
    assert math.isclose(sum(r.shares.values()), 1.0)
    leader = max(r.shares, key=r.shares.get)
    assert leader == "dependency-regression"
    assert "composer" in r.words[leader]
    assert all(w in text.lower() for w in r.words[leader])
    assert resemblance(kb.alike, [text], kb.lexicon) == r  # deterministic


def test_nothing_to_compare_gives_no_resemblance(kb) -> None:
    assert resemblance(kb.alike, ["the and of but"], kb.lexicon) is None
    assert resemblance(kb.alike, ["zqxv wvvkq"], kb.lexicon) is None
    assert resemblance(None, ["the disk is full"], kb.lexicon) is None
    assert resemblance(kb.alike, [], kb.lexicon) is None


def test_without_probes_the_words_reading_is_the_stated_mixture(kb) -> None:
    text = "after composer update the shop answers HTTP 500"
    said = _said(kb, text)
    r = resemblance(kb.alike, [text], kb.lexicon)
    words, words_none = posterior(kb, {f: s is PRESENT for f, s in said.items()})
    d = rank(kb, said, said=said, alike=r, limit=len(kb.conditions))
    for row in d.ranked:
        expected = (1 - r.weight) * words[row.condition] + r.weight * r.share(row.condition)
        assert math.isclose(row.probability, expected, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(d.none_probability, (1 - r.weight) * words_none + r.weight * r.share(NONE_ID), rel_tol=1e-9)


def test_an_account_that_reads_like_a_cause_moves_it_up(kb) -> None:
    # "composer update" is no finding's phrase; the incidents of dependency-regression use it.
    text = "a teammate ran composer update and now the checkout page shows HTTP 500"
    said = _said(kb, text)
    r = resemblance(kb.alike, [text], kb.lexicon)
    before = {row.condition: row.probability for row in rank(kb, said).ranked}
    after = rank(kb, said, said=said, alike=r)
    assert after.ranked[0].condition == "dependency-regression"
    assert after.ranked[0].probability > before["dependency-regression"]
    assert "composer" in after.ranked[0].alike_words


def test_what_the_probes_measure_outweighs_what_the_account_reads_like(kb) -> None:
    # The account reads like a DNS failure; the probes measured a full filesystem.
    text = "lookups of our API host keep timing out, DNS resolution fails"
    said = _said(kb, text)
    r = resemblance(kb.alike, [text], kb.lexicon)
    assert max(r.shares, key=r.shares.get) == "dns-failure"
    measured = {"storage.full": PRESENT, "storage.low_space": PRESENT, "storage.write_enospc": PRESENT,
                "log.enospc": PRESENT, "storage.inodes_exhausted": ABSENT}
    d = rank(kb, {**said, **measured}, said=said, alike=r)
    assert "disk-full" in kb.chain(d.ranked[0].condition)
    assert d.ranked[0].probability > 0.5


def test_a_made_up_model_is_followed_exactly(kb) -> None:
    # One learned cause whose only word is "zebra": an account saying it reads 100 % like it.
    model = AlikeModel(idf={"zebra": 1.0}, centroids={"disk-full": {"zebra": 1.0}, NONE_ID: {"other": 1.0}},
                       incidents={"disk-full": 1, NONE_ID: 1}, weight=0.5, sharpness=20.0)
    r = resemblance(model, ["zebra"], kb.lexicon)
    assert r is not None and r.share("disk-full") > 0.99 and r.words["disk-full"] == ("zebra",)


def test_the_json_report_carries_the_resemblance_only_with_an_account(tmp_path: Path) -> None:
    def run(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "prodx", "diagnose", "--no-probes", "--json", *args],
                              capture_output=True, text=True)
        return json.loads(proc.stdout)

    with_account = run("--symptom", "after composer update the shop answers HTTP 500")
    row = with_account["differential"][0]
    assert row["alike"]["share"] > 0 and row["alike"]["words"]
    assert all(r["alike"] is None for r in run()["differential"])
