"""Disks that fail a server, reproduced for real: the fault is measured (bytes free, errno,
the server's own error lines) and prodx diagnoses it first, with and without a profile.

Root only (loop devices, mounts, PostgreSQL as the postgres user).
"""

from __future__ import annotations

import errno
import os

import pytest

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (loop devices, servers)"),
]


def test_db_disk_full_scenario_fills_postgresqls_own_volume_and_is_diagnosed_first(lab) -> None:
    with lab.stage("db-disk-full") as run:
        sc = run.scenario
        st = os.statvfs(sc.volume)
        assert st.f_bavail * st.f_frsize < 1 << 20  # nothing left for the postgres user
        insert = sc.pg.psql_result("INSERT INTO events (kind, payload) SELECT 'x', repeat('y', 900) "
                                   "FROM generate_series(1, 5000)")
        assert insert.returncode != 0 and "No space left on device" in insert.stderr
        log = sc.pg.log_text()
        assert "could not extend file" in log and "No space left on device" in log
        assert sc.pg.running  # reads still work: the server is up, its disk is full
        assert sc.pg.psql("SELECT count(*) > 0 FROM events") == "t"
        lab.assert_diagnosed(run)


def test_io_errors_scenario_fails_reads_with_eio_from_the_block_layer_and_is_diagnosed_first(lab) -> None:
    with lab.stage("io-errors") as run:
        sc = run.scenario
        # Real EIO: the catalog's pages were dropped, so reading it goes to the failing disk.
        with open(sc.catalog, "rb") as fh:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            with pytest.raises(OSError) as exc:
                fh.read()
        assert exc.value.errno == errno.EIO
        kernel = sc.kernel_lines(run.sandbox)
        assert any(f"I/O error, dev {sc.device}, sector" in line for line in kernel), kernel
        assert any("EXT4-fs error" in line or "Aborting journal" in line for line in kernel), kernel
        assert lab.write_as(sc.user.name, sc.app / "var/sessions") in ("EROFS", "EIO")
        assert "Input/output error" in sc.web.php_errors()
        lab.assert_diagnosed(run)
