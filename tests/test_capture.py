"""Capture and replay: secrets planted in real files, processes and HTTP answers the probes
read never reach the archive nor the replayed report, and the replay gives the live
differential. Everything here is real: a log file and a certificate+key file named by a
profile, a process whose command line carries a MySQL password, an HTTP server on
127.0.0.1 that sets session cookies, and the `prodx` CLI as a subprocess."""

from __future__ import annotations

import datetime
import doctest
import gzip
import http.server
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prodx import capture
from prodx.diagnosis import DiagnoseOptions, diagnose
from prodx.host.local import LocalHost
from prodx.host.recording import RecordingHost

SECRETS = {
    "url_password": "PgUrlS3cretPass",
    "bearer": "abcBearerTok3nValue9876543210",
    "aws_key_id": "AKIAIOSFODNN7EXAMPLQ",
    "aws_secret": "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEYzz",
    "phpsessid": "phpsessSecretValue123456",
    "laravel": "laravelSessionSecretValue789",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJhZG1pbiI6dHJ1ZX0.c2lnbmF0dXJlU2VjcmV0",
    "config_password": "ConfigPassw0rdValue",
    "mysql_cli": "MysqlCliS3cret",
    "login_form": "FormLoginS3cret",
    "http_cookie": "ServerSetCookieSecret42",
    "http_body_token": "BodyApiTokenSecretValue0123456789abcdef",
}

LOG_LINES = [
    "2026-11-27 05:00:00 ERROR connecting to postgres://app:{url_password}@db:5432/app failed",
    "2026-11-27 05:00:01 INFO request Authorization: Bearer {bearer}",
    "2026-11-27 05:00:02 WARN using aws_access_key_id={aws_key_id} aws_secret_access_key={aws_secret}",
    "2026-11-27 05:00:03 INFO Cookie: PHPSESSID={phpsessid}; laravel_session={laravel}",
    "2026-11-27 05:00:04 DEBUG token {jwt}",
    "2026-11-27 05:00:05 INFO loaded config password={config_password}",
    "2026-11-27 05:00:06 INFO backup ran: mysql -uroot -p{mysql_cli} shop",
]


def _pem_pair() -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=90)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


class _Leaky(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "api_token": SECRETS["http_body_token"]}).encode()
        self.send_response(200)
        self.send_header("Set-Cookie", f"laravel_session={SECRETS['http_cookie']}; HttpOnly")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def leaky_site(tmp_path: Path) -> Iterator[Path]:
    """A profile whose log, certificate file, HTTP endpoint, login form and dependency URL
    all carry secrets, and a running process with a MySQL password on its command line."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Leaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    mysql = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "mysql", "-uroot",
                              f"-p{SECRETS['mysql_cli']}", "shop"])
    try:
        log = tmp_path / "app.log"
        log.write_text("\n".join(line.format(**SECRETS) for line in LOG_LINES) + "\n")
        cert, key = _pem_pair()
        SECRETS["pem_key_body"] = key.splitlines()[2]
        (tmp_path / "combined.pem").write_text(cert + key)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        profile = tmp_path / "profile.toml"
        profile.write_text(f"""[app]
name = "shop"
logs = ["{log}"]

[[http]]
url = "{url}/health"

[[http]]
url = "{url}/login"
login = {{ form = {{ username = "probe", password = "{SECRETS['login_form']}" }}, then_url = "{url}/account", expect_text = "ok" }}

[[dependency]]
name = "db"
url = "postgres://app:{SECRETS['url_password']}@127.0.0.1:{_free_port()}/app"

[[tls]]
file = "{tmp_path / 'combined.pem'}"
""")
        yield profile
    finally:
        mysql.kill()
        mysql.wait()
        server.shutdown()
        server.server_close()


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _leaks(blob: bytes) -> list[str]:
    return [k for k, v in SECRETS.items() if v.encode() in blob]


def _prodx(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "prodx", *args], check=False, capture_output=True, timeout=120, cwd=cwd)


def test_capture_module_doctests_pass():
    assert doctest.testmod(capture).failed == 0


def test_redact_text_pem_key_whose_begin_was_cut_off_is_masked():
    tail = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSecretSecret\n-----END PRIVATE KEY-----\nnext\n"
    assert "SecretSecret" not in capture.redact_text(tail)


def test_redact_text_env_file_masks_values_keeps_harmless_ones():
    text = "APP_ENV=production\nDB_PASSWORD=hunter2\nMAIL_HOST=smtp.example.com\nexport API=xyz\n"
    out = capture.redact_text(text, env=True)
    assert "hunter2" not in out and "smtp.example.com" not in out and "xyz" not in out
    assert "APP_ENV=production" in out


def test_capture_cli_to_pipe_with_planted_secrets_archives_none(leaky_site: Path, tmp_path: Path):
    run = _prodx("capture", "-o", "-", "--profile", str(leaky_site), "--no-write-test", cwd=tmp_path)
    assert run.returncode == 0, run.stderr.decode()
    # The secrets were really there for the probes to read.
    assert SECRETS["url_password"] in (tmp_path / "app.log").read_text()
    archive = run.stdout
    members = _members(archive)
    assert {"host.json", "manifest.json", "profile.toml"} <= set(members)
    assert _leaks(gzip.decompress(archive)) == []
    assert {name: _leaks(data) for name, data in members.items() if _leaks(data)} == {}
    manifest = json.loads(members["manifest.json"])
    assert manifest["format"] == "prodx.capture/1"
    assert str(tmp_path / "app.log") in manifest["collected"]["reads"]
    redacted = manifest["redacted"]
    assert sum(r["masked"] for r in redacted.values()) >= len(LOG_LINES)
    assert any("private_key" in r["kinds"] for r in redacted.values())
    # The replayed report carries no secret either.
    path = tmp_path / "capture.tar.gz"
    path.write_bytes(archive)
    replay = _prodx("diagnose", "--from", str(path), "--json", cwd=tmp_path)
    assert replay.returncode in (0, 1), replay.stderr.decode()
    assert json.loads(replay.stdout)["host"] == manifest["hostname"]
    assert _leaks(replay.stdout + replay.stderr) == []


def test_capture_then_replay_of_this_host_gives_the_same_differential(leaky_site: Path, tmp_path: Path, kb):
    options = DiagnoseOptions(profile_path=str(leaky_site), write_test=False, deadline_s=10)
    recorder = RecordingHost(LocalHost())
    live = diagnose(options, host=recorder, kb=kb)
    out = io.BytesIO()
    capture.write_archive(recorder, out, profile_text=leaky_site.read_text(),
                          options=capture.capture_options({"no_write_test": True, "deadline_s": 10}))
    path = tmp_path / "clean" / "capture.tar.gz"
    path.parent.mkdir()
    path.write_bytes(out.getvalue())
    replayed = capture.replay_diagnosis(str(path), DiagnoseOptions(deadline_s=60))
    assert [r.condition for r in replayed.differential.ranked] == [r.condition for r in live.differential.ranked]
    for a, b in zip(replayed.differential.ranked, live.differential.ranked):
        assert a.probability == pytest.approx(b.probability, abs=1e-9)
    assert {f.id: f.state for f in replayed.findings} == {f.id: f.state for f in live.findings}


def test_capture_cli_to_terminal_is_refused(tmp_path: Path):
    import os
    import pty

    primary, secondary = pty.openpty()
    try:
        run = subprocess.run([sys.executable, "-m", "prodx", "capture", "-o", "-"], stdout=secondary,
                             stderr=subprocess.PIPE, timeout=60, cwd=tmp_path, check=False)
    finally:
        os.close(secondary)
        os.close(primary)
    assert run.returncode == 2
    assert b"terminal" in run.stderr


def test_diagnose_from_a_file_that_is_not_a_tar_exits_2_naming_it(tmp_path: Path):
    bad = tmp_path / "notes.tar.gz"
    bad.write_text("not an archive\n")
    run = _prodx("diagnose", "--from", str(bad), cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0]


def test_diagnose_from_a_tar_without_host_json_exits_2_naming_it(tmp_path: Path):
    bad = tmp_path / "other.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    run = _prodx("diagnose", "--from", str(bad), cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "host.json" in lines[0]


def _archive_with(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        host = tarfile.TarInfo("host.json")
        host.size = 2
        tar.addfile(host, io.BytesIO(b"{}"))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("kind", ["escape", "absolute", "symlink", "device"])
def test_replay_refuses_an_unsafe_member_naming_it_and_writes_nothing_outside(tmp_path: Path, kind: str):
    info = tarfile.TarInfo({"escape": "../../evil.txt", "absolute": "/tmp/evil.txt"}.get(kind, "root/etc/x"))
    data = b""
    if kind in ("escape", "absolute"):
        data = b"owned"
        info.size = len(data)
    elif kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
    else:
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    bad = _archive_with(tmp_path / "bad.tar.gz", (info, data))
    with pytest.raises(capture.CaptureError, match=re.escape(repr(info.name))):
        with capture.open_archive(str(bad)):
            pass
    assert not (tmp_path.parent / "evil.txt").exists()


def test_replay_refuses_an_oversized_member_on_its_header(tmp_path: Path, monkeypatch):
    info = tarfile.TarInfo("root/var/log/huge.log")
    info.size = 4096
    bad = _archive_with(tmp_path / "big.tar.gz", (info, b"x" * 4096))
    monkeypatch.setattr(capture, "MAX_MEMBER_BYTES", 1024)
    with pytest.raises(capture.CaptureError, match="huge.log"):
        with capture.open_archive(str(bad)):
            pass


def test_replay_extracts_a_good_archive_without_tarfile_filters(tmp_path: Path, monkeypatch):
    # Python 3.11 before 3.11.4 has no extractall(filter=): the replay must not need it.
    monkeypatch.setattr(tarfile.TarFile, "extractall", None)
    info = tarfile.TarInfo("root/etc/hostname")
    info.size = 3
    good = _archive_with(tmp_path / "good.tar.gz", (info, b"fx\n"))
    with capture.open_archive(str(good)) as replay:
        assert Path(replay.host.real_path("/etc/hostname")).read_text() == "fx\n"


def test_diagnose_from_a_fifo_or_a_device_exits_2_at_once(tmp_path: Path):
    fifo = tmp_path / "capture.tar.gz"
    os.mkfifo(fifo)
    for source in (fifo, Path("/dev/zero")):
        run = _prodx("diagnose", "--from", str(source), cwd=tmp_path)
        assert run.returncode == 2
        assert str(source) in run.stderr.decode() and "not a regular file" in run.stderr.decode()


def test_a_recording_snapshot_is_a_copy_that_late_probe_threads_cannot_change():
    # Probe threads abandoned at their deadline keep recording while the archive is written:
    # a live view failed with "dictionary changed size during iteration" at --deadline 0.2.
    recorder = RecordingHost(LocalHost())
    recorder.observe("proc.read", "/proc/loadavg", lambda: {"text": "0 0 0"})
    snapshot = recorder.snapshot()
    recorder.observe("proc.read", "/proc/uptime", lambda: {"text": "1 1"})
    recorder.run(["true"], 5.0)
    assert list(snapshot["observations"]["proc.read"]) == [json.dumps("/proc/loadavg")]
    assert snapshot["commands"] == []
    json.dumps(snapshot)


def test_a_replay_reads_naive_log_times_in_the_captured_hosts_zone(monkeypatch):
    # The same syslog line was 13.8 h, 20.8 h or 29.8 h old depending on the replaying
    # machine's zone; now it is read in the zone the capture recorded.
    from datetime import datetime, timedelta, timezone

    from prodx.host.zone import local_time_of, this_zone

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        naive = datetime(2026, 3, 2, 10, 0)
        tokyo = naive.replace(tzinfo=timezone(timedelta(hours=9))).timestamp()
        for zone in ({"name": "Asia/Tokyo", "abbreviation": "JST", "utc_offset_s": 9 * 3600},
                     {"name": "", "abbreviation": "JST", "utc_offset_s": 9 * 3600}):
            with local_time_of(zone):
                assert naive.timestamp() == tokyo
                assert this_zone()["utc_offset_s"] == 9 * 3600
        assert naive.timestamp() != tokyo  # restored
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_capture_records_the_hosts_zone():
    recorder = RecordingHost(LocalHost())
    zone = recorder.snapshot()["timezone"]
    assert zone["utc_offset_s"] == time.localtime().tm_gmtoff


@pytest.mark.parametrize(("member", "data"), [("host.json", b"[]"), ("host.json", b'"x"'),
                                              ("host.json", b'{"statvfs": "x"}'), ("host.json", b'{"now": "soon"}'),
                                              ("host.json", b'{"effective_uid": true}'),
                                              ("manifest.json", b"[1, 2]"), ("manifest.json", b'{"options": 3}')])
def test_replay_of_a_capture_whose_json_has_the_wrong_shape_exits_2_naming_it(tmp_path: Path, member: str, data: bytes):
    path = tmp_path / "odd.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, body in (("host.json", b"{}"), ("manifest.json", b"{}")):
            body = data if name == member else body
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    run = _prodx("diagnose", "--from", str(path), cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert str(path) in run.stderr.decode() and member in run.stderr.decode()


def test_diagnose_from_another_tools_tree_of_a_hosts_files(tmp_path: Path):
    # A tree with proc/, etc/, var/log/ at the top (an extracted sosreport-like copy), dated by
    # its newest file: a root remounted read-only after a journal abort.
    tree = tmp_path / "web1"
    for path, text in (
        ("proc/self/mountinfo", "22 1 8:1 / / ro,relatime shared:1 - ext4 /dev/sda1 ro,errors=remount-ro\n"),
        ("etc/fstab", "/dev/sda1 / ext4 errors=remount-ro 0 1\n"),
        ("var/log/kern.log", "Dec  3 16:00:01 web1 kernel: [ 1234.5] EXT4-fs error (device sda1): "
                             "ext4_journal_check_start:83: comm nginx: Detected aborted journal\n"
                             "Dec  3 16:00:01 web1 kernel: [ 1234.6] EXT4-fs (sda1): Remounting filesystem read-only\n"),
    ):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
    run = _prodx("diagnose", "--from", str(tree), "--json", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert doc["differential"][0]["condition"] == "filesystem-readonly"
    states = {f["id"]: f["state"] for f in doc["findings"]}
    assert states["storage.full"] == "unknown"  # no statvfs in such a tree: not checked, not absent
    assert not (tree / "root").exists() and not (tree / "host.json").exists()  # read in place


def test_diagnose_from_a_directory_that_is_no_capture_exits_2_naming_it(tmp_path: Path):
    (tmp_path / "photos").mkdir()
    run = _prodx("diagnose", "--from", str(tmp_path / "photos"), cwd=tmp_path)
    assert run.returncode == 2
    assert "neither a prodx capture" in run.stderr.decode()
