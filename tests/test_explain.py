"""``prodx explain ID`` on the real KB and the real probes, run through the CLI."""

from __future__ import annotations

import io
import json

from click.testing import CliRunner
from rich.console import Console

from prodx import explain
from prodx.cli import cli


def _run(*args: str):
    return CliRunner().invoke(cli, ["explain", *args])


def test_explain_condition_piped_says_what_how_explains_and_rule_in_out():
    result = _run("disk-full")
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("disk-full — Filesystem full (no free blocks)\n")
    for heading in ("What it is:", "How prodx observes it", "What it explains:", "Rule it in:", "Rule it out:",
                    "Remedy (safe first):", "Do not:"):
        assert f"\n{heading}" in text
    # the probe and its own docstring say how the finding is observed
    assert "probe storage.mounts: Space, inodes, reserve and read-only state of every relevant mount." in text
    assert "storage.full (85 % vs 1 %)" in text
    assert "symptom.login_silent_fail: PHP cannot write the session file" in text
    assert "`df -h` shows the filesystem at 100 %" in text
    assert "\x1b[" not in text


def test_explain_finding_names_supported_and_contradicted_conditions_with_p_vs_leak():
    text = _run("storage.full").output
    assert "the probe storage.mounts" in text
    supports = text.split("What it supports", 1)[1].split("\n\n", 1)[0]
    assert "  - disk-full (85 % vs 1 %)" in supports
    against = text.split("What it argues against when present:", 1)[1].split("\n\n", 1)[0]
    assert "  - inode-exhaustion (0.5 % vs 1 %)" in against
    assert "(a test for disk-full)" in text.split("How to check it yourself:", 1)[1]


def test_explain_symptom_finding_shows_the_question_and_its_words():
    text = _run("symptom.login_silent_fail").output
    assert "a question for you: Does logging in silently fail" in text
    assert '"login silently fails"' in text
    assert "Explained by:" in text


def test_explain_unknown_id_exits_2_naming_the_nearest_ids():
    result = CliRunner().invoke(cli, ["explain", "disk-ful"])
    assert result.exit_code == 2
    assert "no condition or finding 'disk-ful'; nearest: disk-full" in result.output


def test_explain_json_is_one_document_with_the_schema():
    result = _run("log-growth", "--json")
    doc = json.loads(result.output)
    assert doc["schema"] == "prodx.explain/1" and doc["kind"] == "condition" and doc["id"] == "log-growth"
    assert doc["chain"] == ["log-growth", "disk-full"]
    assert all(f["p"] > f["leak"] for f in doc["points_to_it"])
    assert all(f["p"] < f["leak"] for f in doc["argues_against_it"])
    assert doc["remedy"][0]["risk"] == "safe"


def test_explain_every_kb_id_renders_deterministically(kb):
    for item_id in sorted(kb.conditions) + sorted(kb.findings):
        view = explain.explain_view(kb, item_id)
        assert explain.render_text(view) == explain.render_text(explain.explain_view(kb, item_id))


def test_explain_on_a_terminal_uses_rich_styles(kb):
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, color_system="standard", width=100)
    explain.print_rich(explain.explain_view(kb, "disk-full"), console)
    out = stream.getvalue()
    assert "\x1b[1m" in out and "disk-full — Filesystem full" in out
