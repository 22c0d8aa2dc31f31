"""Dependency probes against real private PostgreSQL and Redis servers (prodx.lab.services):
reachable, stopped, out of connection slots, data directory on a full filesystem.

The probes see only the processes these tests start, so servers other tests run on the same
machine cannot leak in. Needs root (PostgreSQL runs as the postgres user; the full
filesystem is a tmpfs) and the Debian packages postgresql and redis-server.
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from prodx.host import LocalHost
from prodx.lab.services import postgres, postgres_unmet, redis, redis_unmet
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.dependencies import DatabasesProbe
from prodx.probes.network import NetReachProbe
from prodx.probes.runner import run_probes
from prodx.profile import Dependency

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: PostgreSQL runs as the postgres user")
needs_pg = pytest.mark.skipif(postgres_unmet() is not None, reason=postgres_unmet() or "")
needs_redis = pytest.mark.skipif(redis_unmet() is not None, reason=redis_unmet() or "")


class _OnlyThese(LocalHost):
    """The real host, with a process table limited to the servers a test started."""

    def __init__(self, *servers) -> None:  # noqa: ANN002 - lab server instances
        super().__init__()
        self.servers = servers

    def processes(self):
        pids = {s.pid for s in self.servers}
        return [p for p in super().processes() if p.pid in pids]


def _run(kb, deps, *servers, probes=None):
    target = Target(dependencies=list(deps))
    ctx = ProbeContext(_OnlyThese(*servers), target, kb)
    findings, runs = run_probes(probes or [DatabasesProbe(), NetReachProbe()], ctx, deadline_s=5.0)
    assert all(r.status.value == "ok" for r in runs), runs
    return {f.id: f for f in findings}


@needs_pg
@needs_redis
def test_databases_probe_on_running_postgres_and_redis_reports_them_healthy(kb) -> None:
    with postgres() as pg, redis() as r:
        found = _run(kb, [Dependency("db", url=pg.url), Dependency("cache", url=r.url)], pg, r)
        for fid in ("dep.refused", "dep.connections_exhausted", "dep.data_dir_full", "net.dependency_unreachable"):
            assert found[fid].state is FindingState.ABSENT, (fid, found[fid])
        dbs = {d["target"]: d for d in found["dep.data_dir_full"].evidence["databases"]}
        assert any(d.get("data_dir") == str(pg.data_dir) for d in dbs.values())
        assert any(d.get("data_dir") == str(r.data_dir) for d in dbs.values())
        used = [d["connections"] for d in found["dep.connections_exhausted"].evidence["databases"] if "connections" in d]
        assert {"max_connections": 100, "superuser_reserved_connections": 3, "used": 0} in used


@needs_pg
def test_databases_probe_after_postgres_stops_reports_econnrefused(kb) -> None:
    with postgres() as pg:
        dep = Dependency("db", url=pg.url)
        pg.stop()
        found = _run(kb, [dep], pg)
        assert found["net.dependency_unreachable"].state is FindingState.PRESENT
        assert found["net.dependency_unreachable"].evidence["dependencies"][0]["error"] == "ECONNREFUSED"
        assert found["dep.refused"].state is FindingState.PRESENT
        assert found["dep.connections_exhausted"].state is FindingState.UNKNOWN


@needs_pg
def test_databases_probe_on_postgres_filled_to_max_connections_reports_too_many_clients(kb) -> None:
    with postgres(settings={"max_connections": 5, "superuser_reserved_connections": 0}) as pg:
        pg.hold_connections(5)
        found = _run(kb, [Dependency("db", url=pg.url)], pg)
        f = found["dep.connections_exhausted"]
        assert f.state is FindingState.PRESENT
        assert f.evidence["databases"][0]["startup"]["sqlstate"] == "53300"
        assert "too many clients" in f.summary
        assert found["dep.refused"].state is FindingState.ABSENT
        assert found["net.dependency_unreachable"].state is FindingState.ABSENT


@needs_pg
def test_databases_probe_on_postgres_with_only_reserved_slots_left_counts_them_exhausted(kb) -> None:
    with postgres(settings={"max_connections": 6, "superuser_reserved_connections": 2}) as pg:
        pg.hold_connections(3)
        found = _run(kb, [Dependency("db", url=pg.url)], pg)
        assert found["dep.connections_exhausted"].state is FindingState.ABSENT
        pg.hold_connections(1)
        found = _run(kb, [Dependency("db", url=pg.url)], pg)
        f = found["dep.connections_exhausted"]
        assert f.state is FindingState.PRESENT
        assert f.evidence["databases"][0]["connections"] == {"max_connections": 6, "superuser_reserved_connections": 2, "used": 4}


@needs_redis
def test_databases_probe_on_redis_with_maxclients_filled_reports_exhausted(kb) -> None:
    with redis(settings={"maxclients": 2}) as r:
        r.hold_connections(2)
        found = _run(kb, [Dependency("cache", url=r.url)], r)
        f = found["dep.connections_exhausted"]
        assert f.state is FindingState.PRESENT
        assert "max number of clients reached" in f.summary
        assert found["net.dependency_unreachable"].state is FindingState.ABSENT


@needs_redis
def test_databases_probe_finds_a_local_redis_not_in_the_profile(kb) -> None:
    with redis() as r:
        found = _run(kb, [], r, probes=[DatabasesProbe()])
        f = found["dep.refused"]
        assert f.state is FindingState.ABSENT
        assert f.evidence["databases"][0]["target"] == f"local redis-server (redis 127.0.0.1:{r.port})"


@contextmanager
def _full_tmpfs(size_mib: int = 8):
    """A real tmpfs filled to ENOSPC, unmounted and removed on every way out."""
    mnt = Path(tempfile.mkdtemp(prefix="prodx-test-fulltmpfs-", dir="/tmp"))
    os.chmod(mnt, 0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(mnt)], check=True, timeout=30)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=30)
        os.rmdir(mnt)


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * (1 << 16))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


@needs_redis
def test_databases_probe_on_redis_whose_dir_is_on_a_full_filesystem_reports_data_dir_full(kb) -> None:
    with _full_tmpfs() as mnt, redis(mnt / "redis") as r:
        _fill(mnt)
        assert os.statvfs(mnt).f_bavail == 0
        found = _run(kb, [Dependency("cache", url=r.url)], r)
        f = found["dep.data_dir_full"]
        assert f.state is FindingState.PRESENT
        assert f.evidence["databases"][0]["data_mount"] == str(mnt)


@needs_redis
def test_databases_probe_on_redis_stopped_by_the_root_reserve_reports_data_dir_full(kb) -> None:
    """A real ext4 with its default 5 % root reserve, filled by the redis user: Redis gets
    ENOSPC while root still has room, so its data directory is full for the server."""
    import pwd

    from prodx.lab.sandbox import Sandbox, run_argv

    sb = Sandbox("dep-reserve")
    try:
        _dev, mnt = sb.mount_image(sb.make_ext4("disk.img", 32), "mnt")
        with redis(mnt / "redis") as r:
            if r.account is None:
                pytest.skip("needs the redis user (Debian package redis-server creates it)")
            uid = pwd.getpwnam(r.account.pw_name).pw_uid
            filler = ("import os\nfd = os.open(os.path.join(os.sys.argv[1], 'filler.bin'), os.O_WRONLY | os.O_CREAT)\n"
                      "try:\n    [os.write(fd, b'x' * 65536) for _ in iter(int, 1)]\nexcept OSError as e:\n    print(e.errno)\n")
            out = run_argv(["/usr/bin/python3", "-I", "-c", filler, str(r.data_dir)], user=uid, group=r.account.pw_gid,
                           extra_groups=[]).stdout.strip()
            assert out == str(errno.ENOSPC)
            st = os.statvfs(mnt)
            assert st.f_bavail * st.f_frsize < 1 << 20 < (st.f_bfree - st.f_bavail) * st.f_frsize  # root's reserve is left
            f = _run(kb, [Dependency("cache", url=r.url)], r)["dep.data_dir_full"]
            assert f.state is FindingState.PRESENT
            assert "full for the server's user" in f.summary
    finally:
        assert sb.teardown() == []
