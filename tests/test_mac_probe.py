"""The mac.denials probe on hosts with AppArmor and SELinux denials in their logs.

This machine's kernel runs neither AppArmor (not built in) nor SELinux (built in, not
initialised: no selinuxfs), so no real denial can be produced here. The denial lines below
are hand-written in the exact formats the kernel's audit subsystem writes (copied from
real Ubuntu 22.04 and Rocky 9 hosts), served by a FixtureHost built in tmp_path; the live
host is probed too, where the probe must report what is true here (no LSM active).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prodx.host.fixture import FixtureHost
from prodx.host.local import LocalHost
from prodx.kb.loader import load_kb
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.mac import MacDenialsProbe
from prodx.probes.runner import run_probes

NOW = 1712345678 + 600
APPARMOR_DENIAL = ('type=AVC msg=audit(1712345678.123:456): apparmor="DENIED" operation="open" class="file" '
                   'profile="/usr/sbin/mysqld" name="/mnt/vol1/tmp/" pid=1234 comm="mysqld" requested_mask="r" '
                   'denied_mask="r" fsuid=113 ouid=0')
APPARMOR_COMPLAIN = ('type=AVC msg=audit(1712345679.1:457): apparmor="ALLOWED" operation="open" '
                     'profile="/usr/sbin/cupsd" name="/etc/x" pid=1 comm="cupsd" requested_mask="r"')
SELINUX_DENIAL = ('type=AVC msg=audit(1712345680.5:458): avc:  denied  { write } for  pid=99 comm="httpd" '
                  'name="uploads" dev="sda1" ino=5 scontext=system_u:system_r:httpd_t:s0 '
                  'tcontext=unconfined_u:object_r:user_home_t:s0 tclass=dir permissive=0')
SELINUX_PERMISSIVE = SELINUX_DENIAL.replace("permissive=0", "permissive=1").replace(":458)", ":459)")


def _host(tmp_path: Path, files: dict[str, str]) -> FixtureHost:
    for path, text in files.items():
        target = tmp_path / "root" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (tmp_path / "host.json").write_text(json.dumps({"hostname": "h", "now": NOW, "is_root": True}))
    return FixtureHost(tmp_path)


def _run(host, target: Target | None = None) -> dict[str, object]:
    ctx = ProbeContext(host, target or Target(), load_kb())
    findings, runs = run_probes([MacDenialsProbe()], ctx, 3.0)
    assert runs[0].status.value == "ok", runs[0].detail
    return {f.id: f for f in findings}


def test_mac_probe_with_enforced_apparmor_denying_mysqld_reports_denial_of_the_app(tmp_path) -> None:
    host = _host(tmp_path, {
        "/sys/kernel/security/apparmor/profiles": "/usr/sbin/mysqld (enforce)\n/usr/sbin/cupsd (complain)\n",
        "/var/log/audit/audit.log": "\n".join([APPARMOR_COMPLAIN, APPARMOR_DENIAL, APPARMOR_DENIAL]) + "\n",
    })
    out = _run(host, Target(services=["mysqld"], writable=["/mnt/vol1/tmp"]))
    assert out["mac.enforcing"].state is FindingState.PRESENT
    recent = out["mac.denied_recent"]
    assert recent.state is FindingState.PRESENT
    assert recent.evidence["count"] == 1  # the same audit record twice counts once; ALLOWED never
    assert "/usr/sbin/mysqld" in recent.summary and "/mnt/vol1/tmp/" in recent.summary
    assert out["mac.denied_app"].state is FindingState.PRESENT


def test_mac_probe_with_selinux_enforcing_counts_enforced_denials_not_permissive_ones(tmp_path) -> None:
    host = _host(tmp_path, {
        "/sys/fs/selinux/enforce": "1\n",
        "/var/log/audit/audit.log": SELINUX_PERMISSIVE + "\n" + SELINUX_DENIAL + "\n",
    })
    out = _run(host, Target(services=["nginx"]))
    assert out["mac.enforcing"].state is FindingState.PRESENT
    assert out["mac.denied_recent"].evidence["count"] == 1
    assert "httpd_t" in out["mac.denied_recent"].summary
    assert out["mac.denied_app"].state is FindingState.ABSENT  # httpd is not this app's nginx


def test_mac_probe_ignores_denials_older_than_a_day(tmp_path) -> None:
    old = APPARMOR_DENIAL.replace("1712345678.123", str(NOW - 3 * 86400) + ".1")
    host = _host(tmp_path, {"/sys/kernel/security/apparmor/profiles": "/usr/sbin/mysqld (enforce)\n",
                            "/var/log/audit/audit.log": old + "\n"})
    assert _run(host)["mac.denied_recent"].state is FindingState.ABSENT


def test_mac_probe_without_any_log_reports_denials_unknown(tmp_path) -> None:
    host = _host(tmp_path, {"/sys/fs/selinux/enforce": "0\n"})
    out = _run(host)
    assert out["mac.enforcing"].state is FindingState.ABSENT
    assert out["mac.denied_recent"].state is FindingState.UNKNOWN
    assert "no kernel, audit or system log" in out["mac.denied_recent"].reason


def test_mac_probe_on_this_host_without_an_lsm_reports_nothing_enforced() -> None:
    if Path("/sys/kernel/security/apparmor").exists() or Path("/sys/fs/selinux").exists():
        pytest.skip("this host has AppArmor or SELinux: the fixture tests above cover them")
    out = _run(LocalHost())
    assert out["mac.enforcing"].state is FindingState.ABSENT
