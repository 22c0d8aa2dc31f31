"""Workload faults: a backup that fills the disk, cron runs that pile up, a surge of requests.

- backup-job: a real ``tar czf`` of a 64 MiB data folder writes its archive onto the app's
  small ext4 until ENOSPC; tar dies, the truncated archive stays.
- cron-overload: a stand-in scheduler (a process named ``cron``: no cron daemon can run
  privately, Debian's reads only the system crontabs) starts a slow "rebuild" (gzip of a 4 MiB
  file every second for 90 s, then a long wait) every 3 s with no lock, as a per-minute cron
  entry does with a job that takes minutes; the runs pile up.
- traffic-spike: a private nginx + PHP-FPM (prodx.lab.webstack) with an hour of quiet
  access-log history (written by the scenario, one request every 20 s), then a real, bounded
  load from 127.0.0.1: 300 keep-alive clients, one request per second each (one in four to a
  PHP page that takes 200 ms), for at most ``LOAD_S`` seconds. nginx, tuned to 1024
  connections, takes them all; the two PHP-FPM workers cannot keep up and requests queue.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

from prodx.lab.framework import LOOP_COMMANDS, Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox, wait_until
from prodx.lab.scenarios.common import AppOnLoop, child_python, mib

#: Runs the stand-in scheduler starts, and how often (a cron entry's minute, shortened).
CRON_RUNS = 5
CRON_INTERVAL_S = 3
#: The load: clients, seconds at most, requests at most.
LOAD_CLIENTS = 300
LOAD_S = 120
LOAD_MAX_REQUESTS = 40000
NGINX_CONNECTIONS = 1024

_SCHEDULER = r"""
import subprocess, sys, time
runs, every, job = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
for _ in range(runs):
    subprocess.Popen(["/bin/sh", "-c", job], stdin=subprocess.DEVNULL)
    time.sleep(every)
while True:
    time.sleep(60)
"""

_REBUILD = """#!/bin/sh
# Rebuilds the package index: walks the archive, then (as it has grown) takes minutes.
exec > {log} 2>&1
echo "rebuild started $(date)"
find {data} -type f | wc -l
end=$(( $(date +%s) + 90 ))
while [ "$(date +%s)" -lt "$end" ]; do gzip -c {blob} > /dev/null; sleep 1; done
sleep 600
echo "rebuild done"
"""

_LOAD = r"""
import resource, selectors, socket, sys, time
port, clients, max_s, max_requests = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
# A load generator raises its own descriptor limit: a CI shell's soft limit may be below
# one socket per client.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
need = clients + 64
if soft != resource.RLIM_INFINITY and soft < need:
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors {clients} clients need")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
pages = [b"/index.html", b"/index.html", b"/index.html", b"/catalog.php"]
reqs = [b"GET " + p + b" HTTP/1.1\r\nHost: shop.lab\r\nUser-Agent: prodx-lab-load\r\n\r\n" for p in pages]
sel = selectors.DefaultSelector()
socks, due = [], {}
for _ in range(clients):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks.append(s)
    sel.register(s, selectors.EVENT_READ, None)
    due[s] = time.monotonic() + 0.2
end, sent = time.monotonic() + max_s, 0
while time.monotonic() < end and sent < max_requests:
    now = time.monotonic()
    for s in socks:
        if due[s] is not None and now >= due[s]:
            try:
                s.send(reqs[sent % len(reqs)])
                sent += 1
            except OSError:
                pass
            due[s] = None
    for key, _ in sel.select(0.05):
        s = key.fileobj
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s)
            continue
        if due[s] is None:
            due[s] = time.monotonic() + 1.0
"""


def _combined(when: float, path: str) -> str:
    stamp = datetime.fromtimestamp(when, timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return f'198.51.100.{int(when) % 200 + 1} - - [{stamp}] "GET {path} HTTP/1.1" 200 612 "-" "Mozilla/5.0"'


def established_to(port: int) -> int:
    """ESTABLISHED TCP sockets on the server side of ``port`` (IPv4)."""
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as fh:
        for line in fh.readlines()[1:]:
            local, _remote, state = line.split()[1:4]
            if state == "01" and int(local.split(":")[1], 16) == port:
                count += 1
    return count


def recent_requests(log: Path, within_s: float = 300) -> int:
    """Lines of ``log`` stamped within the last ``within_s`` seconds."""
    from prodx.accesslog import parse_line

    now = time.time()
    return sum(1 for line in log.read_bytes().splitlines() if (p := parse_line(line)) and now - p[0] <= within_s)


class BackupJob(AppOnLoop):
    name = "backup-job"
    condition = "backup-job"
    accept = ("disk-full",)
    description = ("a real `tar czf` of a 64 MiB data folder writes mnt/backups/site-DATE.tar.gz onto the app's "
                   "48 MiB ext4 until ENOSPC; tar dies and leaves the truncated archive")
    symptoms = (
        "from the backup window on, pages return 500 and logins fail",
        "the database and cache crashed; the backup log says 'No space left on device'",
    )
    needs = Needs(commands=(*LOOP_COMMANDS, ("tar", "tar"), ("gzip", "gzip")))

    def inject(self, sb: Sandbox) -> None:
        data = sb.mkdirs("data")
        for i in range(8):
            (data / f"uploads-{i}.bin").write_bytes(os.urandom(8 << 20))
        backups = sb.mkdirs(self.mnt / "backups")
        archive = backups / f"site-{datetime.now():%Y-%m-%d}.tar.gz"
        proc = sb.run(["tar", "czf", str(archive), "-C", str(data), "."], check=False, timeout_s=120)
        if proc.returncode == 0 or "No space left on device" not in proc.stderr:
            raise LabError(f"tar did not hit ENOSPC: exit {proc.returncode}, {proc.stderr.strip()[-200:]}")
        self.archive = archive
        self.injected.append(f"tar czf {archive} (64 MiB of uploads) stopped with ENOSPC after writing "
                             f"{mib(archive.stat().st_size)}: {proc.stderr.strip().splitlines()[0][:120]}")


class CronOverload(AppOnLoop):
    name = "cron-overload"
    condition = "cron-overload"
    description = (f"STAND-IN scheduler named `cron` starts a slow rebuild (gzip of 4 MiB each second for 90 s, "
                   f"then a wait) every "
                   f"{CRON_INTERVAL_S} s with no lock, {CRON_RUNS} times: the runs overlap")
    symptoms = (
        "the load average keeps rising; the site slows down",
        "several rebuild processes run in parallel; the rebuild log is cut short",
    )
    needs = Needs(commands=(*LOOP_COMMANDS, ("find", "findutils"), ("sleep", "coreutils")))

    def inject(self, sb: Sandbox) -> None:
        blob = sb.path("packages.bin")
        blob.write_bytes(os.urandom(4 << 20))
        job = sb.write_text("rebuild.sh", _REBUILD.format(log=sb.path("rebuild.log"), data=self.app, blob=blob),
                            mode=0o755)
        scheduler = sb.root / "cron"
        os.symlink(child_python(), scheduler)  # the kernel names a process after the file it executed
        self.scheduler = sb.spawn([str(scheduler), "-I", "-c", _SCHEDULER, str(CRON_RUNS), str(CRON_INTERVAL_S),
                                   f"{job} --all"], log="cron.out")
        wait_until(lambda: len(_children(self.scheduler.pid)) >= CRON_RUNS, 10 + CRON_RUNS * CRON_INTERVAL_S,
                   "the stand-in cron did not start its runs")
        self.injected.append(f"{len(_children(self.scheduler.pid))} runs of `{job} --all` alive at once under a "
                             f"process named cron (pid {self.scheduler.pid})")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _nginx_workers(master: int) -> set[int]:
    out = set()
    for pid in _children(master):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx: worker"):
                out.add(pid)
        except OSError:
            continue
    return out


def _traffic_unmet() -> str | None:
    """Why the surge cannot run here: no web stack, or too few descriptors for its clients."""
    from prodx.lab.webstack import webstack_unmet

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < LOAD_CLIENTS + 64:
        return f"needs RLIMIT_NOFILE >= {LOAD_CLIENTS + 64} for {LOAD_CLIENTS} clients (hard limit {hard})"
    return webstack_unmet()


class TrafficSpike(Scenario):
    name = "traffic-spike"
    condition = "traffic-spike"
    accept = ()
    description = (f"private nginx + PHP-FPM with an hour of quiet access log (1 request / 20 s), then "
                   f"{LOAD_CLIENTS} keep-alive clients from 127.0.0.1, 1 request/s each (1 in 4 to a 200 ms PHP page), "
                   f"for at most {LOAD_S} s")
    symptoms = (
        "a post went viral: the site crawls, some visitors get no answer",
        "the access log scrolls many times faster than an hour ago",
    )
    needs = Needs(commands=(("useradd", "passwd"), ("userdel", "passwd")), kernel=(), check=_traffic_unmet)

    def setup(self, sb: Sandbox) -> None:
        from prodx.lab.webstack import WebStack

        self.user = sb.add_user()
        docroot = sb.path("www")
        sessions = sb.mkdirs("sessions", owner=self.user)
        self.access_log = sb.path("nginx-access.log")
        now = time.time()
        history = [_combined(now - s, "/") for s in range(65 * 60, 5 * 60, -20)]
        sb.write_text(self.access_log, "\n".join(history) + "\n", owner=self.user)
        self.web = WebStack(sb, self.user, docroot, sessions)
        self.web.start()
        sb.write_text(docroot / "index.html", "<h1>Shop</h1>" + "<p>products</p>" * 30 + "\n", owner=self.user)
        # The dynamic page costs 200 ms of a PHP worker (a database query): two workers serve
        # ten a second, and a surge queues behind them.
        sb.write_text(docroot / "catalog.php", "<?php usleep(200000); echo 'catalog';\n", owner=self.user)
        # A site tuned for traffic: nginx takes every connection the surge brings (the web
        # stack's default of 64 would close the rest at once).
        conf = sb.path("nginx", "nginx.conf")
        # worker_rlimit_nofile: the master (root) raises its worker's descriptor limit, which
        # an inherited soft limit (1024 or less in some shells) would otherwise cap.
        conf.write_text(conf.read_text().replace(
            "worker_connections 64;", f"worker_connections {NGINX_CONNECTIONS};").replace(
            "worker_processes 1;", f"worker_processes 1;\nworker_rlimit_nofile {2 * NGINX_CONNECTIONS + 64};"))
        master = int(sb.path("nginx.pid").read_text().split()[0])
        old = _nginx_workers(master)
        os.kill(master, signal.SIGHUP)
        wait_until(lambda: (w := _nginx_workers(master)) and not w & old, 15, "nginx did not reload its config")

    def inject(self, sb: Sandbox) -> None:
        self.load = sb.spawn([child_python(), "-I", "-c", _LOAD, str(self.web.port), str(LOAD_CLIENTS), str(LOAD_S),
                              str(LOAD_MAX_REQUESTS)], log="load.out")
        def arrived() -> bool:
            return recent_requests(self.access_log) >= 600 and established_to(self.web.port) >= 256

        try:  # a generator that died (poll() set) will not bring the load: stop waiting
            wait_until(lambda: self.load.poll() is not None or arrived(), 60, "")
        except LabError:
            pass
        if not arrived():
            raise LabError(f"the load did not reach the server: {recent_requests(self.access_log)} requests in the "
                           f"last 5 min (600 wanted), {established_to(self.web.port)} connections established (256 "
                           f"wanted); load generator: {_tail(sb.path('load.out'))}; nginx error log: "
                           f"{_tail(self.web.nginx_error_log)}")
        self.injected.append(f"{established_to(self.web.port)} connections established to nginx on 127.0.0.1:"
                             f"{self.web.port}; {recent_requests(self.access_log)} requests in the last 5 min "
                             f"against {len(range(65 * 60, 5 * 60, -20))} in the hour before")

    def profile(self, sb: Sandbox) -> str:
        assert self.user is not None
        return profile_toml(name=f"lab-{self.name}", user=self.user.name, logs=[str(self.access_log), *self.web.logs],
                            services=self.web.service_names)


def _tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of ``path``, or what stopped them being read."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError as exc:
        return f"({exc.strerror})"
    return " | ".join(text) or "(empty)"


