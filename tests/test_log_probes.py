"""Log probes on real files and real processes: signatures in the tail, a last line cut off,
a log gone silent while its writer runs, and the kernel log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

from prodx.host import LocalHost
from prodx.host.fixture import FixtureHost
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.logs import KernelLogProbe, LogSignaturesProbe, LogTailsProbe
from prodx.probes.runner import run_probes


class _OnlyOurProcesses(LocalHost):
    """The real host, but its process table shows only the processes a test started, so
    logs other programs on the machine hold open (CI's own output) cannot leak in."""

    def __init__(self, pids: set[int]) -> None:
        super().__init__()
        self.pids = pids

    def processes(self):
        return [p for p in super().processes() if p.pid in self.pids]


HELD: set[int] = set()


def _run(probe, kb, target, host=None):
    host = host or _OnlyOurProcesses(HELD)
    probe.deadline_s = 30.0  # on this instance only: a loaded CI must not turn findings into timeouts
    findings, runs = run_probes([probe], ProbeContext(host, target, kb), deadline_s=30.0)
    return {f.id: f for f in findings}, runs[0]


def _lines(start: datetime, count: int, step_s: int, text: str = "app.INFO: request handled") -> str:
    return "".join(
        f"[{(start + timedelta(seconds=i * step_s)).isoformat(timespec='seconds')}] {text} #{i}\n" for i in range(count)
    )


def _open_targets(pid: int) -> set[str]:
    """Where a process's descriptors point; a descriptor closed while we look is skipped."""
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue  # Python's start-up opens and closes files while we list them
    return targets


@pytest.fixture()
def holder():
    """A real process that keeps files open, like a worker holding its log."""
    procs = []

    def hold(path):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys,time; f=open(sys.argv[1],'a'); time.sleep(60)", str(path)]
        )
        procs.append(proc)
        HELD.add(proc.pid)
        deadline = time.monotonic() + 20  # a loaded CI can take seconds to start Python
        while time.monotonic() < deadline:
            if str(path) in _open_targets(proc.pid):
                return proc
            time.sleep(0.02)
        raise AssertionError("the holder never opened the file")

    yield hold
    for proc in procs:
        HELD.discard(proc.pid)
        proc.kill()
        proc.wait()


def test_log_signatures_recent_enospc_lines_are_present_with_count(tmp_path, kb):
    log = tmp_path / "prod.log"
    now = datetime.now()
    body = _lines(now - timedelta(minutes=30), 50, 10)
    body += "".join(
        f'[{(now - timedelta(minutes=5 - i)).isoformat(timespec="seconds")}] app.ERROR: fopen(/var/www/var/cache/x.php): '
        "Failed to open stream: No space left on device\n"
        for i in range(3)
    )
    log.write_text(body)
    found, run = _run(LogSignaturesProbe(), kb, Target(logs=[str(log)]))
    assert run.status.value == "ok"
    assert found["log.enospc"].state is FindingState.PRESENT
    assert sum(h["count"] for h in found["log.enospc"].evidence["hits"]) == 3
    assert found["log.readonly_fs"].state is FindingState.ABSENT


def test_log_signatures_only_old_hits_count_as_absent(tmp_path, kb):
    log = tmp_path / "prod.log"
    old = datetime.now() - timedelta(days=3)
    log.write_text(f"[{old.isoformat(timespec='seconds')}] app.ERROR: write failed: No space left on device\n")
    found, _ = _run(LogSignaturesProbe(), kb, Target(logs=[str(log)]))
    assert found["log.enospc"].state is FindingState.ABSENT


def test_log_tails_last_line_cut_off_is_truncated_tail(tmp_path, kb):
    log = tmp_path / "prod.log"
    log.write_text(_lines(datetime.now() - timedelta(minutes=2), 10, 10) + '[2026-01-01T00:00:00] app.INFO: User "cust')
    found, _ = _run(LogTailsProbe(), kb, Target(logs=[str(log)]))
    assert found["log.truncated_tail"].state is FindingState.PRESENT
    assert "cust" in found["log.truncated_tail"].summary


def test_log_tails_complete_last_line_is_not_truncated(tmp_path, kb):
    log = tmp_path / "prod.log"
    log.write_text(_lines(datetime.now() - timedelta(minutes=2), 10, 10))
    found, _ = _run(LogTailsProbe(), kb, Target(logs=[str(log)]))
    assert found["log.truncated_tail"].state is FindingState.ABSENT


def test_log_tails_log_quiet_for_hours_while_writer_runs_is_silent(tmp_path, kb, holder):
    log = tmp_path / "worker.log"
    last = datetime.now() - timedelta(hours=2)
    log.write_text(_lines(last - timedelta(seconds=10 * 99), 100, 10))
    os.utime(log, (last.timestamp(), last.timestamp()))
    holder(log)
    found, _ = _run(LogTailsProbe(), kb, Target(logs=[str(log)]))
    assert found["log.silent"].state is FindingState.PRESENT
    assert found["log.silent"].evidence["logs"][0]["median_gap_s"] == 10


def test_log_tails_quiet_log_without_running_writer_is_not_silent(tmp_path, kb):
    log = tmp_path / "old.log"
    last = datetime.now() - timedelta(hours=2)
    log.write_text(_lines(last - timedelta(seconds=10 * 99), 100, 10))
    os.utime(log, (last.timestamp(), last.timestamp()))
    found, _ = _run(LogTailsProbe(), kb, Target(logs=[str(log)]))
    assert found["log.silent"].state is FindingState.ABSENT


def test_log_probes_without_any_log_say_unknown_with_reason(kb):
    found, _ = _run(LogTailsProbe(), kb, Target(logs=["/nonexistent/prod.log"]))
    assert found["log.silent"].state is FindingState.UNKNOWN
    assert "no app logs" in found["log.silent"].reason


def _kernel_fixture(tmp_path, dmesg_stdout: str, returncode: int = 0):
    (tmp_path / "root" / "proc").mkdir(parents=True)
    (tmp_path / "root" / "proc" / "uptime").write_text("5000.00 9000.00\n")
    meta = {"commands": [{"argv": ["dmesg"], "returncode": returncode, "stdout": dmesg_stdout, "stderr": ""}]}
    (tmp_path / "host.json").write_text(json.dumps(meta))
    return FixtureHost(tmp_path)


DMESG_EXT4 = """\
[    1.234567] EXT4-fs (vda): mounted filesystem with ordered data mode. Quota mode: none.
[ 4990.100000] EXT4-fs error (device sdb1): ext4_find_entry:1455: inode #2: comm php-fpm8.2: reading directory lblock 0
[ 4990.100100] Aborting journal on device sdb1-8.
[ 4990.100200] EXT4-fs (sdb1): Remounting filesystem read-only
[ 4990.000000] blk_update_request: I/O error, dev sdb, sector 2048 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0
"""


def test_kernel_probe_ext4_errors_and_remount_are_present(tmp_path, kb):
    found, _ = _run(KernelLogProbe(), kb, Target(), host=_kernel_fixture(tmp_path, DMESG_EXT4))
    assert found["log.kernel_fs_error"].state is FindingState.PRESENT
    assert found["log.kernel_remount_ro"].state is FindingState.PRESENT
    assert found["log.kernel_io_error"].state is FindingState.PRESENT


def test_kernel_probe_dmesg_denied_and_no_kern_log_is_unknown(tmp_path, kb):
    host = _kernel_fixture(tmp_path, "", returncode=1)
    found, _ = _run(KernelLogProbe(), kb, Target(), host=host)
    assert found["log.kernel_fs_error"].state is FindingState.UNKNOWN
    assert "dmesg" in found["log.kernel_fs_error"].reason


def test_kernel_probe_remount_of_a_filesystem_now_mounted_rw_is_history(tmp_path, kb):
    host = _kernel_fixture(tmp_path, DMESG_EXT4)
    (tmp_path / "root" / "proc" / "self").mkdir(parents=True)
    (tmp_path / "root" / "proc" / "self" / "mountinfo").write_text(
        "27 1 8:17 / /srv rw,relatime - ext4 /dev/sdb1 rw,errors=remount-ro\n"
    )
    found, _ = _run(KernelLogProbe(), kb, Target(), host=host)
    assert found["log.kernel_remount_ro"].state is FindingState.ABSENT
    assert found["log.kernel_fs_error"].state is FindingState.PRESENT  # sdb1 is still mounted


def test_kernel_probe_errors_of_a_filesystem_no_longer_mounted_are_history(tmp_path, kb):
    host = _kernel_fixture(tmp_path, DMESG_EXT4)
    (tmp_path / "root" / "proc" / "self").mkdir(parents=True)
    (tmp_path / "root" / "proc" / "self" / "mountinfo").write_text("27 1 254:0 / / rw - ext4 /dev/vda rw\n")
    found, _ = _run(KernelLogProbe(), kb, Target(), host=host)
    assert found["log.kernel_fs_error"].state is FindingState.ABSENT
    assert found["log.kernel_io_error"].state is FindingState.PRESENT  # device-level: kept


DMESG_LOOP_REUSED = """\
[ 4000.000000] loop0: detected capacity change from 0 to 98304
[ 4000.100000] EXT4-fs (loop0): mounted filesystem 7456 r/w with ordered data mode. Quota mode: none.
[ 4010.723986] I/O error, dev loop0, sector 45058 op 0x1:(WRITE) flags 0x4000 phys_seg 20 prio class 2
[ 4010.787720] Buffer I/O error on dev loop0, logical block 16385, lost sync page write
[ 4010.789289] JBD2: I/O error when updating journal superblock for loop0-8.
[ 4010.884431] EXT4-fs error (device loop0): ext4_journal_check_start:87: comm php-fpm8.2: Detected aborted journal
[ 4020.000000] EXT4-fs (loop0): unmounting filesystem 7456.
[ 4030.000000] loop0: detected capacity change from 0 to 65536
[ 4030.100000] EXT4-fs (loop0): mounted filesystem 11e4 r/w with ordered data mode. Quota mode: none.
"""


def _mountinfo(tmp_path, text: str) -> None:
    (tmp_path / "root" / "proc" / "self").mkdir(parents=True, exist_ok=True)
    (tmp_path / "root" / "proc" / "self" / "mountinfo").write_text(text)


def test_kernel_probe_errors_of_a_loop_device_attached_afresh_since_are_history(tmp_path, kb):
    host = _kernel_fixture(tmp_path, DMESG_LOOP_REUSED)
    _mountinfo(tmp_path, "27 1 7:0 / /srv/app rw,relatime - ext4 /dev/loop0 rw\n")
    found, _ = _run(KernelLogProbe(), kb, Target(), host=host)
    assert found["log.kernel_io_error"].state is FindingState.ABSENT
    assert found["log.kernel_fs_error"].state is FindingState.ABSENT


def test_kernel_probe_errors_of_the_loop_device_mounted_now_are_present(tmp_path, kb):
    lines = DMESG_LOOP_REUSED.splitlines(keepends=True)
    host = _kernel_fixture(tmp_path, "".join(lines[:6]))  # the erroring mount is still the current one
    _mountinfo(tmp_path, "27 1 7:0 / /srv/app ro,relatime - ext4 /dev/loop0 ro\n")
    found, _ = _run(KernelLogProbe(), kb, Target(), host=host)
    assert found["log.kernel_io_error"].state is FindingState.PRESENT
    assert found["log.kernel_fs_error"].state is FindingState.PRESENT


def test_kernel_probe_errors_of_a_loop_device_mounted_nowhere_are_history(tmp_path, kb):
    host = _kernel_fixture(tmp_path, "".join(DMESG_LOOP_REUSED.splitlines(keepends=True)[:6]))
    _mountinfo(tmp_path, "27 1 254:0 / / rw - ext4 /dev/vda rw\n")
    found, _ = _run(KernelLogProbe(), kb, Target(), host=host)
    assert found["log.kernel_io_error"].state is FindingState.ABSENT


def test_log_tails_cut_off_line_is_redacted_before_it_reaches_the_report(tmp_path, kb):
    log = tmp_path / "prod.log"
    log.write_text("[2026-01-01T00:00:00] app.INFO: ok\n[2026-01-01T00:00:01] app.INFO: connecting to postgres://shop:s3cretPassw0rd@db/shop")
    found, _ = _run(LogTailsProbe(), kb, Target(logs=[str(log)]))
    finding = found["log.truncated_tail"]
    assert finding.state is FindingState.PRESENT
    assert "s3cretPassw0rd" not in finding.summary
    assert "s3cretPassw0rd" not in json.dumps(finding.evidence)
