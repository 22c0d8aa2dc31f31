"""Each lab scenario reproduces its fault for real, and prodx diagnoses it first, with the
scenario's profile and without any (``lab.assert_diagnosed``).

Root only: loop-mounted ext4 images, throwaway users, real processes, nginx + PHP-FPM.
"""

from __future__ import annotations

import os
import stat

import pytest


pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (loop mounts, users)"),
]

KIB = 1024
MIB = 1024 * KIB


def _mnt(run):
    return run.scenario.mnt


def _app(run, rel: str):
    return run.scenario.app / rel


def test_disk_full_scenario_leaves_no_block_even_for_root_and_is_diagnosed_disk_full(lab) -> None:
    with lab.stage("disk-full") as run:
        st = os.statvfs(_mnt(run))
        assert st.f_bavail == 0
        assert (_mnt(run) / "data/blob.bin").stat().st_size > 30 * MIB
        assert lab.write_as(None, _mnt(run) / "data", 64 * KIB) == "ENOSPC"
        assert lab.write_as(run.scenario.user.name, _app(run, "var/sessions"), 64 * KIB) == "ENOSPC"
        lab.assert_diagnosed(run)


def test_log_growth_scenario_fills_the_disk_with_a_log_cut_mid_line_and_is_diagnosed_log_growth(lab) -> None:
    with lab.stage("log-growth") as run:
        assert os.statvfs(_mnt(run)).f_bavail == 0
        log = _app(run, "var/log/prod.log")
        assert log.stat().st_size > 30 * MIB
        with open(log, "rb") as fh:
            fh.seek(-200, os.SEEK_END)
            tail = fh.read()
        assert not tail.endswith(b"\n") and b"\n[" in tail
        assert lab.write_as(None, _app(run, "var/log"), 64 * KIB) == "ENOSPC"
        lab.assert_diagnosed(run)


def test_cache_growth_scenario_fills_the_disk_with_cache_entries_and_is_diagnosed_cache_growth(lab) -> None:
    with lab.stage("cache-growth") as run:
        st = os.statvfs(_mnt(run))
        assert st.f_bavail * st.f_frsize < 64 * KIB
        entries = list((_app(run, "var/cache/prod/pools")).rglob("*"))
        assert len([p for p in entries if p.is_file()]) > 300
        assert lab.write_as(run.scenario.user.name, _app(run, "var/cache"), 64 * KIB) == "ENOSPC"
        lab.assert_diagnosed(run)


def test_session_inode_scenario_exhausts_inodes_with_blocks_left_and_is_diagnosed_session_store_full(lab) -> None:
    with lab.stage("inode-exhaustion-sessions") as run:
        st = os.statvfs(_mnt(run))
        assert st.f_favail == 0 and st.f_ffree == 0
        assert st.f_bavail * st.f_frsize > 20 * MIB  # blocks remain: only inodes ran out
        assert len([n for n in os.listdir(_app(run, "var/sessions")) if n.startswith("sess_")]) > 2000
        assert lab.write_as(run.scenario.user.name, _app(run, "var/sessions")) == "ENOSPC"
        assert lab.write_as(None, _app(run, "var/cache")) == "ENOSPC"
        lab.assert_diagnosed(run)


def test_inode_exhaustion_scenario_exhausts_inodes_in_a_neutral_dir_and_is_diagnosed_inode_exhaustion(lab) -> None:
    with lab.stage("inode-exhaustion") as run:
        st = os.statvfs(_mnt(run))
        assert st.f_ffree == 0 and st.f_bavail * st.f_frsize > 20 * MIB
        assert lab.write_as(None, _mnt(run) / "data/chunks") == "ENOSPC"
        lab.assert_diagnosed(run)


def test_reserved_blocks_scenario_refuses_the_app_user_but_not_root_and_is_diagnosed_reserved(lab) -> None:
    with lab.stage("reserved-blocks") as run:
        st = os.statvfs(_mnt(run))
        assert st.f_bavail * st.f_frsize < 64 * KIB
        assert st.f_bfree * st.f_frsize > 2 * MIB  # the root reserve is still there
        assert lab.write_as(run.scenario.user.name, _app(run, "var/sessions"), 64 * KIB) == "ENOSPC"
        assert lab.write_as(None, _app(run, "var/sessions"), 64 * KIB) == "OK"
        lab.assert_diagnosed(run)


def test_quota_scenario_refuses_the_app_user_with_edquot_on_an_empty_disk_and_is_diagnosed_quota(lab) -> None:
    with lab.stage("quota") as run:
        st = os.statvfs(_mnt(run))
        assert st.f_bavail * st.f_frsize > 20 * MIB
        assert lab.write_as(run.scenario.user.name, _app(run, "var/sessions"), 64 * KIB) == "EDQUOT"
        assert lab.write_as(None, _app(run, "var/sessions"), 64 * KIB) == "OK"
        lab.assert_diagnosed(run)


def test_readonly_scenario_remounts_read_only_and_is_diagnosed_filesystem_readonly(lab) -> None:
    with lab.stage("readonly-remount") as run:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            opts = [line.split()[3] for line in fh if line.split()[1] == str(_mnt(run))]
        assert opts and opts[-1].split(",")[0] == "ro"
        assert lab.write_as(run.scenario.user.name, _app(run, "var/sessions")) == "EROFS"
        assert lab.write_as(None, _app(run, "var/cache")) == "EROFS"
        lab.assert_diagnosed(run)


def test_deleted_open_log_scenario_holds_space_in_a_deleted_file_and_is_diagnosed_deleted_open_files(lab) -> None:
    with lab.stage("deleted-open-log") as run:
        worker = run.scenario.worker
        assert worker.poll() is None
        fd_dir = f"/proc/{worker.pid}/fd"
        targets = [os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)]
        assert f"{run.scenario.worker_log} (deleted)" in targets
        assert not run.scenario.worker_log.exists()
        st = os.statvfs(_mnt(run))
        assert (st.f_blocks - st.f_bfree) / st.f_blocks > 0.5
        lab.assert_diagnosed(run)


def test_cache_owned_by_root_scenario_denies_the_app_user_its_cache_and_is_diagnosed_ownership(lab) -> None:
    with lab.stage("cache-owned-by-root") as run:
        prod = _app(run, "var/cache/prod")
        st = prod.stat()
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755
        assert lab.write_as(run.scenario.user.name, prod) == "EACCES"
        assert lab.write_as(run.scenario.user.name, _app(run, "var/cache")) == "OK"
        lab.assert_diagnosed(run)


def test_permission_denied_scenario_makes_the_session_dir_unwritable_and_is_diagnosed_permission(lab) -> None:
    with lab.stage("permission-denied") as run:
        sessions = _app(run, "var/sessions")
        assert stat.S_IMODE(sessions.stat().st_mode) == 0o555
        assert lab.write_as(run.scenario.user.name, sessions) == "EACCES"
        lab.assert_diagnosed(run)


def test_webstack_scenario_loses_logins_through_nginx_and_php_fpm_and_is_diagnosed_session_store(lab) -> None:
    with lab.stage("webstack-sessions-full") as run:
        web = run.scenario.web
        assert os.statvfs(_mnt(run)).f_favail == 0
        seen = run.scenario.verify_symptom()
        assert seen.login_status == 303 and seen.account_status == 200
        assert not seen.logged_in, seen.account_body
        assert "No space left on device" in web.php_errors()
        lab.assert_diagnosed(run)
