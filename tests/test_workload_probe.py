"""Workload probes on real processes and files: a cron-like parent whose job runs pile up, a
real tar creating an archive, a real archive on a small tmpfs, and access logs.

The access logs are written by the tests in nginx's combined format: an hour of history
cannot be produced by a real nginx in a unit test (its timestamps are the present). The lab
scenario traffic-spike drives a real nginx.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from prodx.host.local import LocalHost
from prodx.kb.loader import load_kb
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.runner import run_probes
from prodx.probes.workload import BackupProbe, CronProbe, TrafficProbe

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")

_FAKE_CRON = """
import subprocess, sys, time
for _ in range(int(sys.argv[1])):
    subprocess.Popen(["/bin/sh", "-c", sys.argv[2]])
    time.sleep(1.1)
time.sleep(120)
"""


def _run(probe, target: Target | None = None) -> dict[str, object]:
    ctx = ProbeContext(LocalHost(), target or Target(), load_kb())
    findings, runs = run_probes([probe], ctx, 3.0)
    assert runs[0].status.value == "ok", runs[0].detail
    return {f.id: f for f in findings}


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _combined(when: float, status: int = 200) -> str:
    stamp = datetime.fromtimestamp(when, timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return f'203.0.113.{random.randint(1, 254)} - - [{stamp}] "GET /p/{random.randint(1, 99)} HTTP/1.1" {status} 512 "-" "Mozilla/5.0"'


def _access_log(path: Path, *, history_per_min: int, recent_per_min: int, history_min: int = 65) -> Path:
    now = time.time()
    lines = []
    for minute in range(history_min, 5, -1):
        lines += [_combined(now - minute * 60 + i * 60 / history_per_min) for i in range(history_per_min)]
    for minute in range(5, 0, -1):
        lines += [_combined(now - minute * 60 + i * 60 / recent_per_min) for i in range(recent_per_min)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def fake_cron(tmp_path):
    """A parent process called `cron` (a symlink to Python: the kernel names a process after
    the file it executed) that starts `sleep 60` through /bin/sh every 1.1 s, three times,
    with no lock: three runs of one job alive at once."""
    link = tmp_path / "cron"
    link.symlink_to(sys.executable)
    proc = subprocess.Popen([str(link), "-c", _FAKE_CRON, "3", f"sleep 60 # prodx-test-{os.getpid()}"],
                            start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if len(kids) >= 3:
            break
        time.sleep(0.2)
    yield proc
    _stop(proc)


def test_cron_probe_with_three_runs_of_one_job_under_cron_reports_overlap(fake_cron) -> None:
    out = _run(CronProbe())
    f = out["workload.cron_overlap"]
    assert f.state is FindingState.PRESENT, f.summary or f.reason
    job = f.evidence["jobs"][0]
    assert job["instances"] == 3 and job["command"].startswith("sleep 60")
    assert job["oldest_age_s"] >= job["newest_age_s"]


def test_cron_probe_without_a_cron_daemon_reports_no_overlap_possible() -> None:
    if subprocess.run(["pgrep", "-x", "cron|crond"], capture_output=True).returncode == 0:
        pytest.skip("a real cron runs on this host")
    f = _run(CronProbe())["workload.cron_overlap"]
    assert f.state is FindingState.ABSENT and "no cron daemon" in f.summary


def test_backup_probe_with_tar_creating_an_archive_reports_it_running_and_what_it_writes(tmp_path) -> None:
    fifo = tmp_path / "names"
    os.mkfifo(fifo)
    data = tmp_path / "uploads.bin"
    data.write_bytes(os.urandom(3 << 20))
    archive = tmp_path / "site-backup.tar"
    tar = subprocess.Popen(["tar", "-cf", str(archive), f"--files-from={fifo}"], start_new_session=True,
                           cwd=tmp_path)
    # tar archives each name as it reads it and waits for the next: it stays running, writing.
    names = open(fifo, "w")  # noqa: SIM115 - held open until the end so tar keeps waiting
    try:
        names.write("uploads.bin\n")
        names.flush()
        deadline = time.monotonic() + 10
        while (not archive.exists() or archive.stat().st_size < 2 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        f = _run(BackupProbe())["workload.backup_running"]
        assert f.state is FindingState.PRESENT
        mine = [j for j in f.evidence["jobs"] if j["pid"] == tar.pid]
        assert mine and mine[0]["kind"] == "archive"
        # Same user as tar (or root): its open archive, over 1 MiB, is named.
        assert str(archive) in f.summary
    finally:
        names.close()
        _stop(tar)


def test_backup_probe_with_tar_extracting_does_not_count_it() -> None:
    from prodx.probes.workload import backup_kind, rules

    assert backup_kind("tar", ["tar", "-xzf", "release.tgz"], rules()["backup_commands"]) is None


@root_only
def test_backup_probe_with_fresh_archive_filling_a_small_tmpfs_reports_archive_recent(tmp_path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "prodxtest", str(mnt)], check=True)
    try:
        data = tmp_path / "data"
        data.mkdir()
        (data / "db.bin").write_bytes(os.urandom(3 << 20))
        (mnt / "backups").mkdir()
        subprocess.run(["tar", "-czf", str(mnt / "backups" / "site.tar.gz"), "-C", str(data), "."], check=True)
        f = _run(BackupProbe(), Target(writable=[str(mnt)]))["workload.backup_archive_recent"]
        assert f.state is FindingState.PRESENT, f.summary
        assert f.evidence["archives"][0]["path"] == str(mnt / "backups" / "site.tar.gz")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_traffic_probe_with_ten_times_the_last_hours_rate_reports_a_surge(tmp_path) -> None:
    log = _access_log(tmp_path / "shop.access.log", history_per_min=10, recent_per_min=200)
    f = _run(TrafficProbe(), Target(logs=[str(log)]))["workload.request_surge"]
    assert f.state is FindingState.PRESENT
    e = f.evidence["logs"][str(log)]
    assert e["recent_requests"] >= 990 and e["baseline_rps"] < 0.2


def test_traffic_probe_with_a_steady_rate_reports_no_surge(tmp_path) -> None:
    log = _access_log(tmp_path / "shop.access.log", history_per_min=120, recent_per_min=130)
    assert _run(TrafficProbe(), Target(logs=[str(log)]))["workload.request_surge"].state is FindingState.ABSENT


def test_traffic_probe_with_a_just_rotated_log_cannot_compare_and_says_unknown(tmp_path) -> None:
    log = _access_log(tmp_path / "shop.access.log", history_per_min=10, recent_per_min=200, history_min=6)
    f = _run(TrafficProbe(), Target(logs=[str(log)]))["workload.request_surge"]
    assert f.state is FindingState.UNKNOWN and "no baseline" in f.reason
