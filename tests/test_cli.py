"""The `prodx` command as a user runs it: JSON shape, exit codes, errors, help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest



def _prodx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prodx", *args], capture_output=True, text=True, timeout=60)


def test_cli_diagnose_json_follows_schema_and_sums_to_at_most_one():
    proc = _prodx("diagnose", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "prodx.diagnosis/1"
    assert set(doc) >= {"host", "started_at", "duration_s", "findings", "differential", "next_tests", "probes"}
    for f in doc["findings"]:
        assert set(f) >= {"id", "state", "summary", "evidence", "probe", "reason"}
        assert f["state"] in ("present", "absent", "unknown")
        if f["state"] == "unknown":
            assert f["reason"], f["id"]
    probs = [row["probability"] for row in doc["differential"]]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1.0 + 1e-6
    for row in doc["differential"]:
        assert set(row) >= {"condition", "name", "probability", "for", "against", "explains", "remedy"}
    assert {p["status"] for p in doc["probes"]} <= {"ok", "timeout", "error", "skipped", "unprivileged"}


def test_cli_diagnose_no_probes_seed_symptoms_point_at_storage_and_exit_1():
    proc = _prodx(
        "diagnose", "--no-probes", "--json",
        "--symptom", "login silently fails", "--symptom", "register page returns 503",
        "--symptom", "logs stopped updating", "--symptom", "last log line cut off mid-line",
    )
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert doc["probes"] == []
    top3 = [row["condition"] for row in doc["differential"][:3]]
    assert "disk-full" in top3
    assert doc["likely"]["condition"] == "disk-full"
    assert doc["next_tests"] and doc["next_tests"][0]["how"] == "probe"


def test_cli_diagnose_unmatched_symptom_is_reported_not_dropped():
    proc = _prodx("diagnose", "--no-probes", "--json", "--symptom", "the moon is blue")
    doc = json.loads(proc.stdout)
    assert doc["unmatched_symptoms"][0]["text"] == "the moon is blue"
    human = _prodx("diagnose", "--no-probes", "--symptom", "the moon is blue")
    assert "symptom not understood" in human.stdout and "the moon is blue" in human.stdout


def test_cli_diagnose_same_findings_give_byte_identical_differential():
    args = ("diagnose", "--no-probes", "--json", "--symptom", "login silently fails", "--symptom", "df shows free space")
    first, second = json.loads(_prodx(*args).stdout), json.loads(_prodx(*args).stdout)
    assert json.dumps(first["differential"]) == json.dumps(second["differential"])
    assert json.dumps(first["next_tests"]) == json.dumps(second["next_tests"])


def test_cli_diagnose_bad_profile_exits_2_naming_file_line_key(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_text('[app]\nname = "x"\nwritable = "/tmp"\n')
    proc = _prodx("diagnose", "--profile", str(bad))
    assert proc.returncode == 2
    assert f"{bad}:3: app.writable" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("args", [
    ("diagnose", "--no-probes", "--deadline", "nan"),
    ("diagnose", "--no-probes", "--deadline", "inf"),
    ("space", "--deadline", "nan", "/tmp"),
    ("logs", "--deadline", "nan", "/dev/null"),
    ("space", ""),
])
def test_cli_a_deadline_that_is_not_a_finite_number_or_an_empty_path_exits_2_naming_it(args):
    # A plain float range lets NaN through; an empty PATH silently meant the current folder.
    proc = _prodx(*args)
    assert proc.returncode == 2
    assert "Invalid value for '--deadline'" in proc.stderr or "Invalid value for 'PATH': is empty" in proc.stderr


def test_cli_diagnose_bad_kb_dir_exits_2(tmp_path):
    (tmp_path / "conditions").mkdir()
    (tmp_path / "conditions" / "x.yaml").write_text("id: x\nprior: [\n")
    proc = _prodx("diagnose", "--no-probes", "--kb", str(tmp_path))
    assert proc.returncode == 2
    assert "x.yaml:" in proc.stderr


@pytest.mark.parametrize("command", [("diagnose",), ("space",), ("logs",), ("kb", "lint"), ("kb", "list")])
def test_cli_help_teaches_each_command(command):
    proc = _prodx(*command, "--help")
    assert proc.returncode == 0
    assert "Usage:" in proc.stdout


def test_cli_diagnose_help_lists_the_spec_options_and_exit_codes():
    out = _prodx("diagnose", "--help").stdout
    for option in ("--profile", "--symptom", "--no-probes", "--as", "--deadline", "--kb", "--no-write-test", "--json"):
        assert option in out
    assert "Exit codes" in out


def test_cli_diagnose_no_write_test_skips_the_writing_probe():
    doc = json.loads(_prodx("diagnose", "--json", "--no-write-test").stdout)
    run = next(p for p in doc["probes"] if p["name"] == "storage.write_test")
    assert run["status"] == "skipped"


#: Words the symptom matcher maps to nothing: nothing said bears on any condition.
_NOT_UNDERSTOOD = ("the frobnicator is grumpy", "our customers are unhappy")


def test_cli_diagnose_nothing_understood_says_not_enough_to_go_on_and_exits_0():
    args = [a for text in _NOT_UNDERSTOOD for a in ("--symptom", text)]
    human = _prodx("diagnose", "--no-probes", *args)
    assert human.returncode == 0, human.stderr
    assert "NOT ENOUGH TO GO ON" in human.stdout
    for text in _NOT_UNDERSTOOD:
        assert text in human.stdout
    assert "Questions to answer" in human.stdout
    # No ranking by prior: no differential table, no "leading" condition, no remedy.
    assert "Differential" not in human.stdout and "Leading" not in human.stdout and "Remedy" not in human.stdout

    proc = _prodx("diagnose", "--no-probes", "--json", *args)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0
    assert doc["enough_to_go_on"] is False
    assert [u["text"] for u in doc["unmatched_symptoms"]] == list(_NOT_UNDERSTOOD)
    assert doc["next_tests"], "the questions to answer"
    assert doc["differential"], "the field keeps its meaning: the (prior) posterior, sorted"

    note = _prodx("diagnose", "--no-probes", "--markdown", *args)
    assert note.returncode == 0
    assert note.stdout.startswith("# Incident note: ") and "not enough to go on" in note.stdout.splitlines()[0]
    assert "**Not enough to go on.**" in note.stdout and "## Questions to answer" in note.stdout
    assert "## Differential" not in note.stdout and "## Remedy" not in note.stdout


def test_cli_diagnose_one_understood_symptom_is_enough_to_go_on():
    proc = _prodx("diagnose", "--no-probes", "--json", "--symptom", _NOT_UNDERSTOOD[0], "--symptom", "No space left on device")
    doc = json.loads(proc.stdout)
    assert doc["enough_to_go_on"] is True
    assert doc["differential"][0]["condition"] in {"disk-full", "inode-exhaustion", "log-growth", "disk-full-reserved-blocks"}
    human = _prodx("diagnose", "--no-probes", "--symptom", "No space left on device")
    assert "NOT ENOUGH" not in human.stdout and "Differential" in human.stdout


def test_cli_an_unexpected_error_in_any_command_is_one_line_and_exit_3(monkeypatch, capsys):
    import prodx.cli

    def broken() -> None:
        raise KeyError("boom")

    monkeypatch.setattr(prodx.cli, "cli", broken)
    monkeypatch.delenv("PRODX_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        prodx.cli.main()
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith("prodx: internal error: KeyError: 'boom'") and err.count("\n") == 1
    monkeypatch.setenv("PRODX_DEBUG", "1")
    with pytest.raises(KeyError):
        prodx.cli.main()


def test_cli_a_symptom_far_longer_than_a_sentence_is_refused_at_once():
    # Reading is not linear in a symptom's length: 1 MB took 65 s (an argument is at most 128 KiB).
    proc = _prodx("diagnose", "--no-probes", "--symptom", "ok", "--symptom", "disk full " * 10_000)
    assert proc.returncode == 2
    assert "symptom 2 has 100,000 characters" in proc.stderr


def test_cli_space_on_a_symlink_loop_or_an_overlong_name_exits_2_naming_it(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for path in (tmp_path / "a", tmp_path / ("x" * 300)):
        proc = _prodx("space", str(path))
        assert proc.returncode in (2,), proc.stderr
        assert str(path) in proc.stderr


def test_cli_names_and_symptoms_that_are_not_utf8_print_under_a_strict_encoding(tmp_path):
    # A file name or a symptom with a byte that is not UTF-8 raised UnicodeEncodeError.
    import os

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / os.fsdecode(b"caf\xe9.log")).write_bytes(b"x" * 10)
    env = dict(os.environ, LC_ALL="C.UTF-8", PYTHONIOENCODING="utf-8:strict")
    for args in (("space", str(tmp_path / "data")),
                 ("diagnose", "--no-probes", "--symptom", os.fsdecode(b"caf\xe9: no space left on device"))):
        proc = subprocess.run([sys.executable, "-m", "prodx", *args], capture_output=True, timeout=60, env=env)
        assert proc.returncode in (0, 1), proc.stderr
        assert b"caf\\udce9" in proc.stdout


def test_cli_version_and_logs_say_which_log_engine_runs(tmp_path):
    from prodx.scanners.logscan import engine_name

    proc = _prodx("--version")
    assert proc.returncode == 0 and f"(log engine: {engine_name()})" in proc.stdout
    log = tmp_path / "error.log"
    log.write_text("2024/03/02 10:41:07 [crit] 1#0: pwrite() failed (28: No space left on device)\n")
    proc = subprocess.run([sys.executable, "-m", "prodx", "logs", str(log)], capture_output=True, text=True, timeout=60)
    assert f"log engine: {engine_name()}" in proc.stdout


def test_the_default_install_brings_hyperscan_where_wheels_exist():
    import platform
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("hyperscan") and "x86_64" in d for d in project["dependencies"])
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        from prodx.scanners.logscan import engine_name

        assert engine_name().startswith("hyperscan")
