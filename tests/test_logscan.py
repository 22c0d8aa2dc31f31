"""Tests of the log scanner, the signature catalogue and `prodx logs`, on real files."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prodx.kb.loader import load_kb
from prodx.scanners import logscan
from prodx.scanners.logscan import (
    Backend,
    Compression,
    FileScan,
    Matcher,
    load_signatures,
    required_literals,
    scan_file,
    scan_tail,
)
from prodx.scanners.timestamps import parse_ts

hyperscan = pytest.importorskip("hyperscan")

SIGS = load_signatures()
BACKENDS = [Backend.HYPERSCAN, Backend.RE]
MATCHERS = {b: Matcher(SIGS, backend=b) for b in BACKENDS}

NGINX_ENOSPC = ('2024/03/02 10:41:07 [crit] 1234#0: *88 pwrite() "/var/lib/nginx/body/0000000012" '
                'failed (28: No space left on device)')
PHP_SESSION = ("[02-Mar-2024 10:41:09 UTC] PHP Warning:  Unknown: Failed to write session data "
               "(files). Please verify that the current setting of session.save_path is correct "
               "(/var/lib/php/sessions) in Unknown on line 0")
ACCESS = ('203.0.113.7 - - [02/Mar/2024:10:41:08 +0000] "GET /login HTTP/1.1" 200 512 "-" '
          '"Mozilla/5.0"')
KERNEL = "[12345.678901] EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm nginx"

SAMPLE = "\n".join([ACCESS, NGINX_ENOSPC, ACCESS, PHP_SESSION, KERNEL, ACCESS]) + "\n"

# Every finding the signatures support must be in the catalogue (the single source of ids).
FINDINGS = set(load_kb().findings)


def _summary(fs: FileScan) -> dict:
    doc = fs.to_json()
    doc.pop("mtime")
    return doc


def _backslash_in_class(pattern: str) -> bool:
    in_class, i = False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if in_class:
                return True
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            i += 2 if pattern[i + 1 : i + 2] in ("]", "^") else 1
            continue
        if ch == "]" and in_class:
            in_class = False
        i += 1
    return False


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- catalogue ------------------------------------------------------------------------


def test_catalogue_loads_with_enough_signatures_and_known_findings():
    assert 40 <= len(SIGS) <= 120
    assert {s.finding for s in SIGS} <= FINDINGS
    assert all(s.examples for s in SIGS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sig", SIGS, ids=lambda s: s.id)
def test_catalogue_example_matches_its_own_signature(sig, backend):
    m = Matcher([sig], backend=backend)
    buf = bytearray("\n".join(sig.examples).encode() + b"\n")
    matched = m.match_lines(buf, 0, len(buf))
    assert len(matched) == len(sig.examples), f"{sig.id}: an example does not match"


@pytest.mark.parametrize("sig", SIGS, ids=lambda s: s.id)
def test_catalogue_pattern_stays_in_the_portable_dialect(sig):
    forbidden = [r"(?", r"\d", r"\w", r"\s", r"\b", r"\D", r"\W", r"\S", r"\B"]
    assert not [f for f in forbidden if f in sig.pattern], sig.pattern
    assert not _backslash_in_class(sig.pattern), "backslash inside [...] is literal in ERE"
    assert required_literals(sig), "no literal prefilter: the re backend would test every line"


@pytest.mark.parametrize("sig", SIGS, ids=lambda s: s.id)
def test_catalogue_pattern_matches_the_same_under_grep(sig, tmp_path):
    examples = _write(tmp_path / "ex.log", "\n".join(sig.examples).encode() + b"\n")
    r = subprocess.run(["grep", "-c", "-E", "-e", sig.pattern, str(examples)],
                       env={**os.environ, "LC_ALL": "C"}, capture_output=True, text=True)
    assert r.stdout.strip() == str(len(sig.examples)), r.stderr


@pytest.mark.parametrize("line, unrelated", [
    (NGINX_ENOSPC, ["permission_denied", "readonly_fs", "too_many_open_files", "oom_kill"]),
    (PHP_SESSION, ["enospc", "permission_denied", "twig_cache_dir_unwritable"]),
    (ACCESS, [s.id for s in SIGS]),
    ("2024/03/02 10:41:07 [error] 1#0: *7 upstream timed out (110: Connection timed out)",
     ["connection_refused", "nginx_connect_refused", "enospc"]),
    ("Mar  2 10:41:07 web1 kernel: Out of memory: Killed process 4321 (php-fpm8.2)",
     ["enomem", "php_memory_exhausted", "db_out_of_memory"]),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_catalogue_line_does_not_match_unrelated_signatures(line, unrelated, backend):
    buf = bytearray(line.encode() + b"\n")
    m = MATCHERS[backend]
    got = {m.signatures[i].id for _, _, i in m.match_lines(buf, 0, len(buf))}
    assert not got & set(unrelated)


def test_load_signatures_on_malformed_entry_names_file_line_and_field(tmp_path):
    bad = tmp_path / "sigs.yaml"
    bad.write_text(textwrap.dedent("""\
        - id: fine
          finding: log.enospc
          pattern: 'No space'
          description: "A fine entry for the test."
        - id: broken
          finding: log.enospc
          pattern: 'unbalanced ('
          description: "An entry whose regex does not compile."
        """))
    with pytest.raises(ValueError, match=r"sigs\.yaml:5: entry 1: pattern"):
        load_signatures(bad)
    bad.write_text("- id: x\n  finding: nodot\n  pattern: abc\n  description: 'long enough'\n")
    with pytest.raises(ValueError, match=r"sigs\.yaml:1: entry 0: finding"):
        load_signatures(bad)
    bad.write_text("- id: x\n  finding: log.x\n  pattern: abc\n")
    with pytest.raises(ValueError, match="description: missing"):
        load_signatures(bad)


# --- scanning -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_file_on_mixed_log_counts_hits_with_times_and_lines(tmp_path, backend):
    path = _write(tmp_path / "app.log", SAMPLE.encode())
    fs = scan_file(path, MATCHERS[backend])
    assert fs.error == "" and not fs.partial and not fs.binary and not fs.truncated_tail
    assert fs.lines == 6 and fs.bytes_read == fs.size_bytes == len(SAMPLE.encode())
    assert set(fs.hits) == {"enospc", "php_session_write_failed", "ext4_fs_error"}
    enospc = fs.hits["enospc"]
    assert (enospc.count, enospc.first_line_no, enospc.last_line_no) == (1, 2, 2)
    assert enospc.first_ts == enospc.last_ts == "2024-03-02T10:41:07"
    assert enospc.finding == "log.enospc" and "No space left" in enospc.example
    assert fs.hits["php_session_write_failed"].first_ts == "2024-03-02T10:41:09+00:00"
    ext4 = fs.hits["ext4_fs_error"]
    assert ext4.first_ts is None and ext4.first_line_no == 5


def test_scan_file_backends_agree_on_a_varied_log(tmp_path):
    lines = []
    for i, sig in enumerate(SIGS):
        lines.extend([ACCESS] * (i % 7))
        lines.extend(sig.examples)
    data = ("\n".join(lines) + "\n").encode() * 3
    path = _write(tmp_path / "varied.log", data)
    hs, rx = (scan_file(path, MATCHERS[b]) for b in BACKENDS)
    assert _summary(hs) == _summary(rx)
    assert len(hs.hits) == len(SIGS)


def test_scan_file_backends_agree_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(logscan, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(logscan, "LINE_CAP_BYTES", 1024)
    filler = "x" * 3000
    body = "\n".join([NGINX_ENOSPC, filler, PHP_SESSION + " " + "y" * 2000, ACCESS] * 50)
    path = _write(tmp_path / "chunky.log", body.encode())
    hs, rx = (scan_file(path, MATCHERS[b]) for b in BACKENDS)
    assert _summary(hs) == _summary(rx)
    assert hs.hits["enospc"].count == 50 and hs.hits["php_session_write_failed"].count == 50
    assert hs.lines == 200 and hs.long_lines > 0 and hs.truncated_tail


@pytest.mark.parametrize("kind, opener", [
    (Compression.GZIP, gzip.compress), (Compression.BZIP2, bz2.compress),
    (Compression.XZ, lzma.compress)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_file_on_compressed_rotation_reads_it_by_magic_bytes(tmp_path, kind, opener, backend):
    # Named without the usual suffix: detection is by content.
    path = _write(tmp_path / "error.log.1", opener(SAMPLE.encode()))
    fs = scan_file(path, MATCHERS[backend])
    assert fs.compression is kind and fs.error == ""
    assert fs.bytes_read == len(SAMPLE.encode()) and fs.lines == 6
    assert set(fs.hits) == {"enospc", "php_session_write_failed", "ext4_fs_error"}


def test_scan_file_on_corrupt_gzip_reports_error_and_keeps_hits(tmp_path):
    data = gzip.compress((SAMPLE * 20000).encode())
    path = _write(tmp_path / "cut.log.gz", data[: len(data) // 2])
    fs = scan_file(path, MATCHERS[Backend.HYPERSCAN])
    assert fs.error.startswith("corrupt gzip data")
    assert fs.hits["enospc"].count > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_file_on_non_utf8_bytes_matches_and_replaces_in_example(tmp_path, backend):
    line = b"2024/03/02 10:41:07 [crit] caf\xe9 \xff\xfe open() failed (28: No space left on device)\n"
    path = _write(tmp_path / "latin1.log", b"\xc3\x28 ok\n" + line)
    fs = scan_file(path, MATCHERS[backend])
    assert fs.hits["enospc"].count == 1
    assert "\ufffd" in fs.hits["enospc"].example


def test_scan_file_on_binary_file_reports_binary_and_matches_nothing(tmp_path):
    path = _write(tmp_path / "core", b"\x7fELF\x00\x00\x01" + NGINX_ENOSPC.encode() + b"\n")
    fs = scan_file(path, MATCHERS[Backend.HYPERSCAN])
    assert fs.binary and fs.hits == {} and fs.error == ""


def test_scan_file_without_trailing_newline_reports_truncated_tail(tmp_path):
    path = _write(tmp_path / "cut.log", (SAMPLE + "2024/03/02 10:41:10 [error] 1#0: write fa").encode())
    fs = scan_file(path, MATCHERS[Backend.HYPERSCAN])
    assert fs.truncated_tail and fs.lines == 7
    assert fs.last_line == "2024/03/02 10:41:10 [error] 1#0: write fa"


def test_scan_file_on_empty_file_reports_nothing(tmp_path):
    fs = scan_file(_write(tmp_path / "empty.log", b""), MATCHERS[Backend.HYPERSCAN])
    assert (fs.lines, fs.truncated_tail, fs.hits, fs.error) == (0, False, {}, "")


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_file_on_huge_single_line_stays_bounded_and_matches_its_head(tmp_path, backend):
    head = NGINX_ENOSPC.encode() + b" "
    size = 20 << 20
    path = tmp_path / "huge.log"
    with open(path, "wb") as f:
        f.write(head)
        block = b"A" * (1 << 20)
        for _ in range(size // len(block)):
            f.write(block)
        # A signature beyond the 64 KiB cap is not matched (documented behaviour).
        f.write(b" Too many open files")
    fs = scan_file(path, MATCHERS[backend])
    assert fs.lines == 1 and fs.long_lines == 1 and fs.truncated_tail
    assert set(fs.hits) == {"enospc"}
    assert fs.bytes_read == fs.size_bytes
    assert len(fs.last_line) <= logscan.EXAMPLE_CHARS and len(fs.hits["enospc"].example) <= 300


def test_scan_file_huge_line_then_normal_lines_counts_lines(tmp_path):
    path = tmp_path / "mixed.log"
    path.write_bytes(b"B" * (3 << 20) + b"\n" + SAMPLE.encode())
    fs = scan_file(path, MATCHERS[Backend.HYPERSCAN])
    assert fs.lines == 7 and fs.long_lines == 1 and not fs.truncated_tail
    assert fs.hits["enospc"].first_line_no == 3


def test_scan_file_on_missing_file_reports_vanished(tmp_path):
    fs = scan_file(tmp_path / "gone.log", MATCHERS[Backend.HYPERSCAN])
    assert fs.error.startswith("ENOENT: vanished") and fs.hits == {}


def test_scan_file_on_file_removed_after_listing_reports_vanished(tmp_path):
    listed = [_write(tmp_path / f"{i}.log", SAMPLE.encode()) for i in range(3)]
    listed[1].unlink()
    scans = logscan.scan_paths(listed, MATCHERS[Backend.HYPERSCAN])
    assert [bool(s.error) for s in scans] == [False, True, False]
    assert scans[1].error.startswith("ENOENT") and scans[2].hits["enospc"].count == 1


def test_scan_file_on_directory_and_fifo_reports_error_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    assert scan_file(tmp_path, MATCHERS[Backend.RE]).error.startswith("EISDIR")
    assert scan_file(fifo, MATCHERS[Backend.RE]).error == "not a regular file"


def test_scan_file_unreadable_for_unprivileged_user_reports_eacces(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to uid 65534 in a child process")
    path = _write(tmp_path / "secret.log", SAMPLE.encode())
    path.chmod(0o600)
    tmp_path.chmod(0o755)
    # Import and compile as root (the interpreter may live under /root), then drop.
    code = ("import os, json, sys; from prodx.scanners.logscan import *;"
            "m = Matcher(load_signatures(), backend='re');"
            "os.setgid(65534); os.setuid(65534);"
            "fs = scan_file(sys.argv[1], m);"
            "print(json.dumps(fs.to_json()))")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["error"].startswith("EACCES") and doc["hits"] == []


def test_scan_file_with_spent_deadline_is_partial(tmp_path):
    path = _write(tmp_path / "big.log", SAMPLE.encode() * 40000)
    fs = scan_file(path, MATCHERS[Backend.HYPERSCAN], deadline_s=0.0)
    assert fs.partial and "deadline" in fs.partial_reason
    assert fs.bytes_read < fs.size_bytes


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_tail_reads_only_the_tail_and_skips_its_partial_first_line(tmp_path, backend):
    old = (NGINX_ENOSPC + "\n").encode() * 1000
    recent = SAMPLE.encode()
    path = _write(tmp_path / "error.log", old + recent)
    fs = scan_tail(path, MATCHERS[backend], tail_bytes=len(recent) + 10)
    assert fs.bytes_read == len(recent) + 10 and fs.offset_bytes == len(old) - 10
    assert fs.lines == 6
    assert fs.hits["enospc"].count == 1 and fs.hits["enospc"].first_line_no == 2


def test_scan_tail_on_compressed_rotation_does_not_read_it(tmp_path):
    path = _write(tmp_path / "error.log.2.gz", gzip.compress(SAMPLE.encode()))
    fs = scan_tail(path, MATCHERS[Backend.HYPERSCAN])
    assert fs.partial and fs.bytes_read == 0


def test_scan_file_redacts_secrets_in_examples_and_last_line(tmp_path):
    line = ("2024/03/02 10:41:07 [crit] 1#0: *1 open() failed (28: No space left on device), "
            'request: "POST /login?password=hunter2&token=abcd1234 HTTP/1.1"\n')
    path = _write(tmp_path / "secret.log", line.encode())
    fs = scan_file(path, MATCHERS[Backend.HYPERSCAN])
    assert "hunter2" not in fs.hits["enospc"].example and "abcd1234" not in fs.last_line
    assert "[REDACTED]" in fs.hits["enospc"].example


# --- timestamps -----------------------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ("2024-03-02T10:41:07 x", "2024-03-02T10:41:07"),
    ("2024-03-02 10:41:07.123 UTC [2345] ERROR:  x", "2024-03-02T10:41:07.123000+00:00"),
    ("[2024-03-02T10:41:07.123456+01:00] app.ERROR: x", "2024-03-02T10:41:07.123456+01:00"),
    ("[2024-03-02 10:41:07 +0000] [1] [CRITICAL] x", "2024-03-02T10:41:07+00:00"),
    ("2024/03/02 10:41:07 [error] 1#0: x", "2024-03-02T10:41:07"),
    ('1.2.3.4 - - [02/Mar/2024:10:41:07 -0500] "GET /"', "2024-03-02T10:41:07-05:00"),
    ("Mar  2 10:41:07 web1 kernel: x", "2024-03-02T10:41:07"),
    ("[Sat Mar 02 10:41:07.123456 2024] [core:error] x", "2024-03-02T10:41:07.123456"),
    ("[02-Mar-2024 10:41:07 UTC] PHP Warning: x", "2024-03-02T10:41:07+00:00"),
    ("[02-Mar-2024 10:41:07] WARNING: [pool www] x", "2024-03-02T10:41:07"),
    ("1234:M 02 Mar 2024 10:41:07.123 # x", "2024-03-02T10:41:07.123000"),
    ("[12345.678901] EXT4-fs error", None),
    ("    at Object.<anonymous> (/srv/app/index.js:1:1)", None),
    ("2024-13-45 99:99:99 garbage", None),
])
def test_parse_ts_on_common_formats_gives_iso(line, expected):
    assert parse_ts(line.encode(), year_hint=2024, month_hint=3) == expected


# --- CLI ------------------------------------------------------------------------------


def _prodx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prodx", "logs", *args],
                          capture_output=True, text=True)


def test_prodx_logs_json_on_files_and_missing_one_prints_all(tmp_path):
    good = _write(tmp_path / "error.log", SAMPLE.encode())
    rot = _write(tmp_path / "error.log.1.gz", gzip.compress(SAMPLE.encode()))
    r = _prodx("--json", str(good), str(tmp_path / "nope.log"), str(rot))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "prodx.logs/1" and len(doc["files"]) == 3
    assert doc["files"][1]["error"].startswith("ENOENT")
    assert doc["files"][2]["compression"] == "gzip"
    counts = [h["count"] for h in doc["files"][0]["hits"]]
    assert counts == sorted(counts, reverse=True) and doc["files"][0]["hits"]


def test_prodx_logs_text_names_unreadable_file_and_prints_others(tmp_path):
    good = _write(tmp_path / "error.log", SAMPLE.encode())
    r = _prodx(str(tmp_path / "nope.log"), str(good))
    assert r.returncode == 0 and r.stderr == ""
    assert "nope.log: cannot read: ENOENT" in r.stdout
    assert "enospc" in r.stdout and "6 lines" in r.stdout


def test_prodx_logs_without_existing_files_exits_2(tmp_path):
    assert _prodx().returncode == 2
    r = _prodx(str(tmp_path / "nope.log"))
    assert r.returncode == 2 and "none of the files exist" in r.stderr


def test_matcher_shared_by_threads_scans_concurrently_without_scratch_errors(tmp_path):
    """Probes share one Matcher across threads; each scan must still succeed and agree."""
    import threading

    log = _write(tmp_path / "busy.log", (SAMPLE * 2000).encode())
    matcher = Matcher(SIGS)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(scan_file(log, matcher).hits[next(iter(scan_file(log, matcher).hits))].count)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 20


def test_prodx_logs_text_shows_a_log_lines_escape_sequences_and_never_sends_them(tmp_path):
    # A log line is attacker-controlled: a colour, a window title or a cursor move in it must
    # reach the terminal as text.
    line = ("2024/03/02 10:41:07 [crit] 1#0: pwrite() \x1b]0;owned\x07\x1b[2J\x1b[31m failed "
            "(28: No space left on device)\n")
    log = _write(tmp_path / "error\x1b[1m.log", line.encode())
    r = _prodx(str(log))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "\\x1b]0;owned\\x07" in r.stdout and "error\\x1b[1m.log" in r.stdout


def test_prodx_lab_list_keeps_text_in_square_brackets():
    r = subprocess.run([sys.executable, "-m", "prodx", "lab", "list"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "[emerg]" in r.stdout
