"""The clock probe: the kernel's adjtimex state read for real on this machine, and NTP client
outputs replayed through fixture hosts.

This VM runs no systemd, chronyd or ntpd and has no network time source, so `chronyc
tracking` and `ntpq -pn` outputs cannot be produced here: the fixtures below hold outputs
typed in the exact format of chrony 4.x and ntp 4.2 (their man pages' samples, with the
offsets changed), and say so."""

from __future__ import annotations

import doctest
import json
import stat

import prodx.probes.clock as clockmod
from prodx.host import LocalHost
from prodx.host.fixture import FixtureHost
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.clock import STA_UNSYNC, ClockProbe, read_adjtimex
from prodx.probes.runner import run_probes

P, A, U = FindingState.PRESENT, FindingState.ABSENT, FindingState.UNKNOWN

_CHRONYC_SKEWED = """Reference ID    : C0000201 (192.0.2.1)
Stratum         : 3
Ref time (UTC)  : Fri Nov 27 04:01:12 2026
System time     : 4.217300415 seconds slow of NTP time
Last offset     : -0.000112 seconds
RMS offset      : 0.000210 seconds
Frequency       : 11.204 ppm slow
Leap status     : Normal
"""
_CHRONYC_NO_SOURCE = """Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
System time     : 0.000000000 seconds fast of NTP time
Leap status     : Not synchronised
"""
_NTPQ_GOOD = """     remote           refid      st t when poll reach   delay   offset  jitter
==============================================================================
*192.0.2.10      .GPS.            1 u   33   64  377    0.512    0.253   0.101
+192.0.2.11      192.0.2.10       2 u   12   64  377    0.733   -0.120   0.090
"""


def _fixture(tmp_path, *, commands=(), binaries=(), adjtimex=None):
    (tmp_path / "root").mkdir(exist_ok=True)
    meta = {
        "now": 1795000000.0,
        "commands": [{"argv": argv, "returncode": rc, "stdout": out, "stderr": ""} for argv, rc, out in commands],
        "lstats": {b: {"mode": stat.S_IFREG | 0o755, "uid": 0, "gid": 0, "size": 1, "mtime": 0} for b in binaries},
        "observations": {"adjtimex": {"[]": adjtimex}} if adjtimex else {},
    }
    (tmp_path / "host.json").write_text(json.dumps(meta))
    return FixtureHost(tmp_path)


def _run(kb, host):
    findings, runs = run_probes([ClockProbe()], ProbeContext(host, Target(), kb), 5.0)
    return {f.id: f for f in findings}, runs[0]


_KERNEL_UNSYNC = {"state": 5, "status": STA_UNSYNC, "maxerror_us": 16000000, "esterror_us": 16000000, "error": ""}
_KERNEL_SYNC = {"state": 0, "status": 0x2001, "maxerror_us": 40000, "esterror_us": 100, "error": ""}


def test_clock_module_doctests_pass():
    assert doctest.testmod(clockmod).failed == 0


def test_clock_adjtimex_reads_the_real_kernel_state_without_changing_it():
    before = read_adjtimex()
    after = read_adjtimex()
    assert before["error"] == "" and 0 <= before["state"] <= 5
    assert before["status"] == after["status"]


def test_clock_probe_on_this_vm_reports_what_the_kernel_says(kb):
    found, run = _run(kb, LocalHost())
    assert run.status.value == "ok"
    kernel = read_adjtimex()
    unsynced = bool(kernel["status"] & STA_UNSYNC) or kernel["state"] == 5
    tools = found["clock.unsynchronised"].evidence["sources"]
    if set(tools) == {"kernel"}:  # no NTP client here: the kernel alone decides, offset unknown
        assert found["clock.unsynchronised"].state is (P if unsynced else A)
        assert found["clock.offset_large"].state is U and "chronyc" in found["clock.offset_large"].reason


def test_clock_chronyc_reporting_four_seconds_slow_reports_offset_large(kb, tmp_path):
    host = _fixture(tmp_path, binaries=["/usr/bin/chronyc"], adjtimex=_KERNEL_SYNC,
                    commands=[(["/usr/bin/chronyc", "-n", "tracking"], 0, _CHRONYC_SKEWED)])
    found, _ = _run(kb, host)
    assert found["clock.offset_large"].state is P
    assert found["clock.offset_large"].evidence["offset_s"] < -4
    assert "behind" in found["clock.offset_large"].summary
    assert found["clock.unsynchronised"].state is A


def test_clock_chronyc_without_sources_reports_unsynchronised(kb, tmp_path):
    host = _fixture(tmp_path, binaries=["/usr/bin/chronyc"], adjtimex=_KERNEL_UNSYNC,
                    commands=[(["/usr/bin/chronyc", "-n", "tracking"], 0, _CHRONYC_NO_SOURCE)])
    found, _ = _run(kb, host)
    assert found["clock.unsynchronised"].state is P and "chronyc" in found["clock.unsynchronised"].summary


def test_clock_ntpq_with_system_peer_reports_synchronised_small_offset(kb, tmp_path):
    host = _fixture(tmp_path, binaries=["/usr/bin/ntpq"], adjtimex=_KERNEL_SYNC,
                    commands=[(["/usr/bin/ntpq", "-pn"], 0, _NTPQ_GOOD)])
    found, _ = _run(kb, host)
    assert found["clock.unsynchronised"].state is A
    assert found["clock.offset_large"].state is A


def test_clock_timedatectl_on_systemd_host_reports_not_synchronised(kb, tmp_path):
    host = _fixture(tmp_path, binaries=["/run/systemd/system"], adjtimex=_KERNEL_UNSYNC,
                    commands=[(["timedatectl", "show", "-p", "NTPSynchronized"], 0, "NTPSynchronized=no\n")])
    found, _ = _run(kb, host)
    assert found["clock.unsynchronised"].state is P and "timedatectl" in found["clock.unsynchronised"].summary


def test_clock_kernel_only_unsynchronised_reports_present_offset_unknown(kb, tmp_path):
    found, _ = _run(kb, _fixture(tmp_path, adjtimex=_KERNEL_UNSYNC))
    assert found["clock.unsynchronised"].state is P and "STA_UNSYNC" in found["clock.unsynchronised"].summary
    assert found["clock.offset_large"].state is U


def test_clock_capture_without_adjtimex_is_skipped_not_absent(kb, tmp_path):
    found, run = _run(kb, _fixture(tmp_path))
    assert run.status.value == "skipped"
    assert {f.state for f in found.values()} == {U}
