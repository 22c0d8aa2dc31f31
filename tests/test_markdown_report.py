"""``prodx diagnose --markdown`` on fixture hosts captured from real lab runs
(tests/fixtures/hosts): the incident note's sections, table, real numbers and paths, stable
bytes, valid Markdown (parsed with markdown-it-py) and nothing a terminal would interpret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from prodx.diagnosis import DiagnoseOptions, diagnose
from prodx.host.fixture import FixtureHost
from prodx.report.diagnosis_json import to_document
from prodx.report.markdown import render_document, render_markdown

HOSTS = Path(__file__).parent / "fixtures" / "hosts"
SYMPTOMS = ["login silently fails", "register returns 503", "the blue frobnicator wobbles"]
SECRET_SYMPTOM = "502 from https://shop:Sup3rS3cretPw@db.internal/ and password=hunter2xyz in the log"


def _diagnose(kb, name: str, symptoms: list[str] | None = None):
    directory = HOSTS / name
    options = DiagnoseOptions(profile_path=str(directory / "profile.toml"), symptoms=symptoms or [], deadline_s=60)
    return diagnose(options, host=FixtureHost(directory), kb=kb)


@pytest.fixture(scope="module")
def log_growth(kb):
    return _diagnose(kb, "log-growth", SYMPTOMS)


def _headings(text: str) -> list[tuple[str, str]]:
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    return [(tok.tag, tokens[i + 1].content) for i, tok in enumerate(tokens) if tok.type == "heading_open"]


def test_markdown_report_on_log_growth_has_every_section_in_order(log_growth):
    heads = _headings(render_markdown(log_growth))
    assert heads[0] == ("h1", "Incident note: vm — A log filled the disk")
    h2 = [content for tag, content in heads if tag == "h2"]
    assert h2 == ["Summary", "Symptoms reported", "Findings with evidence", "Differential", "Tests run",
                  "Next tests", "Remedy for `log-growth`", "Timeline of changes"]
    h3 = [content for tag, content in heads if tag == "h3"]
    assert {"Present", "Against `log-growth`", "What not to do"} <= set(h3)


def test_markdown_report_differential_is_one_table_with_the_leader_first(log_growth):
    tokens = MarkdownIt("commonmark").enable("table").parse(render_markdown(log_growth))
    tables = [i for i, t in enumerate(tokens) if t.type == "table_open"]
    assert len(tables) == 2  # the differential and the probes (no timeline in this capture)
    start = tables[0]
    end = next(i for i in range(start, len(tokens)) if tokens[i].type == "table_close")
    cells = [t.content for t in tokens[start:end] if t.type == "inline"]
    assert cells[:6] == ["#", "P", "condition", "name", "distinctive evidence for", "against"]
    assert cells[6] == "1" and re.fullmatch(r"\d+ %", cells[7])
    assert cells[8:10] == ["`log-growth`", "A log filled the disk"]
    assert cells[-6:-4] == ["", "0 %"] and cells[-3] == "none of the known conditions"
    rows = sum(1 for t in tokens[start:end] if t.type == "tr_open")
    assert rows == 1 + 8 + 1  # header, DIFFERENTIAL_ROWS conditions, none of the known


def test_markdown_report_findings_carry_real_numbers_and_paths(log_growth):
    text = render_markdown(log_growth)
    present = text.split("### Present", 1)[1].split("###", 1)[0]
    assert "**`storage.full`** — /tmp/prodx-lab-log-growth-7a61e32e/mnt (ext4 on /dev/loop0): 0 B available" in present
    assert "prod.log holds 39.0 MiB, 100% of" in present
    assert "write() failed with ENOSPC" in present and "_(probe `storage.write_test`)_" in present
    against = text.split("### Against `log-growth`", 1)[1].split("##", 1)[0]
    assert "**`log.session_write_failed`** — (absent)" in against
    # The write test saw ENOSPC: a log without the line is a witness that missed the same
    # event (evidence groups), not evidence against; the witnesses are counted once.
    assert "`log.enospc`" not in against
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "One event seen several ways, counted once: `storage.write_enospc`" in summary


def test_markdown_report_symptoms_say_what_the_leader_explains_and_what_was_not_understood(log_growth):
    section = render_markdown(log_growth).split("## Symptoms reported", 1)[1].split("\n## ", 1)[0]
    assert "“login silently fails” → `symptom.login_silent_fail` — explained by `log-growth`: " in section
    assert "“the blue frobnicator wobbles” → _not understood_" in section


def test_markdown_report_remedy_lists_safe_steps_before_marked_risky_ones(log_growth):
    section = render_markdown(log_growth).split("## Remedy for `log-growth`", 1)[1].split("### What not to do")[0]
    steps = [line for line in section.splitlines() if re.match(r"\d+\. ", line)]
    marks = ["DOWNTIME" if "**[DOWNTIME]**" in s else "DATA-LOSS" if "**[DATA-LOSS]**" in s else "safe" for s in steps]
    assert marks == sorted(marks, key=["safe", "DOWNTIME", "DATA-LOSS"].index)
    assert marks[0] == "safe" and "DATA-LOSS" in marks
    assert "`du -xah /var/log" in steps[0]


def test_markdown_report_timeline_of_a_capture_with_changes_is_a_table(kb):
    result = _diagnose(kb, "tls-cert-renewed-not-reloaded")
    section = render_markdown(result).split("## Timeline of changes", 1)[1]
    tokens = MarkdownIt("commonmark").enable("table").parse(section)
    cells = [t.content for t in tokens if t.type == "inline"]
    assert cells[:4] == ["when", "kind", "what", "finding"]
    assert "`process.recent_restart`" in cells and "restart" in cells
    assert len(to_document(result)["timeline"]) == sum(1 for t in tokens if t.type == "tr_open") - 1


def test_markdown_report_same_diagnosis_twice_gives_same_bytes_but_the_time_line(kb):
    def normalised(result) -> str:
        text = render_markdown(result)
        text = re.sub(r"^_Diagnosed by prodx at .*$", "TIME", text, flags=re.M)
        # Probe durations are measurements of this run, like the time line.
        text = re.sub(r"\d+\.\d+ s\b", "N s", text)
        return text

    first, second = _diagnose(kb, "log-growth", SYMPTOMS), _diagnose(kb, "log-growth", SYMPTOMS)
    assert normalised(first) == normalised(second)
    doc = to_document(first)
    assert render_document(doc, kb) == render_document(doc, kb)


def test_markdown_report_has_no_control_characters_or_ansi(log_growth, kb):
    for text in (render_markdown(log_growth), render_markdown(_diagnose(kb, "memory-oom-kill"))):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)
        assert text.endswith("\n") and not text.endswith("\n\n")


def test_markdown_report_redacts_secrets_in_free_text(kb):
    text = render_markdown(_diagnose(kb, "log-growth", [SECRET_SYMPTOM]))
    assert "Sup3rS3cretPw" not in text and "hunter2xyz" not in text
    assert "[REDACTED]" in text


def test_diagnose_cli_markdown_from_symptoms_alone_prints_the_note():
    from click.testing import CliRunner

    from prodx.cli import cli

    result = CliRunner().invoke(cli, ["diagnose", "--markdown", "--no-probes", "--symptom", "No space left on device"])
    assert result.exit_code in (0, 1), result.output
    assert result.output.startswith("# Incident note: ")
    assert "_No probes run (`--no-probes`): reasoned from symptoms alone._" in result.output


def test_diagnose_cli_markdown_with_json_is_a_usage_error():
    from click.testing import CliRunner

    from prodx.cli import cli

    result = CliRunner().invoke(cli, ["diagnose", "--markdown", "--json", "--no-probes"])
    assert result.exit_code == 2
    assert "mutually exclusive" in result.output
