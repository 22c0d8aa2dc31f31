"""Process faults: a crashed PHP-FPM behind nginx, a worker at its open-files limit, and a
PHP-FPM pool whose every worker is stuck in a slow request."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox
from prodx.lab.scenarios.common import child_python
from prodx.lab.webstack import WebStack, webstack_unmet

USER_COMMANDS = (("useradd", "passwd"), ("userdel", "passwd"))
WEB_NEEDS = Needs(commands=USER_COMMANDS, kernel=(), check=webstack_unmet)
#: The name the fd-hogging worker gives itself (/proc/self/comm), as a service would have.
WORKER_NAME = "lab-worker"
WORKER_FD_LIMIT = 256


def get(port: int, path: str, timeout_s: float = 30.0) -> tuple[int, float]:
    """(HTTP status, seconds taken) of a GET through nginx, as a browser would see it."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - start
    finally:
        conn.close()


def fpm_master_pid(sb: Sandbox) -> int:
    """The pid of the sandbox's PHP-FPM master (its title names the sandbox's config)."""
    wanted = f"php-fpm: master process ({sb.path('php-fpm.conf')})"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode("utf-8", "replace")
        except OSError:
            continue
        if title.strip() == wanted:
            return int(pid)
    raise LabError(f"no php-fpm master runs with {sb.path('php-fpm.conf')}")


def children_of(ppid: int) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        if int(rest[1]) == ppid and rest[0] != "Z":
            out.append(int(pid))
    return out


class _WebScenario(Scenario):
    """nginx + PHP-FPM (pm = static, pm.max_children = 2) from webstack.py, as a throwaway user."""

    needs = WEB_NEEDS

    def setup(self, sb: Sandbox) -> None:
        self.user = sb.add_user()
        app = sb.mkdirs("app", owner=self.user)
        sb.mkdirs(app / "sessions", mode=0o700, owner=self.user)
        self.web = WebStack(sb, self.user, app / "public", app / "sessions")
        self.web.start()
        status, _ = get(self.web.port, "/login.php")
        if status != 200:
            raise LabError(f"the healthy web stack answers {status}; see {self.web.logs}")
        self.injected.append(f"nginx on http://127.0.0.1:{self.web.port}/ and PHP-FPM as {self.user.name}; "
                             "/login.php answered 200 before the fault")

    def profile(self, sb: Sandbox) -> str:
        assert self.user is not None
        return profile_toml(name=f"lab-{self.name}", user=self.user.name, writable=[str(sb.path("app/sessions"))],
                            logs=self.web.logs, services=self.web.service_names)


class CrashedService(_WebScenario):
    name = "crashed-service"
    condition = "service-down"
    description = ("nginx + PHP-FPM in the sandbox; the PHP-FPM master and its workers are killed with "
                   "SIGKILL (as by a crash or an OOM kill) and nothing restarts them")
    symptoms = (
        "every PHP page returns 502 Bad Gateway; static files would still load",
        "nginx's error log says connect() to the PHP-FPM socket failed (111: Connection refused)",
    )

    def inject(self, sb: Sandbox) -> None:
        master = fpm_master_pid(sb)
        # The master leads its own process group (the sandbox started it in a new session).
        os.killpg(master, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while children_of(master) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.killed = master
        status, _ = get(self.web.port, "/login.php")
        self.injected.append(f"killed php-fpm master {master} and its workers with SIGKILL; /login.php now answers {status}")
        if status != 502:
            raise LabError(f"after the kill /login.php answers {status}, not 502")


class SlowPoolExhausted(_WebScenario):
    name = "worker-pool-exhausted"
    condition = "worker-pool-exhausted"
    description = ("nginx + PHP-FPM with pm.max_children = 2 (static pool) and fastcgi_read_timeout 3s; "
                   "four requests to a script that sleeps 300 s hold both workers, so every other page "
                   "waits in the pool's listen queue until nginx gives up with 504")
    symptoms = (
        "the site hangs, then pages return 504 Gateway Time-out",
        "CPU and memory are idle; PHP-FPM's own log says nothing (a static pool never warns)",
    )
    slow_requests = 4

    def setup(self, sb: Sandbox) -> None:
        super().setup(sb)
        sb.write_text(self.web.docroot / "slow.php", "<?php sleep(300); echo 'done';\n", owner=self.user)
        # webstack.py has no knob for nginx's upstream timeout (60 s by default): add one to its
        # config and reload, so users see the 504 in seconds.
        conf = sb.path("nginx/nginx.conf")
        text = conf.read_text()
        if "fastcgi_pass" not in text:
            raise LabError(f"{conf} has no fastcgi_pass to time out")
        sb.write_text(conf, text.replace("fastcgi_pass", "fastcgi_read_timeout 3s;\n            fastcgi_pass", 1))
        prefix = sb.path("nginx")
        sb.run([self.web.nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(self.web.nginx_error_log),
                "-s", "reload"])
        time.sleep(0.5)

    def inject(self, sb: Sandbox) -> None:
        self.seen: list[int] = []
        self.clients = [threading.Thread(target=lambda: self.seen.append(get(self.web.port, "/slow.php")[0]),
                                         daemon=True) for _ in range(self.slow_requests)]
        for t in self.clients:
            t.start()
        master = fpm_master_pid(sb)
        deadline = time.monotonic() + 10
        while not self._all_busy(master):
            if time.monotonic() > deadline:
                raise LabError("the PHP-FPM workers never took the slow requests")
            time.sleep(0.05)
        status, took = get(self.web.port, "/login.php")
        self.injected.append(f"{self.slow_requests} requests to /slow.php (sleep 300 s) hold both workers of "
                             f"php-fpm master {master}; /login.php answered {status} after {took:.1f} s")
        if status != 504:
            raise LabError(f"with the pool full /login.php answers {status}, not 504")

    @staticmethod
    def _all_busy(master: int) -> bool:
        kids = children_of(master)
        if len(kids) < 2:
            return False
        for pid in kids:
            try:
                wchan = Path(f"/proc/{pid}/wchan").read_text()
            except OSError:
                return False
            if "wait_for_more_packets" in wchan or "accept" in wchan:
                return False
        return True


_WORKER = """
import datetime, os, resource, sys, time
limit = int(sys.argv[2])
with open("/proc/self/comm", "w") as fh:
    fh.write(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
log = open(sys.argv[1], "a", buffering=1)
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print("full", len(held), flush=True)
while True:
    try:
        os.close(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        log.write(f"[{now}] app.CRITICAL: accept() failed: [Errno {exc.errno}] {exc.strerror} {{\\"worker\\":{os.getpid()}}} []\\n")
    time.sleep(0.5)
"""


class FdExhaustion(Scenario):
    name = "fd-exhaustion"
    condition = "fd-exhaustion"
    description = (f"a worker ({WORKER_NAME}, as a throwaway user) runs with RLIMIT_NOFILE {WORKER_FD_LIMIT} and "
                   "leaks descriptors until every one is used; each new accept/open fails and it logs "
                   "'Too many open files'")
    symptoms = (
        "the app refuses new connections and logs 'Too many open files'",
        "restarting the worker helps for a while",
    )
    needs = Needs(commands=USER_COMMANDS, kernel=())

    def setup(self, sb: Sandbox) -> None:
        self.user = sb.add_user()
        logs = sb.mkdirs("app/var/log", owner=self.user)
        sb.mkdirs("app", owner=self.user)
        now = datetime.now(timezone.utc).isoformat()
        self.log = sb.write_text(logs / "worker.log",
                                 f'[{now}] app.INFO: worker started {{"limit":{WORKER_FD_LIMIT}}} []\n', owner=self.user)

    def inject(self, sb: Sandbox) -> None:
        assert self.user is not None
        self.worker = sb.spawn([child_python(), "-I", "-c", _WORKER, str(self.log), str(WORKER_FD_LIMIT), WORKER_NAME],
                               user=self.user, log="worker.out")
        out = sb.path("worker.out")
        deadline = time.monotonic() + 10
        while "full" not in (out.read_text() if out.exists() else ""):
            if time.monotonic() > deadline or self.worker.poll() is not None:
                raise LabError(f"the worker did not fill its fd table; see {out}")
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while "Too many open files" not in self.log.read_text():
            if time.monotonic() > deadline:
                raise LabError(f"the worker logged no 'Too many open files' in {self.log}")
            time.sleep(0.05)
        fds = len(os.listdir(f"/proc/{self.worker.pid}/fd"))
        self.injected.append(f"{WORKER_NAME} (pid {self.worker.pid}, {self.user.name}) holds {fds} of "
                             f"{WORKER_FD_LIMIT} fds and logs 'Too many open files' to {self.log}")

    def profile(self, sb: Sandbox) -> str:
        assert self.user is not None
        return profile_toml(name=f"lab-{self.name}", user=self.user.name, writable=[str(sb.path("app/var/log"))],
                            logs=[str(self.log)], services=[WORKER_NAME])
