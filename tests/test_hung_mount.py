"""A mount whose statfs never returns (a FUSE daemon that blocks, standing in for a dead NFS
server): the run still ends within its deadline and names the stuck mount. Needs root,
/dev/fuse, libfuse2 and fusepy (installed by .ci/run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prodx.host import LocalHost
from prodx.host.base import CallOutcome

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"),
]
REPO = Path(__file__).resolve().parents[1]


def _mounted(path: str) -> bool:
    return any(line.split()[1] == path for line in Path("/proc/mounts").read_text().splitlines())


def _hung_mount(tmp_path, *extra: str):
    pytest.importorskip("fuse", reason="fusepy is not installed")
    mnt = tmp_path / "hung"
    mnt.mkdir()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.hangfs", str(mnt), *extra], cwd=REPO, stderr=subprocess.PIPE
    )
    try:
        for _ in range(100):
            if _mounted(str(mnt)):
                break
            if daemon.poll() is not None:
                pytest.skip(f"FUSE daemon could not mount: {daemon.stderr.read().decode()[-300:]}")
            time.sleep(0.05)
        else:
            pytest.fail("the FUSE mount did not come up")
        yield str(mnt)
    finally:
        daemon.kill()  # blocked statfs callers now get ENOTCONN and exit
        daemon.wait(5)
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
        assert not _mounted(str(mnt))


@pytest.fixture()
def hung_mount(tmp_path):
    yield from _hung_mount(tmp_path)


@pytest.fixture()
def dead_mount(tmp_path):
    """Every lookup on it blocks too: a profile's paths and logs on a dead network mount."""
    yield from _hung_mount(tmp_path, "--hang-lookups")


def test_statvfs_on_blocking_fuse_mount_is_reported_hung_and_others_answer(hung_mount):
    stats = LocalHost().statvfs_many([hung_mount, "/"], deadline_s=0.5)
    assert stats[0].outcome is CallOutcome.HUNG
    assert stats[1].outcome is CallOutcome.OK


def test_diagnose_with_blocking_mount_ends_in_time_and_names_it(hung_mount):
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "prodx", "diagnose", "--json", "--deadline", "2"],
        capture_output=True, text=True, timeout=30,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    hung = next(f for f in doc["findings"] if f["id"] == "storage.mount_hung")
    assert hung["state"] == "present"
    assert hung_mount in hung["summary"]
    assert elapsed < 15  # bounded by the deadline, not by the mount (which never answers)


def test_diagnose_with_profile_paths_and_logs_on_a_dead_mount_exits_and_names_it(dead_mount, tmp_path):
    # The probes' threads used to block in the kernel on the profile's paths: the report
    # printed and the process never exited, and a statvfs child was left stuck.
    profile = tmp_path / "site.toml"
    profile.write_text(f'[app]\nname = "shop"\nwritable = ["{dead_mount}/app/var"]\nlogs = ["{dead_mount}/app/var/log/app.log"]\n')
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "prodx", "diagnose", "--json", "--deadline", "0.5",
                           "--profile", str(profile)], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    findings = {f["id"]: f for f in doc["findings"]}
    assert findings["storage.mount_hung"]["state"] == "present" and dead_mount in findings["storage.mount_hung"]["summary"]
    on_mount = [f for f in doc["findings"] if f["state"] == "unknown" and dead_mount in (f.get("reason") or "")]
    assert on_mount, "findings about the profile's paths say they sit on the dead mount"
    assert elapsed < 20
    left = subprocess.run(["pgrep", "-f", f"--profile {profile}"], capture_output=True, text=True).stdout.split()
    assert left == [], "no prodx process (or statvfs child) left behind"


@pytest.mark.parametrize("command", ["space", "logs"])
def test_space_and_logs_on_a_dead_mount_say_so_and_exit(dead_mount, command):
    # They ignored --deadline there and hung unkillably in the kernel.
    target = dead_mount if command == "space" else f"{dead_mount}/app.log"
    proc = subprocess.run([sys.executable, "-m", "prodx", command, target], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "does not answer" in proc.stderr and target in proc.stderr


def test_a_profile_on_a_dead_mount_is_refused_without_touching_it(dead_mount):
    proc = subprocess.run([sys.executable, "-m", "prodx", "diagnose", "--profile", f"{dead_mount}/site.toml"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "does not answer" in proc.stderr and f"{dead_mount}/site.toml" in proc.stderr
