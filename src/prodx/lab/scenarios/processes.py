"""Process faults: a crashed PHP-FPM behind nginx, a Node app at its open-files limit, and a
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
from prodx.lab.sandbox import LabError, Sandbox, port_answers
from prodx.lab.scenarios.common import child_python
from prodx.lab.webstack import WebStack, webstack_unmet

USER_COMMANDS = (("useradd", "passwd"), ("userdel", "passwd"))
WEB_NEEDS = Needs(commands=USER_COMMANDS, kernel=(), check=webstack_unmet)
#: The open-files limit the leaking app runs with.
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
        # Until the socket refuses: a request the dying pool still accepted would be reset
        # (104) instead of refused (111), which is not the crash users see afterwards.
        sock = sb.path("php-fpm.sock")
        while port_answers(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
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


#: A small Node app that opens its page template on every request and never closes it: a
#: descriptor leak, until open() fails with EMFILE, which it logs like any Node app would.
_NODE_APP = r"""'use strict';
const fs = require('fs');
const http = require('http');
const [logPath, pagePath, portFile] = process.argv.slice(2);
const log = fs.createWriteStream(logPath, { flags: 'a' });
const leaked = [];
const server = http.createServer((req, res) => {
  try {
    const fd = fs.openSync(pagePath, 'r');
    leaked.push(fd);  // the bug: the handle is kept, never closed
    res.end(fs.readFileSync(pagePath));
  } catch (err) {
    log.write(`[${new Date().toISOString()}] app.ERROR: ${err.message} {"url":"${req.url}"} []\n`);
    res.statusCode = 500;
    res.end('Internal Server Error\n');
  }
});
server.listen(0, '127.0.0.1', () => fs.writeFileSync(portFile, String(server.address().port)));
"""

#: Starts argv[2:] with RLIMIT_NOFILE lowered to argv[1] (the app's own limit, as a unit's
#: LimitNOFILE or `ulimit -n` sets it).
_WITH_LIMIT = ("import os, resource, sys\n"
               "n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))\n"
               "os.execvp(sys.argv[2], sys.argv[2:])\n")


def _node() -> str | None:
    import shutil

    return shutil.which("node") or shutil.which("nodejs")


def _node_unmet() -> str | None:
    return None if _node() else "needs Debian package nodejs"


class FdExhaustion(Scenario):
    name = "fd-exhaustion"
    condition = "fd-exhaustion"
    description = (f"a Node app (as a throwaway user) runs with RLIMIT_NOFILE {WORKER_FD_LIMIT} and leaks the "
                   "descriptor of its page template on every request until open() fails with EMFILE; every "
                   "request after that answers 500 and the app logs 'EMFILE: too many open files'")
    symptoms = (
        "the app refuses new connections and logs 'Too many open files'",
        "restarting the worker helps for a while",
    )
    needs = Needs(commands=(*USER_COMMANDS, ("node", "nodejs")), kernel=(), check=_node_unmet)

    def setup(self, sb: Sandbox) -> None:
        self.user = sb.add_user()
        app = sb.mkdirs("app", owner=self.user)
        logs = sb.mkdirs("app/var/log", owner=self.user)
        sb.mkdirs(app / "views", owner=self.user)
        self.page = sb.write_text(app / "views/home.html", "<h1>Shop</h1>\n", owner=self.user)
        self.server_js = sb.write_text(app / "server.js", _NODE_APP, owner=self.user)
        now = datetime.now(timezone.utc).isoformat()
        self.log = sb.write_text(logs / "app.log", f'[{now}] app.INFO: server starting {{"limit":{WORKER_FD_LIMIT}}} []\n',
                                 owner=self.user)
        port_file = sb.write_text(app / "port", "", owner=self.user)
        self.worker = sb.spawn([child_python(), "-I", "-c", _WITH_LIMIT, str(WORKER_FD_LIMIT), _node() or "node",
                                str(self.server_js), str(self.log), str(self.page), str(port_file)],
                               user=self.user, log="node.out")
        deadline = time.monotonic() + 15
        while not port_file.read_text().strip():
            if time.monotonic() > deadline or self.worker.poll() is not None:
                raise LabError(f"the Node app did not start; see {sb.path('node.out')}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        status, _ = get(self.port, "/")
        if status != 200:
            raise LabError(f"the healthy Node app answers {status}")
        self.injected.append(f"a Node app (pid {self.worker.pid}, {self.user.name}) serves http://127.0.0.1:{self.port}/")

    def inject(self, sb: Sandbox) -> None:
        codes: list[int] = []
        for _ in range(WORKER_FD_LIMIT + 20):  # each request leaks one descriptor
            try:
                codes.append(get(self.port, "/", timeout_s=5)[0])
            except (OSError, http.client.HTTPException):
                codes.append(0)  # accept() itself failed: the connection was dropped
            if codes[-3:] == [500, 500, 500]:
                break
        if "too many open files" not in self.log.read_text().lower():
            raise LabError(f"the app logged no EMFILE in {self.log} (answers: {codes[-5:]})")
        fds = len(os.listdir(f"/proc/{self.worker.pid}/fd"))
        self.injected.append(f"after {len(codes)} requests the app (pid {self.worker.pid}) holds {fds} of "
                             f"{WORKER_FD_LIMIT} descriptors; requests now answer {codes[-3:]} and it logs "
                             f"'EMFILE: too many open files' to {self.log}")

    def profile(self, sb: Sandbox) -> str:
        assert self.user is not None
        return profile_toml(name=f"lab-{self.name}", user=self.user.name, writable=[str(sb.path("app/var/log"))],
                            logs=[str(self.log)], services=["node"])
