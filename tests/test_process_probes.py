"""Process and limit probes on real processes this test starts: a worker at its open-files
limit, a parent that does not reap its zombies, a private PHP-FPM whose two workers are
busy with slow requests (and that is restarted three times), and expected services that
do (or do not) run. Every process is stopped by its fixture, also on failure."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from prodx.host.local import LocalHost
from prodx.model import Finding, FindingState
from prodx.probes.base import Probe, ProbeContext, Target
from prodx.probes.processes import LimitsProbe, ServicesProbe, WorkerPoolsProbe, is_idle_wchan
from prodx.lab.webstack import find_php_fpm


def _run(probe: Probe, kb, *, services: list[str] = (), logs: list[str] = ()) -> dict[str, Finding]:
    ctx = ProbeContext(LocalHost(), Target(services=list(services), logs=list(logs)), kb)
    return {f.id: f for f in probe.run(ctx)}


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL whatever remains, and reap the leader."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            continue
    # Always: a group may outlive its leader (php-fpm workers).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


# ---- a worker at its open-files limit ---------------------------------------------------------

_OPEN_UNTIL_EMFILE = """
import os, sys, time
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as exc:
    print(exc.strerror, flush=True)
for fd in fds[-2:]:
    os.close(fd)
time.sleep(120)
"""


@pytest.fixture
def fd_hog() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", _OPEN_UNTIL_EMFILE], stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)), start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "Too many open files"
        yield proc
    finally:
        _stop(proc)


def test_limits_probe_on_worker_two_fds_below_its_rlimit_reports_fd_near_limit_with_its_pid(fd_hog, kb) -> None:
    found = _run(LimitsProbe(), kb)["process.fd_near_limit"]
    assert found.state is FindingState.PRESENT
    mine = [p for p in found.evidence["processes"] if p["pid"] == fd_hog.pid]
    assert mine and mine[0]["soft_limit"] == 64 and mine[0]["open_fds"] == 62
    assert f"pid {fd_hog.pid}" in found.summary or len(found.evidence["processes"]) > 5


def test_limits_probe_on_this_host_reads_system_file_handles_and_task_limits(kb) -> None:
    found = _run(LimitsProbe(), kb)
    allocated, _free, maximum = (int(x) for x in Path("/proc/sys/fs/file-nr").read_text().split())
    fds = found["process.system_fd_exhausted"]
    assert fds.state is FindingState.ABSENT and fds.evidence["file_max"] == maximum
    pids = found["process.pid_near_limit"]
    assert pids.evidence["pid_max"] == int(Path("/proc/sys/kernel/pid_max").read_text())


# ---- zombies ------------------------------------------------------------------------------------

_ZOMBIE_PARENT = """
import os, sys, time
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        os._exit(0)
print("forked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def zombie_parent() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-I", "-c", _ZOMBIE_PARENT, "12"], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "forked"
        deadline = time.monotonic() + 5
        while _zombie_children(proc.pid) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield proc
    finally:
        _stop(proc)


def _zombie_children(ppid: int) -> int:
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        n += rest[0] == "Z" and int(rest[1]) == ppid
    return n


def test_limits_probe_with_a_parent_that_never_reaps_reports_zombies_naming_the_parent(zombie_parent, kb) -> None:
    assert _zombie_children(zombie_parent.pid) == 12
    found = _run(LimitsProbe(), kb)["process.zombies"]
    assert found.state is FindingState.PRESENT
    assert [p["zombies"] for p in found.evidence["parents"] if p["ppid"] == zombie_parent.pid] == [12]


# ---- expected services --------------------------------------------------------------------------

_NAMED = "import sys, time\nopen('/proc/self/comm', 'w').write(sys.argv[1])\nprint('ok', flush=True)\ntime.sleep(120)\n"


@pytest.fixture
def named_service() -> Iterator[tuple[str, subprocess.Popen]]:
    name = f"prodxsvc{os.getpid() % 100000}"
    proc = subprocess.Popen([sys.executable, "-I", "-c", _NAMED, name], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ok"
        yield name, proc
    finally:
        _stop(proc)


def test_services_probe_with_a_profile_service_not_running_reports_service_down(named_service, kb) -> None:
    name, _proc = named_service
    found = _run(ServicesProbe(), kb, services=[name, "prodx-no-such-daemon"])
    down = found["process.service_down"]
    assert down.state is FindingState.PRESENT and down.evidence["down"] == ["prodx-no-such-daemon"]


def test_services_probe_with_every_service_running_reports_service_down_absent(named_service, kb) -> None:
    name, proc = named_service
    found = _run(ServicesProbe(), kb, services=[name])
    assert found["process.service_down"].state is FindingState.ABSENT
    assert found["process.service_down"].evidence["running"] == {name: proc.pid}


def test_services_probe_with_a_service_started_just_now_reports_recent_restart(named_service, kb) -> None:
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    if uptime < 700:
        pytest.skip("the host booted less than 10 minutes ago: any service start is the boot")
    name, proc = named_service
    found = _run(ServicesProbe(), kb, services=[name])["process.recent_restart"]
    assert found.state is FindingState.PRESENT and found.evidence["services"][0]["pid"] == proc.pid


def test_services_probe_without_a_profile_says_unknown_with_the_reason(kb) -> None:
    found = _run(ServicesProbe(), kb)
    assert {f.state for f in found.values()} == {FindingState.UNKNOWN}
    assert "no expected services known" in found["process.service_down"].reason


# ---- a private PHP-FPM ----------------------------------------------------------------------------

_SLOW_PHP = "<?php sleep(4); echo 'done';\n"


@dataclass
class Fpm:
    binary: str
    root: Path
    proc: subprocess.Popen | None = None

    @property
    def sock(self) -> Path:
        return self.root / "fpm.sock"

    @property
    def log(self) -> Path:
        return self.root / "fpm.log"

    def start(self) -> None:
        if self.sock.exists():
            self.sock.unlink()
        self.proc = subprocess.Popen(
            [self.binary, "--nodaemonize", "--fpm-config", str(self.root / "php-fpm.conf"), "-n"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while len(self.children()) < 2:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def children(self) -> list[int]:
        if self.proc is None:
            return []
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                raw = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rfind(")") + 2 :].split()[1]) == self.proc.pid:
                out.append(int(pid))
        return out


@pytest.fixture
def fpm() -> Iterator[Fpm]:
    binary = find_php_fpm()
    if binary is None:
        pytest.skip("needs Debian package php-fpm")
    # Not tmp_path: the pool's user (nobody, when we are root) must reach the script.
    root = Path(tempfile.mkdtemp(prefix="prodx-test-fpm-"))
    os.chmod(root, 0o755)
    who = "user = nobody\ngroup = nogroup\n" if os.geteuid() == 0 else ""
    (root / "pool.d").mkdir()
    (root / "php-fpm.conf").write_text(
        f"[global]\npid = {root}/fpm.pid\nerror_log = {root}/fpm.log\ndaemonize = no\ninclude = {root}/pool.d/*.conf\n")
    (root / "pool.d/app.conf").write_text(
        f"[app]\n{who}listen = {root}/fpm.sock\nlisten.mode = 0666\npm = static\npm.max_children = 2\n")
    (root / "slow.php").write_text(_SLOW_PHP)
    os.chmod(root / "slow.php", 0o644)
    server = Fpm(binary, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def fastcgi_get(sock: Path, script: Path, timeout_s: float = 15.0) -> bytes:
    """One FastCGI GET of ``script`` (what nginx's fastcgi_pass sends); the raw STDOUT stream."""

    def record(kind: int, content: bytes) -> bytes:
        return struct.pack("!BBHHBx", 1, kind, 1, len(content), 0) + content

    def pair(k: str, v: str) -> bytes:
        return bytes([len(k), len(v)]) + k.encode() + v.encode()

    params = b"".join(pair(k, v) for k, v in
                      {"SCRIPT_FILENAME": str(script), "SCRIPT_NAME": "/" + script.name, "REQUEST_METHOD": "GET"}.items())
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout_s)
        s.connect(str(sock))
        s.sendall(record(1, struct.pack("!HB5x", 1, 0)) + record(4, params) + record(4, b"") + record(5, b""))
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def _wchan(pid: int) -> str:
    return Path(f"/proc/{pid}/wchan").read_text()


def _our_pool(found: Finding, fpm: Fpm) -> dict:
    pools = [p for p in found.evidence["pools"] if p["master_pid"] == fpm.proc.pid]
    assert len(pools) == 1, found
    return pools[0]


def test_worker_pool_probe_on_idle_fpm_pool_at_max_children_reports_not_saturated(fpm, kb) -> None:
    found = _run(WorkerPoolsProbe(), kb)["process.worker_pool_saturated"]
    pool = _our_pool(found, fpm)
    assert pool["children"] == 2 and pool["max_children"] == 2 and pool["idle"] == 2
    assert pool["saturated"] is False


def test_worker_pool_probe_with_two_slow_requests_in_a_two_worker_pool_reports_saturated(fpm, kb) -> None:
    replies: list[bytes] = []
    clients = [threading.Thread(target=lambda: replies.append(fastcgi_get(fpm.sock, fpm.root / "slow.php")))
               for _ in range(3)]
    for t in clients:
        t.start()
    try:
        deadline = time.monotonic() + 3
        while not all(is_idle_wchan(_wchan(pid)) is False for pid in fpm.children()):
            assert time.monotonic() < deadline, "the workers never left accept()"
            time.sleep(0.05)
        found = _run(WorkerPoolsProbe(), kb)["process.worker_pool_saturated"]
        pool = _our_pool(found, fpm)
        assert found.state is FindingState.PRESENT
        assert pool["saturated"] is True and pool["busy"] == 2 and pool["pm"] == "static"
        assert pool["queued"] == 1  # the third request waits in the listen queue
    finally:
        for t in clients:
            t.join(timeout=20)
    assert len(replies) == 3 and all(b"done" in r for r in replies)


def test_services_probe_on_fpm_restarted_three_times_reports_crash_loop_from_its_log(fpm, kb) -> None:
    for _ in range(2):
        fpm.stop()
        fpm.start()
    assert fpm.log.read_text().count("fpm is running") == 3
    found = _run(ServicesProbe(), kb, services=[Path(fpm.binary).name], logs=[str(fpm.log)])
    loop = found["process.crash_loop"]
    assert loop.state is FindingState.PRESENT and loop.evidence["starts"] == 3
    assert found["process.service_down"].state is FindingState.ABSENT


def test_services_probe_on_fpm_started_once_reports_no_crash_loop(fpm, kb) -> None:
    found = _run(ServicesProbe(), kb, services=[Path(fpm.binary).name], logs=[str(fpm.log)])
    assert found["process.crash_loop"].state is FindingState.ABSENT
    assert found["process.crash_loop"].evidence["starts"] == 1


# ---- fixture hosts captured from the real lab scenarios (tests/fixtures/capture.py) ----------------

HOSTS = Path(__file__).parent / "fixtures" / "hosts"


def _replay(name: str, probe: Probe, kb) -> dict[str, Finding]:
    import tomllib

    from prodx.host.fixture import FixtureHost

    directory = HOSTS / name
    app = tomllib.loads((directory / "profile.toml").read_text())["app"]
    ctx = ProbeContext(FixtureHost(directory), Target(services=app["services"], logs=app["logs"]), kb)
    return {f.id: f for f in probe.run(ctx)}


def test_worker_pool_probe_replayed_on_captured_saturated_pool_reports_both_workers_busy(kb) -> None:
    found = _replay("processes-worker-pool-exhausted", WorkerPoolsProbe(), kb)["process.worker_pool_saturated"]
    assert found.state is FindingState.PRESENT
    (pool,) = [p for p in found.evidence["pools"] if p["pool"] == "lab"]
    assert (pool["children"], pool["max_children"], pool["busy"], pool["saturated"]) == (2, 2, 2, True)


def test_limits_probe_replayed_on_captured_fd_exhaustion_names_the_worker_at_its_limit(kb) -> None:
    found = _replay("processes-fd-exhaustion", LimitsProbe(), kb)["process.fd_near_limit"]
    assert found.state is FindingState.PRESENT
    assert [(p["process"], p["open_fds"], p["soft_limit"]) for p in found.evidence["processes"]
            if p["process"] == "lab-worker"] == [("lab-worker", 256, 256)]


def test_services_probe_replayed_on_captured_fd_exhaustion_sees_the_worker_running(kb) -> None:
    found = _replay("processes-fd-exhaustion", ServicesProbe(), kb)
    assert found["process.service_down"].state is FindingState.ABSENT
