"""The TLS probe against real certificates made in the test (root CA, intermediate, leaves:
expired, expiring in 3 days, valid, wrong name, valid only from tomorrow) served by a real TLS
server on 127.0.0.1, and certificate files on disk. The test's root is this run's trust store
(SSL_CERT_FILE), the way a public root is a browser's."""

from __future__ import annotations

import doctest
import json
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

import prodx.probes.tls as tlsmod
from prodx.host import LocalHost
from prodx.host.fixture import FixtureHost
from prodx.host.recording import RecordingHost
from prodx.lab.scenarios.tls import SITE, Issued, Pki
from prodx.model import FindingState
from prodx.discovery import Discovery
from prodx.probes.base import ProbeContext, Target
from prodx.probes.runner import run_probes
from prodx.profile import TlsCheck
from prodx.probes.tls import TlsCertificatesProbe


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.make()


@pytest.fixture()
def trusted(pki, tmp_path, monkeypatch) -> Path:
    """The test's root CA is the only one this process trusts."""
    ca = tmp_path / "roots.pem"
    ca.write_bytes(pki.root.cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    return ca


class TlsServer:
    """A real TLS server in a thread on 127.0.0.1: completes handshakes with ``chain``."""

    def __init__(self, directory: Path, leaf: Issued, chain: list[Issued]) -> None:
        cert = directory / f"served-{id(self)}.pem"
        key = directory / f"served-{id(self)}.key"
        cert.write_bytes(leaf.cert_pem + b"".join(c.cert_pem for c in chain))
        key.write_bytes(leaf.key_pem)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                conn.settimeout(2)
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture()
def serve(tmp_path):
    servers: list[TlsServer] = []

    def start(leaf: Issued, chain: list[Issued]) -> int:
        server = TlsServer(tmp_path, leaf, chain)
        servers.append(server)
        return server.port

    yield start
    for s in servers:
        s.close()


class _NoServers(LocalHost):
    """The real host with no process table: only the test's own endpoints and files count,
    not the certificates of servers other tests (or a lab run) have running with -c."""

    def processes(self):
        return []


def _run(kb, checks, host=None):
    ctx = ProbeContext(host or LocalHost(), Target(tls=list(checks)), kb)
    if host is None:
        # Only the checks given: not the TLS servers discovery would find running on this host
        # (a fixture host's discovery sees only the fixture's own processes).
        ctx.seed("discovery", Discovery())
    findings, runs = run_probes([TlsCertificatesProbe()], ctx, 5.0)
    assert runs[0].status.value == "ok", runs[0].detail
    return {f.id: f for f in findings}


def _states(found):
    return {fid: f.state for fid, f in found.items()}


P, A, U = FindingState.PRESENT, FindingState.ABSENT, FindingState.UNKNOWN


def test_tls_module_doctests_pass():
    assert doctest.testmod(tlsmod).failed == 0


def test_tls_endpoint_with_valid_full_chain_reports_every_fault_absent(kb, pki, trusted, serve):
    port = serve(pki.leaf(), [pki.intermediate])
    states = _states(_run(kb, [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE)]))
    assert states == {"tls.cert_expired": A, "tls.cert_expiring_soon": A, "tls.cert_not_yet_valid": A,
                      "tls.chain_incomplete": A, "tls.name_mismatch": A, "tls.served_cert_stale": U}


def test_tls_endpoint_serving_expired_certificate_reports_expired_with_date(kb, pki, trusted, serve):
    port = serve(pki.leaf(valid_from_days=-100, valid_until_days=-3), [pki.intermediate])
    found = _run(kb, [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE)])
    assert found["tls.cert_expired"].state is P
    assert "expired" in found["tls.cert_expired"].summary and "3.0 days ago" in found["tls.cert_expired"].summary
    assert found["tls.cert_expiring_soon"].state is A
    assert found["tls.chain_incomplete"].state is A


def test_tls_endpoint_expiring_in_three_days_reports_expiring_soon(kb, pki, trusted, serve):
    port = serve(pki.leaf(valid_until_days=3), [pki.intermediate])
    found = _run(kb, [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE)])
    assert found["tls.cert_expiring_soon"].state is P
    assert found["tls.cert_expired"].state is A


def test_tls_endpoint_sending_only_the_leaf_reports_chain_incomplete(kb, pki, trusted, serve):
    port = serve(pki.leaf(), [])
    found = _run(kb, [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE)])
    assert found["tls.chain_incomplete"].state is P
    assert "20" in found["tls.chain_incomplete"].evidence["incomplete"][0]["verify"]
    assert found["tls.cert_expired"].state is A


def test_tls_endpoint_with_full_chain_from_an_untrusted_root_is_not_called_incomplete(kb, pki, serve, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "empty.pem"))
    (tmp_path / "empty.pem").write_text("")
    port = serve(pki.leaf(), [pki.intermediate])
    found = _run(kb, [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE)])
    assert found["tls.chain_incomplete"].state is A


def test_tls_endpoint_serving_another_name_reports_name_mismatch(kb, pki, trusted, serve):
    port = serve(pki.leaf(names=("other.prodx-lab.test",)), [pki.intermediate])
    found = _run(kb, [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE)])
    assert found["tls.name_mismatch"].state is P
    assert found["tls.name_mismatch"].evidence["mismatched"][0]["names"] == ["other.prodx-lab.test"]


def test_tls_endpoint_with_certificate_valid_from_tomorrow_reports_not_yet_valid(kb, pki, trusted, serve):
    port = serve(pki.leaf(valid_from_days=1, valid_until_days=90), [pki.intermediate])
    assert _run(kb, [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE)])["tls.cert_not_yet_valid"].state is P


def test_tls_endpoint_refusing_connections_leaves_findings_unknown_with_reason(kb):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    found = _run(kb, [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE)])
    assert all(f.state is U for f in found.values())
    assert "ConnectionRefusedError" in found["tls.cert_expired"].reason


def test_tls_file_renewed_while_server_serves_the_old_certificate_reports_served_cert_stale(kb, pki, trusted, serve, tmp_path):
    port = serve(pki.leaf(valid_from_days=-92, valid_until_days=-2), [pki.intermediate])
    renewed = pki.leaf(valid_until_days=90)
    fullchain = tmp_path / "fullchain.pem"
    fullchain.write_bytes(renewed.cert_pem + pki.intermediate.cert_pem)
    found = _run(kb, [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE), TlsCheck(file=str(fullchain))])
    assert found["tls.served_cert_stale"].state is P
    assert found["tls.served_cert_stale"].evidence["stale"][0]["file"] == str(fullchain)
    assert found["tls.cert_expired"].state is P  # the served one


def test_tls_file_holding_only_the_leaf_reports_chain_incomplete(kb, pki, tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_bytes(pki.leaf().cert_pem)
    found = _run(kb, [TlsCheck(file=str(cert))])
    assert found["tls.chain_incomplete"].state is P
    assert found["tls.cert_expired"].state is A
    assert found["tls.name_mismatch"].state is U


def test_tls_file_missing_leaves_findings_unknown_naming_it(kb, tmp_path):
    found = _run(kb, [TlsCheck(file=str(tmp_path / "gone.pem"))])
    assert found["tls.cert_expired"].state is U and "gone.pem: missing" in found["tls.cert_expired"].reason


def test_tls_without_endpoints_or_certificates_leaves_findings_unknown(kb, tmp_path):
    (tmp_path / "root").mkdir()
    found = _run(kb, [], host=FixtureHost(tmp_path))
    assert all(f.state is U for f in found.values())
    assert "no [[tls]]" in found["tls.cert_expired"].reason


def test_tls_nginx_config_names_an_expired_certificate_file(kb, pki, tmp_path):
    """A fixture tree laid out like /etc/nginx, with a real expired certificate in it."""
    root = tmp_path / "root"
    (root / "etc/nginx/sites-enabled").mkdir(parents=True)
    (root / "etc/ssl/shop").mkdir(parents=True)
    (root / "etc/ssl/shop/fullchain.pem").write_bytes(
        pki.leaf(valid_from_days=-95, valid_until_days=-5).cert_pem + pki.intermediate.cert_pem)
    (root / "etc/nginx/sites-enabled/shop").write_text(
        "server {\n  listen 443 ssl;\n  server_name shop.example;\n"
        "  ssl_certificate /etc/ssl/shop/fullchain.pem;\n  ssl_certificate_key /etc/ssl/shop/key.pem;\n}\n")
    (tmp_path / "host.json").write_text(json.dumps({"now": time.time()}))
    found = _run(kb, [], host=FixtureHost(tmp_path))
    assert found["tls.cert_expired"].state is P
    assert found["tls.cert_expired"].evidence["expired"][0]["where"] == "/etc/ssl/shop/fullchain.pem"
    assert found["tls.chain_incomplete"].state is A


def test_tls_config_of_a_running_nginx_started_with_c_names_a_certificate_for_another_site(kb, pki, tmp_path):
    """A fixture tree: nginx runs with -c /srv/shop/nginx.conf (outside /etc); the server block
    for shop.example serves a real certificate issued for blog.example."""
    root = tmp_path / "root"
    (root / "srv/shop/tls").mkdir(parents=True)
    (root / "srv/shop/tls/fullchain.pem").write_bytes(pki.leaf(names=("blog.example",)).cert_pem
                                                      + pki.intermediate.cert_pem)
    (root / "srv/shop/nginx.conf").write_text(
        "events {}\nhttp {\n  server {\n    listen 443 ssl;\n    server_name shop.example www.shop.example;\n"
        "    ssl_certificate /srv/shop/tls/fullchain.pem;\n    location / { return 200; }\n  }\n}\n")
    master = {"pid": 4242, "name": "nginx", "user": "root", "uid": 0,
              "cmdline": ["nginx: master process /usr/sbin/nginx", "-c", "/srv/shop/nginx.conf"]}
    # The listener discovery reads from that config is handshaken too; nothing answers there.
    refused = {"tls": {json.dumps(["127.0.0.1", 443, name]): {"error": "ConnectionRefusedError: [Errno 111] Connection refused"}
                       for name in ("shop.example", "blog.example")}}
    (tmp_path / "host.json").write_text(json.dumps({"now": time.time(), "processes": [master], "observations": refused}))
    found = _run(kb, [], host=FixtureHost(tmp_path))
    mismatch = found["tls.name_mismatch"]
    assert mismatch.state is P, mismatch.reason or mismatch.summary
    assert mismatch.evidence["mismatched"][0]["server_names"] == ["shop.example", "www.shop.example"]
    assert mismatch.evidence["mismatched"][0]["names"] == ["blog.example"]
    assert found["tls.chain_incomplete"].state is A
    # The same file served for the name it was issued for is no mismatch.
    conf = root / "srv/shop/nginx.conf"
    conf.write_text(conf.read_text().replace("shop.example www.shop.example", "blog.example"))
    assert _run(kb, [], host=FixtureHost(tmp_path))["tls.name_mismatch"].state is A


def test_tls_handshake_recorded_replays_the_same_findings(kb, pki, trusted, serve, tmp_path):
    port = serve(pki.leaf(valid_from_days=-100, valid_until_days=-3), [])
    checks = [TlsCheck(endpoint=f"127.0.0.1:{port}", server_name=SITE)]
    recorder = RecordingHost(_NoServers())
    live = _states(_run(kb, checks, host=recorder))
    recorder.save(tmp_path / "capture")
    assert _states(_run(kb, checks, host=FixtureHost(tmp_path / "capture"))) == live
    assert live["tls.cert_expired"] is P and live["tls.chain_incomplete"] is P
