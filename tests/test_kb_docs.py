"""`prodx kb show` and the generated catalogue (docs/catalogue.md), run as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prodx.kb import docs
from prodx.kb.loader import load_kb

REPO = Path(__file__).resolve().parents[1]


def _prodx(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prodx", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, check=False)


@pytest.fixture(scope="module")
def kb():
    return load_kb()


def test_kb_docs_check_on_checked_in_catalogue_is_up_to_date():
    proc = _prodx("kb", "docs", "--check")
    assert proc.returncode == 0, proc.stderr + "\nRegenerate: prodx kb docs -o docs/catalogue.md"


def test_kb_docs_check_on_edited_catalogue_exits_1_with_a_diff(tmp_path):
    stale = tmp_path / "catalogue.md"
    stale.write_text(_prodx("kb", "docs").stdout.replace("## Storage", "## Disks", 1), encoding="utf-8")
    proc = _prodx("kb", "docs", "--check", "-o", str(stale))
    assert proc.returncode == 1
    assert "is stale" in proc.stderr and "-## Disks" in proc.stderr and "+## Storage" in proc.stderr


def test_kb_docs_check_without_a_file_is_a_usage_error(tmp_path):
    proc = _prodx("kb", "docs", "--check", cwd=tmp_path)
    assert proc.returncode == 2 and "docs/catalogue.md" in proc.stderr


def test_kb_docs_output_file_equals_printed_catalogue(tmp_path):
    out = tmp_path / "cat.md"
    assert _prodx("kb", "docs", "-o", str(out)).returncode == 0
    assert out.read_text(encoding="utf-8") == _prodx("kb", "docs").stdout


def test_catalogue_of_the_kb_is_deterministic_and_has_every_condition_indexed_and_sectioned(kb):
    text = docs.catalogue(kb)
    assert text == docs.catalogue(load_kb())
    for cid in kb.conditions:
        assert f"- [`{cid}`](#{cid})" in text, cid
        assert f'<a id="{cid}"></a>\n### `{cid}` — ' in text, cid
    assert len(re.findall(r"^### ", text, flags=re.MULTILINE)) == len(kb.conditions)


def test_catalogue_lists_a_refinement_under_its_parent_and_links_back(kb):
    text = docs.catalogue(kb)
    parent_row = text.index("  - [`disk-full`](#disk-full)")
    child_row = text.index("    - [`log-growth`](#log-growth)")
    assert parent_row < child_row
    section = text[text.index('<a id="log-growth">'):]
    section = section[: section.index("<a id=", 10)]
    assert "a specific cause of [`disk-full`](#disk-full)" in section
    apart = next(line for line in section.splitlines() if line.startswith("- from [`disk-full`](#disk-full):"))
    assert "`storage.hog_log` present" in apart


def test_catalogue_remedy_lists_safe_steps_before_risky_ones(kb):
    text = docs.catalogue(kb)
    for cid in kb.conditions:
        section = text[text.index(f'<a id="{cid}">'):]
        remedy = section[section.index("**Remedy**"): section.index("**What not to do**")]
        marks = [2 if "**data-loss:**" in line else 1 if "**downtime:**" in line else 0
                 for line in remedy.splitlines() if re.match(r"^[0-9]+\. ", line)]
        assert marks == sorted(marks), cid


def test_nearest_conditions_of_a_refinement_include_its_parent(kb):
    assert "disk-full" in [cid for cid, _d in docs.nearest_conditions(kb, "log-growth")]
    assert "inode-exhaustion" in [cid for cid, _d in docs.nearest_conditions(kb, "session-store-full")]


def test_kb_show_condition_prints_chain_findings_by_weight_and_remedy_safe_first():
    proc = _prodx("kb", "show", "log-growth")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("log-growth — ") and "chain: log-growth → disk-full" in out
    for heading in ("Findings, most telling first", "Nearest competitors", "Explains:", "Confirm:",
                    "Rule out:", "Remedy (safe first):", "Do not:", "References:"):
        assert heading in out
    remedy = out[out.index("Remedy (safe first):"): out.index("Do not:")]
    assert remedy.index("[DATA-LOSS]") > remedy.index("1. ")


def test_kb_show_condition_json_sorts_findings_by_how_much_they_tell(kb):
    proc = _prodx("kb", "show", "disk-full", "--json")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert view["schema"] == "prodx.kb-show/1" and view["kind"] == "condition"
    assert view["prior"] == kb.conditions["disk-full"].prior
    weights = [f["weight"] for f in view["findings"]]
    assert weights == sorted(weights, reverse=True)
    assert {f["finding"] for f in view["findings"]} == set(kb.conditions["disk-full"].findings)
    assert "log-growth" in view["refined_by"]
    assert [s["risk"] for s in view["remedy"]] == sorted((s["risk"] for s in view["remedy"]), key=docs.RISK_ORDER.get)


def test_kb_show_finding_lists_conditions_with_p_and_its_signatures(kb):
    proc = _prodx("kb", "show", "log.enospc", "--json")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    listed = {c.id: c.findings["log.enospc"] for c in kb.conditions.values() if "log.enospc" in c.findings}
    assert {c["condition"]: c["p"] for c in view["conditions"]} == listed
    assert "enospc" in [s["id"] for s in view["signatures"]]
    text = _prodx("kb", "show", "log.enospc").stdout
    assert "observed by: probe" in text and "Log signatures:" in text and "disk-full" in text


def test_kb_show_unknown_id_exits_2_naming_the_nearest_ids():
    proc = _prodx("kb", "show", "disk-ful")
    assert proc.returncode == 2
    assert "disk-ful" in proc.stderr and "nearest: disk-full" in proc.stderr
    assert _prodx("kb", "show", "storage.ful").stderr.count("storage.full") == 1
