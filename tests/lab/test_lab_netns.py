"""Network faults in the app's own network namespace (ip netns, veth), reproduced for real:
the fault is measured inside the namespace (errno, gai error, sockets, the port range) and
prodx diagnoses it first, with and without a profile.

Root only (network namespaces, throwaway users, servers); needs iproute2, dnsmasq-base,
nginx-light, php-fpm, redis-server.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from prodx.lab.scenarios.common import child_python
from prodx.lab.scenarios.netns import API, PORT_RANGE, _get, dns_answers

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces, servers)"),
]


def _inside(netns, code: str, *args: str) -> str:
    """Run Python ``code`` inside the namespace as ip netns exec does for the app; its stdout."""
    argv = netns.exec_argv([child_python(), "-I", "-c", code, *args])
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()


_RESOLVE = """
import socket, sys
try:
    socket.getaddrinfo(sys.argv[1], 80)
    print("resolved")
except socket.gaierror as exc:
    print(exc.errno)
"""

_CONNECT = """
import errno, socket, sys
s = socket.socket()
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


def test_dns_failure_scenario_leaves_the_apps_resolver_silent_and_is_diagnosed_first(lab) -> None:
    with lab.stage("dns-failure") as run:
        sc = run.scenario
        resolv = open(f"/etc/netns/{sc.netns.name}/resolv.conf", encoding="utf-8").read()
        assert f"nameserver {sc.netns.host_ip}" in resolv
        assert dns_answers(sc.netns.host_ip, API) is None  # nothing answers on port 53
        import socket

        assert _inside(sc.netns, _RESOLVE, API) == str(socket.EAI_AGAIN)  # "Temporary failure in name resolution"
        assert _get(sc.web.port, sc.page)[0] == 502
        assert f"getaddrinfo for {API} failed: Temporary failure in name resolution" in sc.web.php_errors()
        lab.assert_diagnosed(run)


def test_ephemeral_ports_scenario_runs_the_namespace_out_of_local_ports_and_is_diagnosed_first(lab) -> None:
    with lab.stage("ephemeral-ports") as run:
        sc = run.scenario
        port_range = _inside(sc.netns, "print(open('/proc/sys/net/ipv4/ip_local_port_range').read())")
        assert port_range.split() == [str(p) for p in PORT_RANGE]
        ss = subprocess.run(sc.netns.exec_argv(["ss", "-Htan", "state", "time-wait", "dst", sc.netns.host_ip]),
                            capture_output=True, text=True, timeout=30, check=True).stdout
        assert len(ss.splitlines()) >= 0.9 * (PORT_RANGE[1] - PORT_RANGE[0] + 1)
        assert _inside(sc.netns, _CONNECT, sc.netns.host_ip, str(sc.redis.port)) == "EADDRNOTAVAIL"
        assert sc.redis.command("PING") == "+PONG"  # Redis itself is fine
        assert "Cannot assign requested address" in sc.web.php_errors()
        lab.assert_diagnosed(run)
