"""HTTP probes against a real HTTP server in a thread on 127.0.0.1 (status, latency, body,
a login that sets a cookie and redirects, with a session store that keeps or loses it), and
access logs written in the real combined format with times relative to now."""

from __future__ import annotations

import doctest
import http.server
import json
import threading
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs

import pytest

import prodx.accesslog as accesslog
import prodx.probes.http as httpmod
from prodx.host import LocalHost
from prodx.host.fixture import FixtureHost
from prodx.host.recording import RecordingHost
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.http import HttpAccessLogProbe, HttpEndpointsProbe
from prodx.probes.runner import run_probes
from prodx.profile import HttpCheck, LoginJourney

P, A, U = FindingState.PRESENT, FindingState.ABSENT, FindingState.UNKNOWN


class _App(http.server.BaseHTTPRequestHandler):
    """A tiny app: /health, /broken (503), /slow (1.2 s), /login (POST sets a session cookie
    and redirects to /account), /account (shows the user if the session is known)."""

    sessions: dict[str, str] = {}
    store_sessions = True
    posted: list[dict[str, list[str]]] = []

    def log_message(self, *args):  # noqa: ANN002 - silence the default stderr log
        pass

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/health":
            self._send(200, "status: ok")
        elif self.path == "/broken":
            self._send(503, "<h1>Service Unavailable</h1>")
        elif self.path == "/slow":
            time.sleep(1.2)
            self._send(200, "status: ok")
        elif self.path == "/account":
            cookie = self.headers.get("Cookie", "")
            sid = cookie.split("sid=", 1)[1].split(";")[0] if "sid=" in cookie else ""
            user = self.sessions.get(sid)
            self._send(200, f"logged in as {user}" if user else '<form method="post" action="/login">')
        else:
            self._send(404, "not found")

    def do_POST(self) -> None:  # noqa: N802
        form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
        self.posted.append(form)
        sid = f"s{len(self.posted)}"
        if self.store_sessions:  # a full session store accepts the cookie but keeps nothing
            self.sessions[sid] = form.get("user", ["?"])[0]
        self._send(303, "", {"Location": "/account", "Set-Cookie": f"sid={sid}; Path=/; HttpOnly"})


@pytest.fixture()
def app():
    handler = type("App", (_App,), {"sessions": {}, "store_sessions": True, "posted": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _run(kb, probe, target, host=None):
    findings, runs = run_probes([probe], ProbeContext(host or LocalHost(), target, kb), 5.0)
    assert runs[0].status.value == "ok", runs[0].detail
    return {f.id: f for f in findings}


def test_http_modules_doctests_pass():
    assert doctest.testmod(httpmod).failed == 0
    assert doctest.testmod(accesslog).failed == 0


def test_http_endpoints_healthy_urls_report_absent(kb, app):
    found = _run(kb, HttpEndpointsProbe(), Target(http=[HttpCheck(app.base + "/health", 200, "ok")]))
    assert found["http.endpoint_failing"].state is A
    assert found["http.slow"].state is A
    assert found["http.login_session_lost"].state is U


def test_http_endpoints_503_reports_failing_with_status_and_excerpt(kb, app):
    found = _run(kb, HttpEndpointsProbe(), Target(http=[HttpCheck(app.base + "/broken")]))
    f = found["http.endpoint_failing"]
    assert f.state is P and "status 503, expected 200" in f.summary
    assert "Service Unavailable" in f.evidence["failing"][0]["excerpt"]


def test_http_endpoints_body_without_expected_text_reports_failing(kb, app):
    found = _run(kb, HttpEndpointsProbe(), Target(http=[HttpCheck(app.base + "/health", 200, "database: ok")]))
    assert found["http.endpoint_failing"].state is P
    assert "lacks 'database: ok'" in found["http.endpoint_failing"].summary


def test_http_endpoints_redirect_is_not_followed_for_status_checks(kb, app):
    found = _run(kb, HttpEndpointsProbe(), Target(http=[HttpCheck(app.base + "/account", 303)]))
    assert found["http.endpoint_failing"].state is P  # /account answers 200, a 303 was expected


def test_http_endpoints_slow_url_reports_slow_with_latency(kb, app):
    found = _run(kb, HttpEndpointsProbe(), Target(http=[HttpCheck(app.base + "/slow")]))
    assert found["http.slow"].state is P
    assert found["http.slow"].evidence["slow"][0]["latency_s"] > httpmod.SLOW_S
    assert found["http.endpoint_failing"].state is A


def test_http_endpoints_refused_connection_reports_failing(kb):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    found = _run(kb, HttpEndpointsProbe(), Target(http=[HttpCheck(f"http://127.0.0.1:{port}/")]))
    assert found["http.endpoint_failing"].state is P and "ConnectError" in found["http.endpoint_failing"].summary
    assert found["http.slow"].state is U


def _login_check(app, then_url=""):
    return HttpCheck(app.base + "/login", 404, login=LoginJourney({"user": "alice", "password": "s3cret"},
                                                                 "logged in as alice", then_url))


def test_http_login_journey_with_session_kept_reports_absent(kb, app):
    found = _run(kb, HttpEndpointsProbe(), Target(http=[_login_check(app)]))
    assert found["http.login_session_lost"].state is A
    assert app.posted == [{"user": ["alice"], "password": ["s3cret"]}]


def test_http_login_journey_is_not_run_without_the_write_test(kb, app):
    # Its POST makes the app create a session: a write, so --no-write-test skips it.
    ctx = ProbeContext(LocalHost(), Target(http=[_login_check(app)]), kb, write_test=False)
    findings, _runs = run_probes([HttpEndpointsProbe()], ctx, 5.0)
    found = {f.id: f for f in findings}
    assert app.posted == []
    assert found["http.login_session_lost"].state is U and "--no-write-test" in found["http.login_session_lost"].reason
    assert found["http.endpoint_failing"].state is A


def test_http_login_journey_with_session_store_losing_it_reports_session_lost(kb, app):
    app.store_sessions = False
    found = _run(kb, HttpEndpointsProbe(), Target(http=[_login_check(app, then_url=app.base + "/account")]))
    f = found["http.login_session_lost"]
    assert f.state is P
    assert f.evidence["journeys"][0]["post_status"] == 303 and f.evidence["journeys"][0]["cookies_set"] == ["sid"]
    assert found["http.endpoint_failing"].state is A


def test_http_login_journey_recorded_without_form_values_and_replayed(kb, app, tmp_path):
    app.store_sessions = False
    target = Target(http=[_login_check(app)])
    recorder = RecordingHost(LocalHost())
    live = {k: f.state for k, f in _run(kb, HttpEndpointsProbe(), target, recorder).items()}
    recorder.save(tmp_path / "cap")
    assert "s3cret" not in (tmp_path / "cap/host.json").read_text()
    replayed = {k: f.state for k, f in _run(kb, HttpEndpointsProbe(), target, FixtureHost(tmp_path / "cap")).items()}
    assert replayed == live and live["http.login_session_lost"] is P


def test_http_endpoints_without_profile_urls_leave_findings_unknown(kb):
    found = _run(kb, HttpEndpointsProbe(), Target())
    assert {f.state for f in found.values()} == {U}
    assert "[[http]]" in found["http.endpoint_failing"].reason


def _combined(when: float, status: int, path: str = "/") -> str:
    stamp = datetime.fromtimestamp(when, timezone.utc).astimezone().strftime("%d/%b/%Y:%H:%M:%S %z")
    return f'203.0.113.9 - - [{stamp}] "GET {path} HTTP/1.1" {status} 512 "-" "Mozilla/5.0 (X11; Linux x86_64)"\n'


def _access_log(tmp_path, recent_5xx: int, recent_ok: int, baseline_5xx: int, baseline_ok: int):
    now = time.time()
    lines = []
    for i in range(baseline_ok + baseline_5xx):
        lines.append(_combined(now - 3800 + i * (3400 / max(1, baseline_ok + baseline_5xx)), 502 if i < baseline_5xx else 200))
    for i in range(recent_ok + recent_5xx):
        lines.append(_combined(now - 280 + i * (270 / max(1, recent_ok + recent_5xx)), 502 if i % 3 == 0 and i // 3 < recent_5xx else 200))
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    return log


def test_http_access_log_5xx_burst_in_last_minutes_reports_rate_up(kb, tmp_path):
    log = _access_log(tmp_path, recent_5xx=30, recent_ok=70, baseline_5xx=5, baseline_ok=995)
    found = _run(kb, HttpAccessLogProbe(), Target(logs=[str(log)]))
    f = found["http.server_errors_up"]
    assert f.state is P
    assert f.evidence["logs"][str(log)]["recent_5xx"] == 30


def test_http_access_log_steady_error_share_reports_absent(kb, tmp_path):
    log = _access_log(tmp_path, recent_5xx=1, recent_ok=99, baseline_5xx=10, baseline_ok=990)
    assert _run(kb, HttpAccessLogProbe(), Target(logs=[str(log)]))["http.server_errors_up"].state is A


def test_http_access_log_quiet_site_leaves_rate_unknown(kb, tmp_path):
    log = _access_log(tmp_path, recent_5xx=2, recent_ok=3, baseline_5xx=0, baseline_ok=50)
    f = _run(kb, HttpAccessLogProbe(), Target(logs=[str(log)]))["http.server_errors_up"]
    assert f.state is U and "too few" in f.reason


def test_http_access_log_reads_only_a_bounded_tail(kb, tmp_path, monkeypatch):
    monkeypatch.setattr(httpmod, "ACCESS_TAIL_BYTES", 4096)
    log = _access_log(tmp_path, recent_5xx=30, recent_ok=70, baseline_5xx=0, baseline_ok=1000)
    f = _run(kb, HttpAccessLogProbe(), Target(logs=[str(log)]))["http.server_errors_up"]
    assert f.evidence["logs"][str(log)]["recent_requests"] < 100  # only what fits in 4 KiB


def test_http_access_log_absent_everywhere_leaves_rate_unknown(kb, tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "host.json").write_text(json.dumps({"now": time.time()}))
    f = _run(kb, HttpAccessLogProbe(), Target(), FixtureHost(tmp_path))["http.server_errors_up"]
    assert f.state is U and "no access log found" in f.reason
