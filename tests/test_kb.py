"""The knowledge base: the shipped one loads and lints clean; bad files fail with file,
line and field; site directories extend it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prodx.kb.lint import lint
from prodx.kb.loader import DATA_DIR, KBError, load_kb
from prodx.probes import load_all

REQUIRED = {
    "disk-full", "disk-full-reserved-blocks", "inode-exhaustion", "deleted-open-files", "filesystem-readonly",
    "disk-quota", "permission-denied", "ownership-changed", "log-growth", "cache-growth", "session-store-full",
    "io-errors",
}


def test_kb_shipped_has_every_required_condition(kb):
    assert REQUIRED <= set(kb.conditions)


def test_kb_shipped_lints_clean(kb):
    issues = lint(kb, {name: cls.findings for name, cls in load_all().items()})
    assert [str(i) for i in issues] == []


def test_kb_refinements_form_the_documented_chains(kb):
    assert kb.chain("log-growth") == ["log-growth", "disk-full"]
    assert kb.chain("cache-growth") == ["cache-growth", "disk-full"]
    assert kb.chain("session-store-full")[-1] == "inode-exhaustion"


def test_kb_every_condition_has_a_safe_first_step_and_something_to_avoid(kb):
    for cond in kb.conditions.values():
        assert any(step.risk == "safe" for step in cond.remedy), cond.id
        assert cond.avoid, cond.id


def _site_kb(tmp_path: Path, condition_text: str) -> Path:
    site = tmp_path / "site"
    (site / "conditions").mkdir(parents=True)
    (site / "conditions" / "my-cond.yaml").write_text(condition_text)
    return site


def test_kb_bad_probability_error_names_file_line_and_field(tmp_path):
    text = (DATA_DIR / "conditions" / "disk-full.yaml").read_text().replace("id: disk-full", "id: my-cond", 1)
    text = text.replace("prior: ", "prior: 7 #", 1)
    site = _site_kb(tmp_path, text)
    with pytest.raises(KBError) as err:
        load_kb((str(site),))
    message = str(err.value)
    assert "my-cond.yaml:" in message and ": prior:" in message
    line = int(message.split("my-cond.yaml:")[1].split(":")[0])
    assert text.splitlines()[line - 1].startswith("prior:")


def test_kb_unknown_field_error_names_it(tmp_path):
    text = (DATA_DIR / "conditions" / "disk-full.yaml").read_text().replace("id: disk-full", "id: my-cond", 1)
    text += "\nseverity: high\n"
    with pytest.raises(KBError, match=r"my-cond.yaml:\d+: severity: unknown field"):
        load_kb((str(_site_kb(tmp_path, text)),))


def test_kb_broken_yaml_error_names_line(tmp_path):
    with pytest.raises(KBError, match=r"my-cond.yaml:2: .*invalid YAML"):
        load_kb((str(_site_kb(tmp_path, "id: my-cond\nname: [unclosed\n")),))


def test_kb_key_given_twice_is_refused_with_its_line(tmp_path):
    """YAML would keep the second silently (a second `findings:` drops the first's values)."""
    text = (DATA_DIR / "conditions" / "disk-full.yaml").read_text().replace("id: disk-full", "id: my-cond", 1)
    text += "\nprior: 0.5\n"
    line = len(text.splitlines())
    with pytest.raises(KBError, match=rf"my-cond.yaml:{line}: .*'prior' is given twice"):
        load_kb((str(_site_kb(tmp_path, text)),))


def _my_cond(**replace: str) -> str:
    text = (DATA_DIR / "conditions" / "disk-full.yaml").read_text().replace("id: disk-full", "id: my-cond", 1)
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new, 1)
    return text


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_kb_a_prior_that_is_not_a_finite_number_is_refused_with_its_line(tmp_path, value):
    # JSON Schema's bounds let NaN through (every comparison with it is false): every condition
    # then read "<1 %".
    text = _my_cond(**{"prior: ": f"prior: {value} #"})
    line = next(n for n, s in enumerate(text.splitlines(), 1) if s.startswith("prior:"))
    with pytest.raises(KBError, match=rf"my-cond.yaml:{line}: prior: not a finite number"):
        load_kb((str(_site_kb(tmp_path, text)),))


def test_kb_refines_must_name_a_condition_and_make_no_cycle(tmp_path):
    with pytest.raises(KBError, match=r"my-cond.yaml:\d+: refines: names no condition of the KB: 'disk-fulll'"):
        load_kb((str(_site_kb(tmp_path / "a", _my_cond(**{"\nfindings:": "\nrefines: disk-fulll\nfindings:"}))),))
    with pytest.raises(KBError, match=r"refines: refinement cycle: my-cond -> my-cond"):
        load_kb((str(_site_kb(tmp_path / "b", _my_cond(**{"\nfindings:": "\nrefines: my-cond\nfindings:"}))),))


def test_kb_explains_and_tests_must_name_findings_of_the_kb(tmp_path):
    text = _my_cond(**{"\nexplains:\n": "\nexplains:\n  symptom.no_such_thing: this names nothing at all\n"})
    with pytest.raises(KBError, match=r"my-cond.yaml:\d+: explains: names no finding of the KB: 'symptom.no_such_thing'"):
        load_kb((str(_site_kb(tmp_path, text)),))


@pytest.mark.parametrize(("pattern", "problem"), [
    ("No space (left", "not a valid regex"),
    # On one long line this never returns in re, which holds the GIL: no deadline fires.
    ("^(\\w+\\s?)*$", "nests an unbounded repetition"),
])
def test_kb_a_signature_that_does_not_compile_or_backtracks_without_bound_is_refused_at_load(tmp_path, pattern, problem):
    site = tmp_path / "site"
    (site / "signatures").mkdir(parents=True)
    (site / "signatures" / "mine.yaml").write_text(
        f"- id: my_sig\n  finding: log.enospc\n  pattern: '{pattern}'\n  description: a bad pattern\n")
    with pytest.raises(KBError, match=rf"mine.yaml:3: \[0\].pattern: {problem}"):
        load_kb((str(site),))


def test_kb_an_alias_bomb_is_refused_at_once(tmp_path):
    # "Billion laughs": nine levels of ten aliases parse small and walk to 10^9 values.
    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    site = tmp_path / "site"
    (site / "conditions").mkdir(parents=True)
    (site / "conditions" / "my-cond.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(KBError, match="may not use anchors and aliases"):
        load_kb((str(site),))


def test_kb_a_fifo_among_the_kb_files_is_refused_without_being_read(tmp_path):
    site = tmp_path / "site"
    (site / "conditions").mkdir(parents=True)
    os.mkfifo(site / "conditions" / "my-cond.yaml")
    with pytest.raises(KBError, match=r"my-cond.yaml: .*not a regular file"):
        load_kb((str(site),))


def test_kb_site_condition_extends_the_shipped_kb(tmp_path):
    text = (DATA_DIR / "conditions" / "disk-full.yaml").read_text().replace("id: disk-full", "id: my-cond", 1)
    kb = load_kb((str(_site_kb(tmp_path, text)),))
    assert "my-cond" in kb.conditions and "disk-full" in kb.conditions


def test_kb_lint_flags_unknown_finding_and_indistinguishable_conditions(tmp_path, kb):
    text = (DATA_DIR / "conditions" / "disk-full.yaml").read_text()
    site = _site_kb(tmp_path, text.replace("id: disk-full", "id: my-cond", 1).replace("storage.full:", "storage.fulll:", 1))
    issues = [str(i) for i in lint(load_kb((str(site),)), {n: c.findings for n, c in load_all().items()})]
    assert any("unknown finding id storage.fulll" in i for i in issues)
    twin = _site_kb(tmp_path / "twin", text.replace("id: disk-full", "id: my-cond", 1))
    issues = [str(i) for i in lint(load_kb((str(twin),)), {n: c.findings for n, c in load_all().items()})]
    assert any("disk-full and my-cond" in i and "no finding tells them apart" in i for i in issues)


def _lint_site(tmp_path: Path, text: str, name: str = "site") -> list[str]:
    site = _site_kb(tmp_path / name, text.replace("id: disk-full", "id: my-cond", 1))
    return [str(i) for i in lint(load_kb((str(site),)), {n: c.findings for n, c in load_all().items()})]


def _disk_full() -> str:
    return (DATA_DIR / "conditions" / "disk-full.yaml").read_text()


def test_kb_lint_flags_a_value_its_comment_calls_below_the_leak(tmp_path):
    text = _disk_full().replace("  storage.reserved_only: 0.003\n", "  storage.reserved_only: 0.05\n", 1)
    issues = _lint_site(tmp_path, text)
    line = next(n for n, s in enumerate(text.splitlines(), 1) if s.startswith("  storage.reserved_only:"))
    assert any(f"my-cond.yaml:{line})" in i and "storage.reserved_only: 0.05 is not below its leak 0.005" in i
               for i in issues), issues
    # A comment heads the entries below it up to the next comment or blank line, no further.
    assert not any("storage.inodes_exhausted" in i and "below" in i for i in issues)


def test_kb_lint_flags_a_symptom_above_its_leak_without_explains(tmp_path):
    text = _disk_full().replace("  symptom.http_403: 0.01\n", "  symptom.http_403: 0.2\n", 1)
    issues = _lint_site(tmp_path, text)
    assert any("findings.symptom.http_403: 0.2 is above its leak 0.03 without an explains entry" in i for i in issues)


def test_kb_lint_flags_an_unlisted_value_not_below_the_leak():
    import dataclasses

    kb = load_kb()
    fdef = kb.findings["symptom.compromised"]
    broken = dataclasses.replace(kb, findings={**kb.findings, fdef.id: dataclasses.replace(fdef, unlisted=fdef.leak)})
    issues = [str(i) for i in lint(broken, {n: c.findings for n, c in load_all().items()})]
    assert any("symptom.compromised" in i and "is not below its leak" in i for i in issues), issues


def test_kb_lint_flags_a_phrase_naming_a_word_class_the_lexicon_lacks():
    """An unknown "@class" matches nothing, so the phrase would silently never work."""
    import dataclasses

    kb = load_kb()
    fdef = kb.findings["symptom.cert_expired"]
    broken = dataclasses.replace(kb, findings={**kb.findings, fdef.id: dataclasses.replace(
        fdef, phrases=(*fdef.phrases, "@expire soon"), negations=(*fdef.negations, "@cert is fine"))})
    issues = [str(i) for i in lint(broken, {n: c.findings for n, c in load_all().items()})]
    assert any("symptom.cert_expired" in i and "@expire is no word class" in i for i in issues), issues
    assert not any("@cert" in i for i in issues), issues


def test_kb_lint_flags_a_phrase_listed_twice():
    import dataclasses

    kb = load_kb()
    fdef = kb.findings["symptom.disk_filling"]
    broken = dataclasses.replace(kb, findings={**kb.findings, fdef.id: dataclasses.replace(
        fdef, phrases=(*fdef.phrases, fdef.phrases[0].upper()))})
    issues = [str(i) for i in lint(broken, {n: c.findings for n, c in load_all().items()})]
    assert any("symptom.disk_filling" in i and "is listed 2 times" in i for i in issues), issues


def test_kb_lint_flags_risky_commands_marked_safe_and_passes_reloads(tmp_path):
    text = _disk_full().replace("command: \"apt-get clean\"", "command: \"rm -rf /var/cache/apt/archives/*.deb\"", 1)
    issues = _lint_site(tmp_path, text, "rm")
    assert any("my-cond" in i and "is marked safe but its command deletes files: mark it data-loss" in i for i in issues)
    text = _disk_full().replace("command: \"apt-get clean\"", "command: \"nginx -t && systemctl reload nginx\"", 1)
    assert not any("my-cond" in i and "is marked" in i for i in _lint_site(tmp_path, text, "reload"))


def test_kb_lint_flags_a_path_from_a_write_up_and_takes_a_site_s_generic_paths(tmp_path):
    text = _disk_full().replace("du -xh --max-depth=3 /", "du -xh --max-depth=3 /home/deploy/forum", 1)
    assert any("my-cond" in i and "'/home/deploy/forum' is not a generic path" in i for i in _lint_site(tmp_path, text))
    site = _site_kb(tmp_path / "own", text.replace("id: disk-full", "id: my-cond", 1))
    (site / "lint.yaml").write_text("generic_paths:\n  - /home/deploy/*\n")
    issues = [str(i) for i in lint(load_kb((str(site),)), {n: c.findings for n, c in load_all().items()})]
    assert not any("/home/deploy/forum" in i for i in issues)


def test_kb_lint_command_exits_zero_on_shipped_kb():
    proc = subprocess.run([sys.executable, "-m", "prodx", "kb", "lint"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 problem(s)" in proc.stdout


def test_kb_list_command_lists_every_condition():
    proc = subprocess.run([sys.executable, "-m", "prodx", "kb", "list"], capture_output=True, text=True)
    assert proc.returncode == 0
    for cid in REQUIRED:
        assert cid in proc.stdout


def test_finding_outside_the_catalogue_makes_none_of_the_known_lead():
    """A finding with an ``unlisted`` value (an intrusion, a hardware fault) is what a failure
    the catalogue does not describe shows: alone it makes "none of the known conditions" lead;
    with a listing condition's own evidence beside it, that condition leads."""
    from prodx.engine.likelihood import marginal
    from prodx.engine.posterior import rank
    from prodx.model import FindingState

    kb = load_kb()
    fdef = kb.findings["symptom.compromised"]
    assert fdef.unlisted is not None and fdef.unlisted < fdef.leak
    assert marginal(kb, kb.conditions["disk-full"])("symptom.compromised") == fdef.unlisted
    assert marginal(kb, None)("symptom.compromised") == fdef.leak

    alone = rank(kb, {"symptom.compromised": FindingState.PRESENT})
    assert alone.none_probability > 0.5
    unlisting = next(r for r in alone.ranked if "symptom.compromised" not in kb.conditions[r.condition].findings)
    assert "symptom.compromised" in unlisting.against

    miner = rank(kb, {f: FindingState.PRESENT for f in
                      ("symptom.compromised", "symptom.unknown_process", "symptom.process_cpu_hog", "symptom.cpu_high")})
    assert miner.leader.condition == "runaway-process"
    assert miner.leader.probability > miner.none_probability


# --- how incidents are told (reports.yaml) ----------------------------------------------------

def _reports(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "reports.yaml"
    path.write_text("strength: 10\nconditions:\n" + body, encoding="utf-8")
    return path


def test_told_symptom_likelihood_blends_the_file_value_with_the_counted_incidents(tmp_path):
    from prodx.kb.loader import blend_reports

    kb = load_kb(told=False)
    disk, logs, oom = kb.conditions["disk-full"], kb.conditions["log-growth"], kb.conditions["memory-oom"]
    p_disk, p_logs = kb.likelihood(disk, "symptom.no_space_error"), kb.likelihood(logs, "symptom.no_space_error")
    blend_reports(kb, _reports(tmp_path, "  disk-full:\n    incidents: 10\n    stated:\n      symptom.no_space_error: 9\n"
                                         "  log-growth:\n    incidents: 10\n    stated:\n      symptom.oom: 1\n"))
    # The propensity: 9 statements where the files expect 10·p_disk + 10·p_logs true ones.
    m = 9 / (10 * p_disk + 10 * p_logs)
    assert kb.likelihood(disk, "symptom.no_space_error") == pytest.approx((9 + 10 * p_disk) / (10 * m + 10))
    assert kb.likelihood(logs, "symptom.no_space_error") == pytest.approx(10 * p_logs / (10 * m + 10))
    assert kb.likelihood(disk, "symptom.no_space_error") > p_disk
    assert kb.likelihood(logs, "symptom.no_space_error") < p_logs
    # Probe findings, symptoms nobody stated, conditions without counts and the leaks keep
    # the files' values; so does a finding's `unlisted` value.
    assert kb.likelihood(disk, "storage.full") == disk.findings["storage.full"]
    assert kb.likelihood(disk, "symptom.du_df_disagree") == kb.written_likelihood(disk, "symptom.du_df_disagree")
    assert kb.likelihood(oom, "symptom.no_space_error") == kb.written_likelihood(oom, "symptom.no_space_error")
    assert kb.likelihood(None, "symptom.no_space_error") == kb.findings["symptom.no_space_error"].leak


def test_told_counts_move_the_differential_toward_what_incidents_of_a_cause_say(tmp_path):
    from prodx.engine.posterior import posterior
    from prodx.kb.loader import blend_reports

    kb = load_kb(told=False)
    observed = {"symptom.backup_running": True, "symptom.no_space_error": True}
    before, _ = posterior(kb, observed)
    # Backup incidents state both; memory incidents, which the files expect to show them as
    # seldom, state neither: the symptoms move toward backup-job.
    blend_reports(kb, _reports(tmp_path, "  backup-job:\n    incidents: 20\n    stated:\n"
                                         "      symptom.backup_running: 18\n      symptom.no_space_error: 18\n"
                                         "  memory-oom:\n    incidents: 20\n  disk-full:\n    incidents: 20\n"
                                         "    stated:\n      symptom.no_space_error: 2\n"))
    after, _ = posterior(kb, observed)
    assert after["backup-job"] > before["backup-job"]


def test_shipped_reports_are_blended_by_default_and_left_out_on_request():
    told, files = load_kb(), load_kb(told=False)
    cond = told.conditions["disk-full"]
    assert told.likelihood(cond, "symptom.no_space_error") != files.likelihood(files.conditions["disk-full"], "symptom.no_space_error")
    assert files.likelihood(files.conditions["disk-full"], "symptom.no_space_error") == cond.findings["symptom.no_space_error"]


def test_kb_lint_flags_reports_naming_unknown_conditions_non_symptoms_or_too_many_statements(tmp_path, kb):
    from prodx.kb.lint import lint_reports

    path = _reports(tmp_path, "  no-such-condition:\n    incidents: 1\n"
                              "  disk-full:\n    incidents: 2\n    stated:\n      storage.full: 1\n      symptom.oom: 3\n")
    messages = [str(i) for i in lint_reports(kb, path)]
    assert any("unknown condition id no-such-condition" in m for m in messages)
    assert any("storage.full is no symptom finding" in m for m in messages)
    assert any("symptom.oom in 3 of 2 incidents" in m for m in messages)
    assert len(messages) == 3


def test_kb_reports_with_a_bad_field_name_the_file_line_and_field(tmp_path):
    from prodx.kb.loader import load_reports

    path = _reports(tmp_path, "  disk-full:\n    incidents: many\n")
    with pytest.raises(KBError) as err:
        load_reports(path)
    assert "reports.yaml:4" in str(err.value) and "conditions.disk-full.incidents" in str(err.value)
