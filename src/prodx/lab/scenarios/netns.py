"""Network faults of the app's own network namespace: its resolver stops answering, and its
local ports run out toward one backend. All real, on nginx + PHP-FPM (prodx.lab.webstack).

The sandbox makes a network namespace joined to the host by a veth pair (iproute2, as a
container runtime does); PHP-FPM runs inside it through ``ip netns exec`` (so its
/etc/resolv.conf is the namespace's own, from /etc/netns/NAME/), nginx outside reaches it
through its Unix socket, and the app's backends listen on the host's end of the veth.

- ``dns-failure``: the namespace's resolver is a private dnsmasq on the host's end of the
  veth, answering for ``api.payments.internal``; it dies (killed, as a crash or an OOM kill
  would), nothing answers on port 53 any more, and every checkout's lookup of the payment
  API fails with "Temporary failure in name resolution".
- ``ephemeral-ports``: the namespace's ``net.ipv4.ip_local_port_range`` is narrow (64
  ports); the cart page opens a new connection to Redis per request and closes it first, so
  each leaves a port in TIME_WAIT for 60 s; steady traffic (a few requests a second) takes
  every port and connects fail with EADDRNOTAVAIL "Cannot assign requested address".
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import struct

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, NetNs, Sandbox, free_port, port_answers, wait_until
from prodx.lab.scenarios.common import child_python
from prodx.lab.services import RedisInstance, _run_as, find_redis_server, redis_unmet
from prodx.lab.webstack import WebStack, webstack_unmet

_NETNS_COMMANDS = (("ip", "iproute2"), ("setpriv", "util-linux"), ("sysctl", "procps"), ("useradd", "passwd"),
                   ("userdel", "passwd"))
API = "api.payments.internal"

_CHECKOUT_PHP = """<?php
$api = 'http://%(api)s:%(port)d/health';
$reply = file_get_contents($api, false, stream_context_create(['http' => ['timeout' => 2]]));
if ($reply === false) {
    error_log("checkout: payment API $api unreachable");
    http_response_code(502);
    exit("payment service unavailable\\n");
}
echo "checkout ready: $reply";
"""

_CART_PHP = """<?php
// One connection to Redis per request, closed by us: no persistent connection, no pool.
$redis = fsockopen('%(host)s', %(port)d, $errno, $errstr, 1.0);
if ($redis === false) {
    error_log("cart: cannot connect to Redis %(host)s:%(port)d: $errstr ($errno)");
    http_response_code(503);
    exit("cart unavailable\\n");
}
fwrite($redis, "INCR cart:views\\r\\n");
$views = trim(fgets($redis));
fclose($redis);
echo "cart ok, views $views\\n";
"""

#: Steady user traffic: one GET every ``interval`` seconds until killed (stdlib only).
_TRAFFIC = """
import http.client, sys, time
port, path, interval = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", path)
        c.getresponse().read()
        c.close()
    except OSError:
        pass
    time.sleep(interval)
"""


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def dns_answers(server: str, name: str) -> int | None:
    """The rcode a UDP query for ``name`` (type A) gets from ``server``, None without answer."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        try:
            s.connect((server, 53))
            s.send(packet)
            data = s.recv(512)
        except OSError:
            return None
    return data[3] & 0x0F if len(data) >= 4 else None


class _NamespacedApp(Scenario):
    """nginx + PHP-FPM, PHP-FPM inside a network namespace of its own."""

    needs = Needs(commands=_NETNS_COMMANDS, kernel=(("/proc/self/ns/net", "network namespaces"),), check=webstack_unmet)

    def start_app(self, sb: Sandbox, netns: NetNs, page: str, text: str) -> None:
        self.netns = netns
        self.user = sb.add_user()
        self.app = sb.mkdirs("srv/shop", owner=self.user)
        for d in ("public", "var/sessions"):
            sb.mkdirs(self.app / d, owner=self.user)
        sb.write_text(self.app / "public" / page, text, owner=self.user)
        self.web = WebStack(sb, self.user, self.app / "public", self.app / "var/sessions", netns=netns)
        self.web.start()
        self.page = f"/{page}"

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user=self.user.name, logs=self.web.logs,
                            services=self.web.service_names) + (
            f"\n[[http]]\nurl = {json.dumps(f'http://127.0.0.1:{self.web.port}{self.page}')}\n")


class DnsFailure(_NamespacedApp):
    name = "dns-failure"
    condition = "dns-failure"
    description = ("nginx + PHP-FPM, PHP-FPM in its own network namespace whose resolver is a private dnsmasq on "
                   f"the host's end of the veth; dnsmasq dies and the checkout's lookups of {API} fail with "
                   "'Temporary failure in name resolution'")
    symptoms = (
        "checkout answers 502 'payment service unavailable'",
        "the PHP log says 'php_network_getaddresses: getaddrinfo for api.payments.internal failed: Temporary failure "
        "in name resolution'",
    )
    needs = Needs(commands=(*_NETNS_COMMANDS, ("dnsmasq", "dnsmasq-base")),
                  kernel=(("/proc/self/ns/net", "network namespaces"),), check=webstack_unmet)

    def setup(self, sb: Sandbox) -> None:
        netns = sb.add_netns(resolv_conf="nameserver {host_ip}\noptions timeout:1 attempts:2\n")
        self.api_port = free_port()
        api_root = sb.mkdirs("payments-api")
        sb.write_text(api_root / "health", "ok\n")
        self.api = sb.spawn([child_python(), "-I", "-m", "http.server", str(self.api_port), "--bind", netns.host_ip,
                             "--directory", str(api_root)], log="payments-api.log")
        self.dnsmasq = sb.spawn(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                                 "--no-poll", "--bind-interfaces", f"--listen-address={netns.host_ip}", "--port=53",
                                 f"--host-record={API},{netns.host_ip}", "--local=/payments.internal/",
                                 f"--pid-file={sb.path('dnsmasq.pid')}", "--log-facility=-"], log="dnsmasq.log")
        wait_until(lambda: dns_answers(netns.host_ip, API) == 0 or self.dnsmasq.poll() is not None, 15,
                   f"dnsmasq does not answer on {netns.host_ip}; see {sb.path('dnsmasq.log')}")
        if self.dnsmasq.poll() is not None:
            raise LabError(f"dnsmasq exited: {sb.path('dnsmasq.log').read_text()[-300:]}")
        wait_until(lambda: port_answers(self.api_port, netns.host_ip) or self.api.poll() is not None, 15,
                   f"the payments API does not listen on {netns.host_ip}:{self.api_port}")
        self.start_app(sb, netns, "checkout.php", _CHECKOUT_PHP % {"api": API, "port": self.api_port})
        # The first lookups and connects of a fresh PHP-FPM may lose a race with the namespace's
        # routes; a healthy checkout is one that answers 200 within a few seconds.
        answer = (0, "")

        def healthy() -> bool:
            nonlocal answer
            answer = _get(self.web.port, self.page)
            return answer[0] == 200 and "checkout ready: ok" in answer[1]

        try:
            wait_until(healthy, 10, "")
        except LabError:
            raise LabError(f"the healthy checkout answers {answer[0]}: {answer[1][:200]!r}; "
                           f"see {self.web.logs}") from None
        self.injected.append(f"PHP-FPM in network namespace {netns.name} resolves {API} through dnsmasq on "
                             f"{netns.host_ip}; checkout on http://127.0.0.1:{self.web.port}{self.page} answered 200")

    def inject(self, sb: Sandbox) -> None:
        self.dnsmasq.send_signal(signal.SIGKILL)
        self.dnsmasq.wait(timeout=10)
        wait_until(lambda: dns_answers(self.netns.host_ip, API) is None, 10, "the resolver still answers")
        codes = [_get(self.web.port, self.page)[0] for _ in range(3)]
        failed = [line for line in self.web.php_errors().splitlines() if "name resolution" in line]
        if codes != [502, 502, 502] or not failed:
            raise LabError(f"checkout did not fail on name resolution: {codes}; see {self.web.php_error_log}")
        self.injected.append(f"dnsmasq killed: nothing answers on {self.netns.host_ip}:53; checkout answers {codes}; "
                             f"PHP logged: {failed[0][:160]}")

    def profile(self, sb: Sandbox) -> str:
        return super().profile(sb) + (f"\n[[dependency]]\nname = \"payments\"\n"
                                      f"url = {json.dumps(f'http://{API}:{self.api_port}/health')}\n")


#: The namespace's local port range: 64 ports, as a narrow range or a NAT gateway leaves.
PORT_RANGE = (40000, 40063)


class EphemeralPorts(_NamespacedApp):
    name = "ephemeral-ports"
    condition = "ephemeral-ports"
    description = ("nginx + PHP-FPM, PHP-FPM in its own network namespace with ip_local_port_range "
                   f"{PORT_RANGE[0]}-{PORT_RANGE[1]}; the cart page connects to Redis anew on every request and "
                   "closes first, steady traffic leaves every port in TIME_WAIT and connects fail with "
                   "'Cannot assign requested address'")
    symptoms = (
        "the cart page answers 503 under steady traffic; Redis itself is fine",
        "the PHP log says 'fsockopen(): Unable to connect to ... (Cannot assign requested address)'",
    )
    needs = Needs(commands=_NETNS_COMMANDS, kernel=(("/proc/self/ns/net", "network namespaces"),),
                  check=lambda: webstack_unmet() or redis_unmet())

    def setup(self, sb: Sandbox) -> None:
        netns = sb.add_netns(sysctls={"net.ipv4.ip_local_port_range": f"{PORT_RANGE[0]} {PORT_RANGE[1]}"})
        binary = find_redis_server()
        if binary is None:
            raise LabError("needs Debian package redis-server")
        self.redis = RedisInstance(sb.mkdirs("redis"), free_port(), sandbox=sb, binary=binary, account=_run_as("redis"),
                                   bind=netns.host_ip)
        self.redis.start()
        self.start_app(sb, netns, "cart.php", _CART_PHP % {"host": netns.host_ip, "port": self.redis.port})
        status, body = _get(self.web.port, self.page)
        if status != 200 or "cart ok" not in body:
            raise LabError(f"the healthy cart answers {status}: {body[:200]!r}; see {self.web.logs}")
        self.injected.append(f"PHP-FPM in network namespace {netns.name} (ports {PORT_RANGE[0]}-{PORT_RANGE[1]}) "
                             f"talks to Redis on {netns.host_ip}:{self.redis.port}; the cart answered 200")

    def inject(self, sb: Sandbox) -> None:
        self.traffic = sb.spawn([child_python(), "-I", "-c", _TRAFFIC, str(self.web.port), self.page, "0.1"],
                                log="traffic.log")
        wait_until(lambda: "Cannot assign requested address" in self.web.php_errors(), 60,
                   f"the cart's connects never ran out of ports; see {self.web.php_error_log}")
        codes = [_get(self.web.port, self.page)[0] for _ in range(3)]
        failed = [line for line in self.web.php_errors().splitlines() if "Cannot assign requested address" in line]
        self.injected.append(f"steady traffic (10 requests/s) on the cart: the next requests answer {codes}; PHP "
                             f"logged {len(failed)} line(s) like: {failed[0][:160]}")

    def profile(self, sb: Sandbox) -> str:
        return super().profile(sb) + (f"\n[[dependency]]\nname = \"redis\"\n"
                                      f"url = {json.dumps(f'redis://{self.netns.host_ip}:{self.redis.port}/0')}\n")
