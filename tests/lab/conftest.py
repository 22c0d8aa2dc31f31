"""Lab test helpers: stage a scenario (skipped with its reason where it cannot run here),
write as a user, run the real `prodx diagnose`; and a session check that nothing leaked."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from prodx.lab import Staged, get_scenario, staged
from prodx.lab.scenarios.common import child_python

_WRITE = """
import errno, os, sys
path = os.path.join(sys.argv[1], ".prodx-labtest-" + str(os.getpid()))
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"x" * int(sys.argv[2]))
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)
except OSError as exc:
    print(errno.errorcode[exc.errno])
else:
    print("OK")
"""


def lab_leftovers() -> list[str]:
    """Mounts, loop devices, users and network namespaces a lab run left on this host."""
    out = []
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        out += [f"mount {line.split()[1]}" for line in fh if "/prodx-lab-" in line]
    loops = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                           capture_output=True, text=True, timeout=10).stdout
    out += [f"loop {line.strip()}" for line in loops.splitlines() if "/prodx-lab-" in line]
    out += [f"user {p.pw_name}" for p in pwd.getpwall() if p.pw_name.startswith("prodxlab")]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    out += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith("prodxlab")]
    if os.path.isdir("/etc/netns"):
        out += [f"netns files /etc/netns/{n}" for n in os.listdir("/etc/netns") if n.startswith("prodxlab")]
    return out


@pytest.fixture(scope="session", autouse=True)
def no_lab_leftovers() -> Iterator[None]:
    """After the whole session no lab mount, loop device or user remains."""
    yield
    if os.geteuid() == 0:
        assert lab_leftovers() == []


@contextmanager
def stage(name: str) -> Iterator[Staged]:
    """Set up and inject scenario ``name``; teardown on every way out. Skips (with the reason)
    when this host cannot run it: not root, a package or kernel feature missing."""
    unmet = get_scenario(name).needs.unmet()
    if unmet:
        pytest.skip(f"{name}: {'; '.join(unmet)}")
    with staged(name) as run:
        yield run
    assert run.teardown_problems == []


def write_as(user: str | None, directory: os.PathLike[str] | str, size_bytes: int = 4096) -> str:
    """Create, write ``size_bytes``, fsync and remove a file in ``directory`` as ``user``
    (root if None): "OK" or the errno name (ENOSPC, EDQUOT, EACCES, EROFS)."""
    kwargs: dict[str, Any] = {}
    if user:
        pw = pwd.getpwnam(user)
        kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    proc = subprocess.run([child_python(), "-I", "-c", _WRITE, str(directory), str(size_bytes)],
                          capture_output=True, text=True, timeout=30, check=True, **kwargs)
    return proc.stdout.strip()


def diagnose_json(run: Staged, *, profile: bool = True) -> dict[str, Any]:
    """The real `python -m prodx diagnose --json [--profile ...]` on the staged fault."""
    argv = [sys.executable, "-m", "prodx", "diagnose", "--json"]
    if profile:
        argv += ["--profile", str(run.profile_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), f"diagnose exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    return json.loads(proc.stdout)


def diagnosis_line(doc: dict[str, Any], accepted: tuple[str, ...]) -> tuple[bool, str]:
    """Whether the leader is an accepted condition at P >= 0.5, and a line saying what led."""
    ranking = [(d["condition"], round(d["probability"], 3)) for d in doc["differential"][:5]]
    lead = doc["differential"][0] if doc["differential"] else {"condition": None, "probability": 0.0}
    present = [f["id"] for f in doc["findings"] if f["state"] == "present"]
    ok = lead["condition"] in accepted and lead["probability"] >= 0.5
    return ok, f"got {ranking}; present findings {present}"


def assert_diagnosed(run: Staged) -> None:
    """Diagnosed twice on the one staging, with the scenario's profile and without any: each
    time the leading condition is one the scenario accepts, at probability >= 0.5."""
    results = []
    for profile in (True, False):
        ok, line = diagnosis_line(diagnose_json(run, profile=profile), run.scenario.accepted)
        results.append((ok, f"{'with' if profile else 'without'} a profile: {line}"))
    assert all(ok for ok, _ in results), (
        f"expected one of {run.scenario.accepted} first (p >= 0.5) both ways; "
        + " | ".join(line for _, line in results))


class LabHelpers:
    """The helpers above, handed to tests as the ``lab`` fixture (conftest is not importable)."""

    stage = staticmethod(stage)
    write_as = staticmethod(write_as)
    diagnose = staticmethod(diagnose_json)
    assert_diagnosed = staticmethod(assert_diagnosed)
    diagnose_json = staticmethod(diagnose_json)


@pytest.fixture
def lab() -> LabHelpers:
    return LabHelpers()
