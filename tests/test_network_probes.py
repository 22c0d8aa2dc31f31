"""Network probes on real sockets, a real nginx and real kernel tables.

Listening and port conflicts use a real nginx (Debian nginx-light) and a real process that
squats its port; reachability and DNS use real connects and lookups; the ephemeral-port,
TIME_WAIT and listen-queue findings run inside a private network namespace (``unshare -n``)
whose ip_local_port_range is narrowed to ten ports, so the tables fill for real without
touching the machine's own. Only the conntrack fill is hand-typed (the table is global).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from prodx.host import LocalHost
from prodx.lab.sandbox import free_port, wait_port
from prodx.host.fixture import FixtureHost
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.network import (
    NetDnsProbe,
    NetListenersProbe,
    NetLogErrorsProbe,
    NetReachProbe,
    NetTablesProbe,
)
from prodx.probes.runner import run_probes
from prodx.profile import Dependency, HttpCheck

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (nginx as root, network namespaces)")
needs_nginx = pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None, reason="needs Debian package nginx-light")


class _OnlyThese(LocalHost):
    def __init__(self, pids: set[int]) -> None:
        super().__init__()
        self.pids = pids

    def processes(self):
        return [p for p in super().processes() if p.pid in self.pids]


def _run(kb, probes, target, host):
    findings, runs = run_probes(probes, ProbeContext(host, target, kb), deadline_s=5.0)
    assert all(r.status.value == "ok" for r in runs), runs
    return {f.id: f for f in findings}


@pytest.fixture()
def nginx_dir():
    d = Path(tempfile.mkdtemp(prefix="prodx-test-nginx-", dir="/tmp"))
    procs: list[subprocess.Popen] = []
    yield d, procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
    shutil.rmtree(d, ignore_errors=True)


def _nginx(d: Path, port: int) -> list[str]:
    (d / "tmp").mkdir(exist_ok=True)
    (d / "nginx.conf").write_text(f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 16; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    server {{
        listen 127.0.0.1:{port};
        return 200 "ok";
    }}
}}
""")
    (d / "error.log").touch()
    return ["nginx", "-p", f"{d}/", "-c", str(d / "nginx.conf"), "-e", str(d / "error.log"), "-g", "daemon off;"]


def _squatter(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", (
        "import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
        f"s.bind(('127.0.0.1',{port})); s.listen(); print('ok', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE)


@root_only
@needs_nginx
def test_listeners_probe_on_running_nginx_reports_it_listening_on_its_port(kb, nginx_dir) -> None:
    d, procs = nginx_dir
    port = free_port()
    procs.append(subprocess.Popen(_nginx(d, port)))
    wait_port(port)
    pids = {int(x) for x in subprocess.run(["pgrep", "-f", str(d)], capture_output=True, text=True).stdout.split()}
    found = _run(kb, [NetListenersProbe(), NetLogErrorsProbe()], Target(services=["nginx"], logs=[str(d / "error.log")]),
                 _OnlyThese(pids))
    assert found["net.service_not_listening"].state is FindingState.ABSENT
    assert f"127.0.0.1:{port}" in found["net.service_not_listening"].evidence["listening"]["nginx"]
    conflict = found["net.port_conflict"]
    assert conflict.state is FindingState.ABSENT and f"127.0.0.1:{port}" in conflict.evidence["checked"]
    assert found["net.bind_failed"].state is FindingState.ABSENT


@root_only
@needs_nginx
def test_listeners_probe_when_another_process_holds_nginx_port_reports_conflict_and_holder(kb, nginx_dir) -> None:
    d, procs = nginx_dir
    port = free_port()
    squatter = _squatter(port)
    procs.append(squatter)
    assert squatter.stdout.readline().strip() == b"ok"
    nginx = subprocess.run(_nginx(d, port), capture_output=True, text=True, timeout=30)
    assert nginx.returncode != 0
    assert "Address already in use" in (d / "error.log").read_text()
    found = _run(kb, [NetListenersProbe(), NetLogErrorsProbe()], Target(services=["nginx"], logs=[str(d / "error.log")]),
                 _OnlyThese({squatter.pid}))
    f = found["net.port_conflict"]
    assert f.state is FindingState.PRESENT
    assert f.evidence["conflicts"][0]["port"] == port
    assert f.evidence["conflicts"][0]["holders"][0]["pid"] == squatter.pid
    assert found["net.service_not_listening"].state is FindingState.PRESENT
    assert found["net.bind_failed"].state is FindingState.PRESENT


def test_listeners_probe_without_services_or_ports_says_unknown_with_a_reason(kb, tmp_path) -> None:
    (tmp_path / "root/proc/net").mkdir(parents=True)
    for name in ("tcp", "tcp6", "unix"):
        (tmp_path / f"root/proc/net/{name}").write_text(Path(f"/proc/net/{name}").read_text().splitlines()[0] + "\n")
    found = _run(kb, [NetListenersProbe()], Target(), FixtureHost(tmp_path))
    assert found["net.service_not_listening"].state is FindingState.UNKNOWN
    assert "profile" in found["net.service_not_listening"].reason
    assert found["net.port_conflict"].state is FindingState.UNKNOWN


def test_reach_probe_tells_refused_from_reachable_and_unresolvable(kb) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        up = listener.getsockname()[1]
        down = free_port()
        deps = [Dependency("up", tcp=f"127.0.0.1:{up}"), Dependency("down", tcp=f"127.0.0.1:{down}"),
                Dependency("nowhere", tcp="no-such-host.invalid:443")]
        found = _run(kb, [NetReachProbe()], Target(dependencies=deps), LocalHost())
    f = found["net.dependency_unreachable"]
    assert f.state is FindingState.PRESENT
    by_name = {d["name"]: d for d in f.evidence["dependencies"]}
    assert by_name["up"]["ok"] is True
    assert by_name["down"]["error"] == "ECONNREFUSED"
    assert by_name["nowhere"]["error"].startswith("EAI_")
    assert "up" not in f.summary.split(";")[0]


def test_dns_probe_reports_a_name_that_does_not_resolve(kb) -> None:
    target = Target(http=[HttpCheck("https://no-such-host.invalid/health")])
    found = _run(kb, [NetDnsProbe()], target, LocalHost())
    f = found["net.dns_failure"]
    assert f.state is FindingState.PRESENT
    assert f.evidence["names"]["no-such-host.invalid"]["error"].startswith("EAI_")


def test_dns_probe_with_working_nameserver_and_localhost_only_reports_absent(kb) -> None:
    found = _run(kb, [NetDnsProbe()], Target(dependencies=[Dependency("db", url="postgres://127.0.0.1/x")]), LocalHost())
    f = found["net.dns_failure"]
    if not f.evidence.get("nameservers"):
        pytest.skip("this host's /etc/resolv.conf names no nameserver")
    assert f.state is FindingState.ABSENT


# ---- inside a private network namespace -------------------------------------------------------

_IN_NETNS = r"""
import json, socket, subprocess, sys, time
from prodx.host import LocalHost
from prodx.lab.sandbox import free_port, wait_port
from prodx.kb.loader import load_kb
from prodx.probes.base import ProbeContext, Target
from prodx.probes.network import NetTablesProbe, NetDnsProbe
from prodx.probes.runner import run_probes
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
    f.write("40000 40009")
srv = socket.socket(); srv.bind(("127.0.0.1", 5555)); srv.listen(64)
held, errors = [], []
for i in range(12):
    c = socket.socket()
    try:
        c.connect(("127.0.0.1", 5555)); held.append(c)
    except OSError as e:
        errors.append(e.strerror); c.close()
# A listener that never accepts, with a backlog of 1: its accept queue fills.
jam = socket.socket(); jam.bind(("127.0.0.1", 6666)); jam.listen(1)
waiting = []
for i in range(3):
    c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", 6666)); waiting.append(c)
time.sleep(0.2)
# Keep knocking while the probe samples: every SYN to the full queue is an overflow. Source
# ports outside the narrowed range, so the knocks do not change the ephemeral count.
import threading
def knock():
    for i in range(300):
        c = socket.socket(); c.bind(("127.0.0.1", 20000 + i)); c.setblocking(False)
        c.connect_ex(("127.0.0.1", 6666)); waiting.append(c); time.sleep(0.005)
threading.Thread(target=knock, daemon=True).start()
kb = load_kb()
with open(sys.argv[1], "w") as conf:
    conf.write("nameserver 127.0.0.1\n")
class H(LocalHost):
    def real_path(self, path):
        return sys.argv[1] if path == "/etc/resolv.conf" else path
out = {"errors": errors, "held": len(held)}
for name, probe, host in (("tables", NetTablesProbe(), LocalHost()), ("dns", NetDnsProbe(), H())):
    findings, runs = run_probes([probe], ProbeContext(host, Target(), kb), deadline_s=5.0)
    out[name] = {f.id: {"state": f.state.value, "summary": f.summary, "reason": f.reason, "evidence": f.evidence} for f in findings}
print(json.dumps(out))
"""


@root_only
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs util-linux unshare and iproute2")
def test_tables_probe_in_a_netns_with_ten_ephemeral_ports_sees_them_exhausted_and_a_full_accept_queue(tmp_path) -> None:
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", _IN_NETNS, str(tmp_path / "resolv.conf")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert "Cannot assign requested address" in out["errors"]  # the fault is real
    tables = out["tables"]
    ports = tables["net.ephemeral_ports_exhausted"]
    assert ports["state"] == "present", ports
    assert ports["evidence"]["port_range"] == [40000, 40009]
    assert ports["evidence"]["top_destinations"][0]["destination"] == "127.0.0.1:5555"
    overflow = tables["net.listen_overflows"]
    assert overflow["state"] == "present", overflow
    assert overflow["evidence"]["during_sample"]["TcpExt.ListenOverflows"] > 0
    assert any(q["listen"] == "127.0.0.1:6666" for q in overflow["evidence"]["queued"])
    # Nothing listens on 127.0.0.1:53 in the namespace: the only nameserver refuses.
    dns = out["dns"]["net.dns_failure"]
    assert dns["state"] == "present", dns
    assert dns["evidence"]["nameservers"]["127.0.0.1"]["error"] == "ECONNREFUSED"


def test_tables_probe_on_a_conntrack_table_at_its_max_reports_it_full(kb, tmp_path) -> None:
    # Hand-typed count and max: the conntrack table is global to the machine and cannot be
    # filled in a test; the other files are copied from this host as they are.
    root = tmp_path / "root"
    for path in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/netstat", "/proc/sys/net/ipv4/ip_local_port_range"):
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(Path(path).read_text())
    nf = root / "proc/sys/net/netfilter"
    nf.mkdir(parents=True)
    (nf / "nf_conntrack_count").write_text("262100\n")
    (nf / "nf_conntrack_max").write_text("262144\n")
    found = _run(kb, [NetTablesProbe()], Target(), FixtureHost(tmp_path))
    f = found["net.conntrack_full"]
    assert f.state is FindingState.PRESENT
    assert f.evidence["count"] == 262100 and f.evidence["max"] == 262144
    assert found["net.ephemeral_ports_exhausted"].state is FindingState.ABSENT


def test_tables_probe_without_conntrack_files_or_module_list_says_unknown(kb, tmp_path) -> None:
    (tmp_path / "root/proc/net").mkdir(parents=True)
    (tmp_path / "root/proc/net/tcp").write_text(Path("/proc/net/tcp").read_text().splitlines()[0] + "\n")
    found = _run(kb, [NetTablesProbe()], Target(), FixtureHost(tmp_path))
    assert found["net.conntrack_full"].state is FindingState.UNKNOWN
    assert found["net.ephemeral_ports_exhausted"].state is FindingState.UNKNOWN
    assert found["net.listen_overflows"].state is FindingState.UNKNOWN


# ---- an app in network and mount namespaces of its own, probed from the host's -----------------

_APP_IN_NETNS = r"""
import socket, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
    f.write("40000 40009")
srv = socket.socket(); srv.bind(("127.0.0.1", 5555)); srv.listen(64)
held, errors = [], []
for i in range(12):
    c = socket.socket()
    try:
        c.connect(("127.0.0.1", 5555)); held.append(c)
    except OSError as e:
        errors.append(e.strerror); c.close()
print(len(held), errors[0] if errors else "", flush=True)
time.sleep(60)
"""


@root_only
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("nsenter") is None, reason="needs util-linux")
def test_tables_and_listeners_probes_look_into_the_apps_own_network_namespace(kb) -> None:
    """The app runs in a network namespace of its own (unshare -n) with ten ephemeral ports,
    all held toward its backend; prodx runs in the host's namespace, where nothing of it shows
    in /proc/net."""
    app = subprocess.Popen(["unshare", "-n", sys.executable, "-c", _APP_IN_NETNS], stdout=subprocess.PIPE, text=True)
    try:
        held, error = app.stdout.readline().split(" ", 1)
        assert held == "10" and error.strip() == "Cannot assign requested address"  # the fault is real
        name = Path(f"/proc/{app.pid}/comm").read_text().strip()
        found = _run(kb, [NetTablesProbe(), NetListenersProbe()], Target(services=[name]), _OnlyThese({app.pid}))
        ports = found["net.ephemeral_ports_exhausted"]
        assert ports.state is FindingState.PRESENT, ports.summary
        assert ports.evidence["port_range"] == [40000, 40009]
        assert ports.evidence["namespace"] == f"the network namespace of {name} (pid {app.pid})"
        assert ports.evidence["top_destinations"][0] == {"local": "127.0.0.1", "destination": "127.0.0.1:5555",
                                                         "ports_in_use": 10}
        listening = found["net.service_not_listening"]
        assert listening.state is FindingState.ABSENT, listening.summary  # it listens, in its own namespace
    finally:
        app.kill()
        app.wait(10)


@root_only
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_dns_probe_asks_the_nameservers_of_the_resolv_conf_the_app_sees(kb, tmp_path) -> None:
    """The app sees its own /etc/resolv.conf (a bind mount in its mount namespace, as
    ip netns exec or a container gives it) naming 127.0.0.1, where nothing answers."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions timeout:1\n")
    app = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount --bind {conf} /etc/resolv.conf && echo ready && exec sleep 60"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "ready"
        found = _run(kb, [NetDnsProbe()], Target(services=["sleep"]), _OnlyThese({app.pid}))
        f = found["net.dns_failure"]
        assert f.state is FindingState.PRESENT, f.summary
        assert f"sleep (pid {app.pid})" in f.summary
        (resolver,) = f.evidence["app_resolvers"]
        assert resolver["nameservers"] == ["127.0.0.1"] and resolver["answers"]["127.0.0.1"]["error"] == "ECONNREFUSED"
    finally:
        app.kill()
        app.wait(10)


def test_without_proc_net_tcp_only_what_needs_the_socket_table_is_unknown(kb, tmp_path) -> None:
    # A host (or another tool's capture) without /proc/net/tcp: the conntrack and listen-queue
    # counters do not need it and are still read; the port findings say why they are unknown.
    root = tmp_path / "root"
    nf = root / "proc/sys/net/netfilter"
    nf.mkdir(parents=True)
    (nf / "nf_conntrack_count").write_text("10\n")
    (nf / "nf_conntrack_max").write_text("262144\n")
    (root / "proc/net").mkdir(parents=True)
    (root / "proc/net/netstat").write_text("TcpExt: ListenOverflows ListenDrops\nTcpExt: 3 3\n")
    found = _run(kb, [NetTablesProbe(), NetListenersProbe()], Target(), FixtureHost(tmp_path))
    assert found["net.conntrack_full"].state is FindingState.ABSENT
    assert found["net.listen_overflows"].state is FindingState.ABSENT
    for fid in ("net.ephemeral_ports_exhausted", "net.time_wait_high", "net.service_not_listening", "net.port_conflict"):
        assert found[fid].state is FindingState.UNKNOWN and "/proc/net/tcp" in found[fid].reason, fid


def test_a_netstat_with_a_missing_header_name_leaves_the_overflows_unknown(kb, tmp_path) -> None:
    # One name short: every value would be read one column off (ListenDrops as ListenOverflows).
    root = tmp_path / "root"
    (root / "proc/net").mkdir(parents=True)
    (root / "proc/net/netstat").write_text("TcpExt: ListenOverflows\nTcpExt: 0 12\n")
    found = _run(kb, [NetTablesProbe()], Target(), FixtureHost(tmp_path))
    assert found["net.listen_overflows"].state is FindingState.UNKNOWN
