"""The lab sandbox stays in its directory and always cleans up: on exceptions, on SIGINT and
SIGTERM in a child running a scenario, after SIGKILL (at the next start), and when asked twice."""

from __future__ import annotations

import io
import json
import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from prodx.lab import LabError, Needs, Sandbox, SandboxEscape, Scenario, cleanup_stale, staged
from prodx.lab.commands import run_command
from prodx.lab.sandbox import mounts_under


_STAGE_AND_WAIT = textwrap.dedent("""
    import json, os, signal, sys, time
    from prodx.lab import staged
    with staged("deleted-open-log") as run:
        sc = run.scenario
        print(json.dumps({"root": str(run.sandbox.root), "user": sc.user.name, "pid": sc.worker.pid}), flush=True)
        if sys.argv[1] == "self-sigint":
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
""")


def _assert_gone(info: dict) -> None:
    root = info["root"]
    assert not Path(root).exists()
    assert mounts_under(root) == []
    loops = subprocess.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
                           capture_output=True, text=True, timeout=10).stdout
    assert root not in loops
    with pytest.raises(KeyError):
        pwd.getpwnam(info["user"])
    assert not Path(f"/proc/{info['pid']}").exists()


def _start_child(mode: str) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen([sys.executable, "-c", _STAGE_AND_WAIT, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, json.loads(line)


class _Boom(Scenario):
    """Mounts, adds a user and starts a process, then fails (unregistered: no name)."""

    def setup(self, sb: Sandbox) -> None:
        image = sb.make_ext4("disk.img", 16)
        sb.mount_image(image, "mnt")
        self.user = sb.add_user()
        self.proc = sb.spawn(["sleep", "60"], user=self.user)
        self.root = sb.root

    def inject(self, sb: Sandbox) -> None:
        raise RuntimeError("boom")


@pytest.mark.parametrize("outside", ["/etc/passwd", "../escape", "/tmp", "mnt/../../x"])
def test_sandbox_check_refuses_paths_outside_its_root(tmp_path: Path, outside: str) -> None:
    sb = Sandbox("escape", base=tmp_path)
    try:
        with pytest.raises(SandboxEscape):
            sb.check(outside)
        with pytest.raises(SandboxEscape):
            sb.write_text(outside, "x")
        with pytest.raises(SandboxEscape):
            sb.mkdirs(outside)
    finally:
        sb.teardown()


def test_sandbox_refuses_a_symlink_inside_that_points_outside(tmp_path: Path) -> None:
    sb = Sandbox("symlink", base=tmp_path)
    try:
        os.symlink("/etc", sb.root / "etc")
        with pytest.raises(SandboxEscape):
            sb.write_text("etc/prodx-lab-test", "x")
        with pytest.raises(SandboxEscape):
            sb.remove("etc/hostname")
        assert sb.check("inside/new") == sb.root / "inside/new"
    finally:
        sb.teardown()
    assert not sb.root.exists()


def test_backdate_ages_what_setup_made_but_not_a_log_a_process_holds_open(tmp_path: Path) -> None:
    from prodx.lab.sandbox import SETUP_AGE_S

    sb = Sandbox("backdate", base=tmp_path)
    try:
        assert sb.now() < time.time() - SETUP_AGE_S + 60  # setup's history is old
        sb.mkdirs("app")
        conf = sb.write_text("app/config.php", "<?php return [];\n")
        os.symlink("app", sb.root / "current")
        live = sb.write_text("app.log", "started\n")
        writer = sb.spawn(["sleep", "60"], log="app.log")  # holds app.log open, as a server does
        assert sb.backdate() >= 3
        now = time.time()
        for path in (conf, conf.parent):
            assert now - path.stat().st_mtime == pytest.approx(SETUP_AGE_S, abs=60)
        assert now - os.lstat(sb.root / "current").st_mtime == pytest.approx(SETUP_AGE_S, abs=60)
        assert now - live.stat().st_mtime < 60
        assert abs(sb.now() - now) < 60  # what inject writes is new
        writer.kill()
    finally:
        sb.teardown()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
def test_sandbox_refuses_to_mount_or_image_outside_its_root(tmp_path: Path) -> None:
    sb = Sandbox("mount-outside")
    try:
        with pytest.raises(SandboxEscape):
            sb.make_ext4(str(tmp_path / "outside.img"), 16)
        image = sb.make_ext4("disk.img", 16)
        with pytest.raises(SandboxEscape):
            sb.mount_image(image, str(tmp_path / "mnt"))
        assert not (tmp_path / "outside.img").exists()
    finally:
        assert sb.teardown() == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
def test_teardown_runs_when_a_scenario_step_raises() -> None:
    scenario = _Boom()
    with pytest.raises(RuntimeError, match="boom"):
        with staged(scenario):
            pass
    _assert_gone({"root": str(scenario.root), "user": scenario.user.name, "pid": scenario.proc.pid})


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
def test_sigint_a_child_sends_itself_while_running_a_scenario_tears_everything_down() -> None:
    proc, info = _start_child("self-sigint")
    proc.wait(timeout=60)
    assert proc.returncode != 0  # died of the KeyboardInterrupt, after the finally blocks
    _assert_gone(info)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
def test_sigterm_to_a_child_running_a_scenario_tears_everything_down() -> None:
    proc, info = _start_child("wait")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    _assert_gone(info)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
def test_sandbox_of_a_killed_run_is_cleaned_by_the_next_cleanup() -> None:
    proc, info = _start_child("wait")
    proc.kill()  # SIGKILL: no finally runs; the worker, mount, loop and user stay behind
    proc.wait(timeout=10)
    assert Path(info["root"]).exists() and mounts_under(info["root"])
    done = dict(cleanup_stale())
    assert done.get(Path(info["root"])) == []
    deadline = time.monotonic() + 5
    while Path(f"/proc/{info['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the killed worker is not our child: init reaps it
    _assert_gone(info)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
def test_teardown_twice_is_harmless() -> None:
    sb = Sandbox("twice")
    image = sb.make_ext4("disk.img", 16)
    sb.mount_image(image, "mnt")
    user = sb.add_user()
    assert sb.teardown() == []
    assert sb.teardown() == []
    _assert_gone({"root": str(sb.root), "user": user.name, "pid": 2**22 + 1})


def test_lab_run_as_non_root_exits_2_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    err = io.StringIO()
    assert run_command("disk-full", out=io.StringIO(), err=err) == 2
    assert "needs root" in err.getvalue()


def test_lab_run_of_an_unknown_scenario_exits_2_naming_the_known_ones() -> None:
    err = io.StringIO()
    assert run_command("no-such-fault", out=io.StringIO(), err=err) == 2
    assert "disk-full" in err.getvalue()


def test_staged_refuses_a_scenario_whose_needs_are_unmet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)

    class _Impossible(Scenario):
        needs = Needs(commands=(("prodx-no-such-command", "prodx-no-such-package"),))

    with pytest.raises(LabError, match="prodx-no-such-package"):
        with staged(_Impossible()):
            pass
