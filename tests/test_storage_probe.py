"""The storage probe on fixture hosts: what it says when statvfs answers for no mount (unknown,
never absent: nothing was checked), read-only judged from the mount table alone, and fstab's
escaped mount points."""

from __future__ import annotations

import json
from pathlib import Path

from prodx.host.fixture import FixtureHost
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.runner import run_probes
from prodx.probes.storage import StorageMountsProbe

# A captured host whose / was remounted read-only after errors (the superblock says ro).
MOUNTINFO = (
    "22 1 8:1 / / ro,relatime shared:1 - ext4 /dev/sda1 ro,errors=remount-ro\n"
    "23 22 8:17 / /srv rw,relatime shared:2 - ext4 /dev/sdb1 rw\n"
    "24 22 8:33 / /mnt/old\\040disk ro,relatime shared:3 - ext4 /dev/sdc1 ro\n"
)
FSTAB = "/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sdb1 /srv ext4 defaults 0 2\n/dev/sdc1 /mnt/old\\040disk ext4 ro 0 0\n"


def _host(root: Path, statvfs: list[dict]) -> FixtureHost:
    (root / "host.json").write_text(json.dumps({"now": 1_800_000_000, "is_root": True, "hostname": "fx",
                                                "statvfs": statvfs}))
    for path, text in (("proc/self/mountinfo", MOUNTINFO), ("etc/fstab", FSTAB)):
        p = root / "root" / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return FixtureHost(root)


def _findings(host: FixtureHost, kb) -> dict:
    ctx = ProbeContext(host, Target(), kb)
    findings, runs = run_probes([StorageMountsProbe()], ctx, 5.0)
    assert [r.status.value for r in runs] == ["ok"], runs
    return {f.id: f for f in findings}


def test_no_statvfs_answer_leaves_space_unknown_with_the_reason_and_still_judges_read_only(tmp_path, kb):
    # The fixture host answers ENOENT for every statvfs it has no record of: none here.
    found = _findings(_host(tmp_path, []), kb)
    for fid in ("storage.full", "storage.low_space", "storage.reserved_only", "storage.inodes_exhausted"):
        assert found[fid].state is FindingState.UNKNOWN, fid
        assert "statvfs answered for none of the 3 mounts" in found[fid].reason
    readonly = found["storage.readonly"]
    assert readonly.state is FindingState.PRESENT
    points = [m["mount_point"] for m in readonly.evidence["mounts"]]
    # / is read-only against its fstab; the old disk is read-only as its fstab entry asks.
    assert points == ["/"]
    # The mounts answered (with an error): none hung.
    assert found["storage.mount_hung"].state is FindingState.ABSENT


def test_an_answered_mount_is_measured_as_before(tmp_path, kb):
    stats = {"path": "/srv", "outcome": "ok", "block_size": 4096, "blocks_total": 1 << 20, "blocks_free": 0,
             "blocks_avail": 0, "inodes_total": 1000, "inodes_free": 900, "inodes_avail": 900}
    found = _findings(_host(tmp_path, [stats]), kb)
    assert found["storage.full"].state is FindingState.PRESENT
    assert found["storage.inodes_exhausted"].state is FindingState.ABSENT
    assert found["storage.inodes_exhausted"].evidence["checked"] == ["/srv"]
