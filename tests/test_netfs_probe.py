"""The netfs.mounts probe: a real FUSE share whose server stopped answering, with real
processes blocked on it (root, /dev/fuse, fusepy), and the kernel's NFS lines on a fixture host.

This kernel has no NFS client, so "nfs: server ... not responding" cannot be produced here:
those lines are hand-written in the kernel's format (fs/nfs/client.c / net/sunrpc) and served
from a FixtureHost's dmesg, with a mountinfo line for the NFS mount they concern.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prodx.host.fixture import FixtureHost
from prodx.host.local import LocalHost
from prodx.kb.loader import load_kb
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.netfs import NetworkFilesystemsProbe
from prodx.probes.runner import run_probes

NFS_MOUNTINFO = ("25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
                 "41 25 0:45 / /srv/shared rw,relatime - nfs4 files.lan:/export rw,vers=4.2,hard,proto=tcp\n")


def _run(host, status: str = "ok") -> dict[str, object]:
    ctx = ProbeContext(host, Target(), load_kb())
    findings, runs = run_probes([NetworkFilesystemsProbe()], ctx, 3.0)
    assert runs[0].status.value == status, runs[0].detail
    return {f.id: f for f in findings}


def _fixture(tmp_path: Path, dmesg: str) -> FixtureHost:
    (tmp_path / "root/proc/self").mkdir(parents=True)
    (tmp_path / "root/proc/self/mountinfo").write_text(NFS_MOUNTINFO)
    (tmp_path / "root/proc/uptime").write_text("90000.0 1000.0\n")
    (tmp_path / "host.json").write_text(json.dumps({
        "hostname": "web1", "now": 1.8e9, "is_root": True, "processes": [],
        "commands": [{"argv": ["dmesg"], "returncode": 0, "stdout": dmesg, "stderr": ""}]}))
    return FixtureHost(tmp_path)


def test_netfs_probe_with_nfs_server_not_responding_in_dmesg_reports_it(tmp_path) -> None:
    out = _run(_fixture(tmp_path, "[81234.500000] nfs: server files.lan not responding, still trying\n"))
    assert out["netfs.mounted"].state is FindingState.PRESENT
    f = out["netfs.server_not_responding"]
    assert f.state is FindingState.PRESENT and "files.lan" in f.summary and "/srv/shared" in f.summary


def test_netfs_probe_with_server_back_ok_reports_no_current_outage(tmp_path) -> None:
    dmesg = ("[81234.500000] nfs: server files.lan not responding, still trying\n"
             "[81300.100000] nfs: server files.lan OK\n")
    assert _run(_fixture(tmp_path, dmesg))["netfs.server_not_responding"].state is FindingState.ABSENT


def test_netfs_probe_ignores_a_server_no_longer_mounted(tmp_path) -> None:
    out = _run(_fixture(tmp_path, "[81234.500000] nfs: server old-nas not responding, timed out\n"))
    assert out["netfs.server_not_responding"].state is FindingState.ABSENT


@pytest.fixture
def dead_share(tmp_path):
    """The lab's FUSE stand-in for a dead NFS server, mounted, and two real clients blocked on it."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    pytest.importorskip("fuse", reason="fusepy is not installed")
    from prodx.lab.scenarios.netfs import DEAD_SERVER_SOURCE, mounted

    mnt = tmp_path / "share"
    mnt.mkdir()
    daemon = subprocess.Popen([sys.executable, "-c", DEAD_SERVER_SOURCE, str(mnt), "127.0.0.1:/srv/export"],
                              start_new_session=True, stderr=subprocess.DEVNULL)
    clients = []
    try:
        deadline = time.monotonic() + 15
        while not mounted(mnt) and time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.05)
        if not mounted(mnt):
            pytest.skip("the FUSE stand-in could not mount (libfuse2?)")
        clients = [subprocess.Popen(argv, stderr=subprocess.DEVNULL, start_new_session=True)
                   for argv in (["stat", "-f", str(mnt)], ["ls", str(mnt / "uploads")])]
        while time.monotonic() < deadline:
            waits = [Path(f"/proc/{c.pid}/wchan").read_text() for c in clients]
            if all(w.startswith(("request_wait_answer", "fuse_")) for w in waits):
                break
            time.sleep(0.05)
        yield mnt, clients
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
        for c in clients:
            c.kill()
            c.wait(10)
        assert not mounted(mnt)


def test_netfs_probe_with_processes_blocked_on_a_dead_share_reports_them_stuck(dead_share) -> None:
    mnt, clients = dead_share
    out = _run(LocalHost())
    mounted_f = out["netfs.mounted"]
    assert mounted_f.state is FindingState.PRESENT and str(mnt) in mounted_f.summary
    stuck = out["netfs.processes_stuck"]
    assert stuck.state is FindingState.PRESENT
    assert {c.pid for c in clients} <= {p["pid"] for p in stuck.evidence["processes"]}


def _woken_sleeper(tmp_path: Path, *, is_root: bool) -> FixtureHost:
    """A process seen in state D whose wait channel then reads "0" (a fixture host)."""
    (tmp_path / "root/proc/self").mkdir(parents=True)
    (tmp_path / "root/proc/self/mountinfo").write_text(NFS_MOUNTINFO)
    (tmp_path / "root/proc/4242").mkdir(parents=True)
    (tmp_path / "root/proc/4242/stat").write_text("4242 (php-fpm) D 1 4242 4242 0 -1 4194560 " + "0 " * 40 + "\n")
    (tmp_path / "root/proc/4242/wchan").write_text("0")
    (tmp_path / "host.json").write_text(json.dumps({
        "hostname": "web1", "now": 1.8e9, "is_root": is_root,
        "processes": [{"pid": 4242, "name": "php-fpm", "cmdline": ["php-fpm: pool www"]}],
        "commands": [{"argv": ["dmesg"], "returncode": 0, "stdout": "", "stderr": ""}]}))
    return FixtureHost(tmp_path)


def test_netfs_probe_as_root_takes_a_zero_wait_channel_for_a_task_that_woke(tmp_path) -> None:
    """Root reads every sleeper's wait channel, so "0" means the task ran again (a swap-in
    done): it is not stuck, and the finding is absent rather than unknown."""
    assert _run(_woken_sleeper(tmp_path, is_root=True))["netfs.processes_stuck"].state is FindingState.ABSENT


def test_netfs_probe_unprivileged_says_a_hidden_wait_channel_is_unknown(tmp_path) -> None:
    f = _run(_woken_sleeper(tmp_path, is_root=False), status="unprivileged")["netfs.processes_stuck"]
    assert f.state is FindingState.UNKNOWN and "wait channel is unreadable" in f.reason
