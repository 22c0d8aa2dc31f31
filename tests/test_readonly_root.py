"""prodx on a host whose root filesystem is read-only: it needs nowhere to write (no temp
files, no state), and it diagnoses the read-only filesystem itself. The root is made
read-only only inside a private mount namespace (a read-only bind remount), so the machine
running the tests is untouched. Needs root and util-linux's unshare."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare"),
]


def test_diagnose_with_read_only_root_runs_and_reports_the_read_only_filesystem():
    script = f'mount -o remount,bind,ro / && exec {sys.executable} -m prodx diagnose --json --as nobody'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    states = {f["id"]: f for f in doc["findings"]}
    assert states["storage.readonly"]["state"] == "present"
    assert any(m["mount_point"] == "/" for m in states["storage.readonly"]["evidence"]["mounts"])
    assert states["storage.write_erofs"]["state"] == "present"
    assert doc["differential"][0]["condition"] == "filesystem-readonly"
