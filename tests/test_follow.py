"""The second pass: what present findings name is examined within the same deadline.

Real where it can be: a real log read by the real signature probe names a folder that root
recreated on this machine's filesystem, and the real write test and ownership walk follow it
as an unprivileged user; a real stale unix socket and a real closed port are followed. The
parsers' samples run as doctests, and every rule of kb/data/follow.yaml reads its own examples.
"""

from __future__ import annotations

import doctest
import os
import pwd
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import prodx.discovery.configs as configs_mod
import prodx.parsers.leads as leads_mod
import prodx.parsers.nginx as nginx_mod
import prodx.parsers.serverconf as serverconf_mod
import prodx.probes.failed_start as failed_start_mod
import prodx.probes.follow as follow_mod
from prodx.discovery import Discovery
from prodx.host import LocalHost
from prodx.model import FindingState, ProbeStatus, present
from prodx.parsers.leads import Lead, find_leads, read_lead
from prodx.probes.base import Probe, ProbeContext, Target
from prodx.probes.logs import LogSignaturesProbe
from prodx.probes.runner import run_probes
from prodx.probes.upstreams import UpstreamsProbe

P, A = FindingState.PRESENT, FindingState.ABSENT
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown and the write test as another user")


@pytest.mark.parametrize("module", [leads_mod, nginx_mod, serverconf_mod, configs_mod, failed_start_mod])
def test_follow_parsers_doctests_pass(module) -> None:
    assert doctest.testmod(module).failed == 0


def test_every_follow_rule_reads_a_target_of_its_kind_from_each_of_its_examples(kb) -> None:
    rules = kb.follow["rules"]
    assert len(rules) >= 20 and len({r["id"] for r in rules}) == len(rules)
    for rule in rules:
        re.compile(rule["pattern"])
        for example in rule["examples"]:
            found = read_lead(rule, example, kb.follow["ports"])
            assert found is not None, (rule["id"], example)
            value, service = found
            if rule["kind"] in ("folder", "certificate"):
                assert value.startswith("/"), (rule["id"], value)
            elif value.startswith("unix:"):
                assert rule["kind"] == "upstream"
            else:
                assert re.fullmatch(r"(\[[0-9a-f:]+\]|[^:]+):[0-9]+", value), (rule["id"], value)
            if rule.get("service"):
                assert service == rule["service"]


def test_leads_come_only_from_present_findings_and_one_per_target(kb) -> None:
    line = 'PHP Fatal error:  Uncaught PDOException: SQLSTATE[08006] [7] connection to server at "127.0.0.1", port 5433 failed: Connection refused'
    ev = {"hits": [{"example": line, "file": "/var/log/php.log"}, {"example": line, "file": "/var/log/other.log"}]}
    found = find_leads([("log.connection_refused", "", ev)], kb.follow["rules"], kb.follow["ports"])
    assert [(x.kind, x.value, x.service, x.file) for x in found] == [("endpoint", "127.0.0.1:5433", "postgres", "/var/log/php.log")]
    assert find_leads([("storage.full", "/var/www mounted on / is full", {"mount_point": "/"})], kb.follow["rules"]) == []


# ---- the runner ------------------------------------------------------------------------------

RELEASE = threading.Event()


class _Quick(Probe):
    findings = ("log.cache_write_failed",)

    def run(self, ctx):
        yield present("log.cache_write_failed", "a line", hits=[{"example": "x"}])


class _Hangs(Probe):
    findings = ("storage.owner_mismatch",)
    deadline_s = 10.0

    def run(self, ctx):
        yield present("storage.owner_mismatch", "seen before the hang")
        RELEASE.wait(30)


def test_a_hung_second_pass_probe_is_abandoned_as_timeout_and_the_run_ends_on_time(kb, monkeypatch) -> None:
    """The second pass's planner is replaced by one that returns a probe hanging like a stat
    on a dead mount (a real hang cannot be staged without root and FUSE): the runner must
    abandon it at the overall deadline, keep what it saw, and say what it followed."""
    ctx = ProbeContext(LocalHost(), Target(), kb)
    ctx.seed("discovery", Discovery())
    lead = Lead("folder", "/srv/shop/var/cache/prod", "log.cache_write_failed", "twig", "a line")
    hang = _Hangs()
    hang.name = "test.hangs"
    monkeypatch.setattr(follow_mod, "plan", lambda found, c: [follow_mod.Step(hang, c, [lead])])
    quick = _Quick()
    quick.name = "test.quick"
    start = time.monotonic()
    findings, runs = run_probes([quick], ctx, deadline_s=1.5)
    elapsed = time.monotonic() - start
    RELEASE.set()
    assert elapsed < 2.5
    second = [r for r in runs if r.followed]
    assert [(r.name, r.status) for r in second] == [("test.hangs", ProbeStatus.TIMEOUT)]
    assert sorted((r.name, r.to_json()["pass"]) for r in runs) == [("test.hangs", 2), ("test.quick", 1)]
    mismatch = next(f for f in findings if f.id == "storage.owner_mismatch")
    assert mismatch.state is P and mismatch.evidence["followed"][0]["from"] == "log.cache_write_failed"
    assert "second pass" in mismatch.summary


# ---- folders on a real filesystem ------------------------------------------------------------

@pytest.fixture()
def app_tree() -> Iterator[tuple[Path, pwd.struct_passwd]]:
    """An app owned by ``nobody`` under a world-traversable folder, with a cache folder
    recreated by root the way `cache:clear` run as root does, and the app's log saying so."""
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="prodx-follow-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        app = base / "shop"
        for d in ("var/cache", "var/log"):
            (app / d).mkdir(parents=True)
        for p in [app, *app.rglob("*")]:
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        (app / "var/cache/prod/twig").mkdir(parents=True, mode=0o755)  # root's now
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        log = app / "var/log/prod.log"
        log.write_text(f'[{stamp}.000000+00:00] request.CRITICAL: Uncaught PHP Exception Twig\\Error\\RuntimeError: '
                       f'"Failed to write cache file "{app}/var/cache/prod/twig/ab/abcd.php"." at {app}/vendor/x.php line 78\n')
        os.chown(log, nobody.pw_uid, nobody.pw_gid)
        yield app, nobody
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def _ctx(kb, target: Target) -> ProbeContext:
    ctx = ProbeContext(LocalHost(), target, kb)
    ctx.seed("discovery", Discovery())
    return ctx


@root_only
def test_second_pass_writes_as_the_app_user_where_its_log_failed_and_finds_the_root_owned_folder(kb, app_tree) -> None:
    app, nobody = app_tree
    host = LocalHost()
    target = Target(user=host.user("nobody"), user_name="nobody", user_source="profile",
                    logs=[str(app / "var/log/prod.log")], writable=["/tmp"])
    findings, runs = run_probes([LogSignaturesProbe()], _ctx(kb, target), deadline_s=5.0)
    by_id = {f.id: f for f in findings}
    assert by_id["log.cache_write_failed"].state is P
    assert sorted(r.name for r in runs if r.followed) == ["storage.ownership", "storage.write_test"]
    eacces = by_id["storage.write_eacces"]
    assert eacces.state is P
    assert eacces.evidence["failures"][0]["directory"] == str(app / "var/cache/prod/twig")
    assert eacces.evidence["followed"][0]["from"] == "log.cache_write_failed"
    assert eacces.evidence["followed"][0]["file"] == str(app / "var/log/prod.log")
    mismatch = by_id["storage.owner_mismatch"]
    assert mismatch.state is P
    assert {e["path"] for e in mismatch.evidence["entries"]} >= {str(app / "var/cache/prod"), str(app / "var/cache/prod/twig")}
    # The walk started at the app's own folder (var/cache, nobody's), which nobody may write.
    assert by_id["storage.path_denied"].state is A


@root_only
def test_second_pass_does_not_test_again_a_folder_the_first_pass_tested(kb, app_tree) -> None:
    app, _nobody = app_tree
    host = LocalHost()
    twig = str(app / "var/cache/prod/twig")
    target = Target(user=host.user("nobody"), user_name="nobody", user_source="profile", writable=[twig, str(app / "var/cache")],
                    logs=[str(app / "var/log/prod.log")])
    steps = follow_mod.plan([f for f in run_probes([LogSignaturesProbe()], _ctx(kb, target), 5.0, follow=False)[0]],
                            _ctx(kb, target))
    assert steps == []


@root_only
def test_second_pass_skips_a_named_folder_outside_the_app_and_not_shared(kb, tmp_path) -> None:
    """A line about a system folder the app failed to read is not the app's folder: no write
    test there (it would only say the app's user cannot write /etc)."""
    host = LocalHost()
    ctx = _ctx(kb, Target(user=host.user("nobody"), user_name="nobody", user_source="profile"))
    line = "PermissionError: [Errno 13] Permission denied: '/etc/ssl/private/shop.key'"
    found = present("log.permission_denied", "", hits=[{"example": line, "file": "/srv/app/app.log"}])
    assert follow_mod.plan([found], ctx) == []


# ---- endpoints and backends ------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_second_pass_reaches_the_database_an_error_line_names_and_finds_it_refusing(kb) -> None:
    port = _closed_port()
    line = (f'PHP Fatal error:  Uncaught PDOException: SQLSTATE[08006] [7] connection to server at "127.0.0.1", '
            f'port {port} failed: Connection refused in /srv/shop/src/Db.php:12')

    class _Log(Probe):
        findings = ("log.connection_refused",)

        def run(self, ctx):
            yield present("log.connection_refused", "1 line", hits=[{"example": line, "file": "/srv/shop/php.log"}])

    probe = _Log()
    probe.name = "test.log"
    findings, runs = run_probes([probe], _ctx(kb, Target()), deadline_s=5.0)
    by_id = {f.id: f for f in findings}
    assert sorted(r.name for r in runs if r.followed) == ["dep.databases", "net.reach"]
    unreachable = by_id["net.dependency_unreachable"]
    assert unreachable.state is P and f"127.0.0.1:{port}" in unreachable.summary
    assert unreachable.evidence["followed"][0]["service"] == "postgres"
    assert by_id["dep.refused"].state is P


def test_upstreams_probe_finds_nothing_serving_a_stale_socket_the_web_server_config_names(kb, tmp_path) -> None:
    stale = tmp_path / "php-fpm.sock"
    with socket.socket(socket.AF_UNIX) as s:  # a server that died without removing its socket
        s.bind(str(stale))
    alive = tmp_path / "alive.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(alive))
    server.listen()
    try:
        ctx = ProbeContext(LocalHost(), Target(), kb)
        found = Discovery(upstreams=[(f"unix:{stale}", "fastcgi_pass in /srv/nginx.conf"),
                                     (f"unix:{alive}", "proxy_pass in /srv/nginx.conf"),
                                     ("api.example.com:443", "proxy_pass in /srv/nginx.conf")])
        ctx.seed("discovery", found)
        findings, _runs = run_probes([UpstreamsProbe()], ctx, deadline_s=5.0, follow=False)
    finally:
        server.close()
    down = next(f for f in findings if f.id == "process.service_down")
    assert down.state is P
    assert [b["backend"] for b in down.evidence["backends"] if not b["ok"]] == [f"unix:{stale}"]
    assert "ECONNREFUSED" in down.summary and "api.example.com" not in down.summary


def test_upstreams_probe_with_every_backend_answering_reports_the_service_up(kb, tmp_path) -> None:
    alive = tmp_path / "alive.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(alive))
    server.listen()
    try:
        ctx = ProbeContext(LocalHost(), Target(), kb)
        ctx.seed("discovery", Discovery(upstreams=[(f"unix:{alive}", "fastcgi_pass in /srv/nginx.conf")]))
        findings, _runs = run_probes([UpstreamsProbe()], ctx, deadline_s=5.0, follow=False)
    finally:
        server.close()
    assert next(f for f in findings if f.id == "process.service_down").state is A


# ---- a stopped server's last failed start ------------------------------------------------------

def _nginx() -> str | None:
    import shutil

    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


@pytest.fixture()
def failed_nginx_start(tmp_path) -> Path:
    """A real nginx start on a config with a typo: nginx refuses it and writes its [emerg] line
    to the error log, as a restart after a bad edit does (nothing binds: the parse fails first)."""
    nginx = _nginx()
    if nginx is None:
        pytest.skip("needs Debian package nginx-light")
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp { server { listen 127.0.0.1:1; servr_name shop; } }\n")
    log = tmp_path / "error.log"
    import subprocess

    proc = subprocess.run([nginx, "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(log), "-g", "pid nginx.pid;"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "unknown directive" in log.read_text()
    return log


def _failed_start(kb, target: Target, table: list | None = None):
    ctx = ProbeContext(LocalHost(), target, kb)
    ctx.seed("discovery", Discovery())
    # The process table as the probe sees it: the servers named are not running (whatever
    # other nginx runs on this machine is not the one the profile names).
    ctx.seed("process.table", table or [])
    findings, _runs = run_probes([failed_start_mod.FailedStartProbe()], ctx, deadline_s=5.0, follow=False)
    return findings[0]


def test_failed_start_of_a_stopped_nginx_on_its_config_is_reported_with_the_line(kb, failed_nginx_start) -> None:
    f = _failed_start(kb, Target(services=["nginx"], services_from_profile=True, logs=[str(failed_nginx_start)]))
    assert f.state is P, f.reason
    assert "unknown directive \"servr_name\"" in f.summary and f.evidence["servers"][0]["kind"] == "nginx"


def test_failed_start_followed_by_a_successful_start_is_history(kb, tmp_path) -> None:
    log = tmp_path / "php-fpm.log"
    log.write_text(f"[{time.strftime('%d-%b-%Y %H:%M:%S')}] ERROR: [/etc/php/8.2/fpm/pool.d/www.conf:3] unknown entry 'usr'\n"
                   f"[{time.strftime('%d-%b-%Y %H:%M:%S')}] NOTICE: fpm is running, pid 4242\n")
    f = _failed_start(kb, Target(services=["php8.2-fpm"], services_from_profile=True, logs=[str(log)]))
    assert f.state is A


def test_failed_start_without_declared_services_or_systemd_is_unknown(kb) -> None:
    f = _failed_start(kb, Target(services=["nginx"]))
    assert f.state is FindingState.UNKNOWN and "name the services" in f.reason


def test_failed_start_under_systemd_reads_the_units_last_attempt_in_the_journal(kb, tmp_path) -> None:
    """systemd is not PID 1 here: the host is a fixture whose systemctl and journalctl outputs
    follow systemd 252's formats for a unit whose ExecStartPre (nginx -t) failed."""
    import json

    from prodx.host.fixture import FixtureHost

    (tmp_path / "root/proc/1").mkdir(parents=True)
    (tmp_path / "root/proc/1/comm").write_text("systemd\n")
    journal = ("Starting nginx.service - A high performance web server and a reverse proxy server...\n"
               "Started nginx.service - A high performance web server and a reverse proxy server.\n"
               "Stopping nginx.service - A high performance web server and a reverse proxy server...\n"
               "Starting nginx.service - A high performance web server and a reverse proxy server...\n"
               'nginx: [emerg] unknown directive "servr_name" in /etc/nginx/sites-enabled/shop:3\n'
               "nginx: configuration file /etc/nginx/nginx.conf test failed\n"
               "nginx.service: Control process exited, code=exited, status=1/FAILURE\n"
               "nginx.service: Failed with result 'exit-code'.\n")
    commands = [
        {"argv": ["systemctl", "list-units", "--type=service", "--state=failed", "--plain", "--no-legend", "--no-pager"],
         "returncode": 0, "stdout": "nginx.service loaded failed failed A high performance web server\n"},
        {"argv": ["systemctl", "show", "-p", "Result", "-p", "ActiveState", "-p", "SubState", "-p", "ExecMainStatus",
                  "nginx.service"], "returncode": 0,
         "stdout": "Result=exit-code\nActiveState=failed\nSubState=failed\nExecMainStatus=0\n"},
        {"argv": ["journalctl", "-u", "nginx.service", "-n", "60", "--no-pager", "-o", "cat"], "returncode": 0,
         "stdout": journal},
    ]
    (tmp_path / "host.json").write_text(json.dumps({"hostname": "web1", "now": time.time(), "processes": [],
                                                    "commands": commands}))
    ctx = ProbeContext(FixtureHost(tmp_path), Target(), kb)
    ctx.seed("discovery", Discovery())
    findings, _runs = run_probes([failed_start_mod.FailedStartProbe()], ctx, deadline_s=5.0, follow=False)
    f = findings[0]
    assert f.state is P, f.reason
    assert f.evidence["servers"][0]["source"] == "journalctl -u nginx.service"
    assert f.evidence["servers"][0]["result"] == "exit-code"


def test_a_second_pass_plan_that_hangs_is_abandoned_and_the_run_ends_on_time(kb, monkeypatch) -> None:
    """Planning stats the named paths; a stat on a dead network mount never returns. The
    planner is replaced by one that blocks like that stat (no dead mount can be staged here
    without root and FUSE): the run still ends at its deadline, with the first pass's findings."""
    gate = threading.Event()
    monkeypatch.setattr(follow_mod, "plan", lambda found, c: gate.wait(30) or [])
    ctx = ProbeContext(LocalHost(), Target(), kb)
    ctx.seed("discovery", Discovery())
    quick = _Quick()
    quick.name = "test.quick"
    start = time.monotonic()
    findings, runs = run_probes([quick], ctx, deadline_s=1.0)
    elapsed = time.monotonic() - start
    gate.set()
    assert elapsed < 2.0
    assert [r.name for r in runs] == ["test.quick"] and findings[0].state is P


# ---- replays of real lab runs made with no profile ----------------------------------------------

HOSTS = Path(__file__).parent / "fixtures" / "hosts"


def _replay(kb, name: str):
    from prodx.diagnosis import DiagnoseOptions, diagnose
    from prodx.host.fixture import FixtureHost

    return diagnose(DiagnoseOptions(deadline_s=60), host=FixtureHost(HOSTS / name), kb=kb)


def test_replay_no_profile_root_owned_cache_is_found_by_following_the_php_log(kb) -> None:
    result = _replay(kb, "cache-owned-by-root-no-profile")
    mismatch, eacces = result.finding("storage.owner_mismatch"), result.finding("storage.write_eacces")
    assert mismatch.state is P and eacces.state is P
    for f in (mismatch, eacces):
        followed = f.evidence["followed"][0]
        assert followed["from"] == "log.cache_write_failed" and "/var/cache/prod/twig/" in followed["target"]
        assert followed["file"].endswith("php-errors.log")
    assert result.differential.leader.condition == "ownership-changed"


def test_replay_no_profile_stopped_database_named_by_pdo_is_dependency_down(kb) -> None:
    result = _replay(kb, "dependency-down-no-profile")
    unreachable = result.finding("net.dependency_unreachable")
    assert unreachable.state is P and unreachable.evidence["followed"][0]["service"] == "postgres"
    assert result.finding("dep.refused").state is P
    assert result.differential.leader.condition == "dependency-down"


def test_replay_no_profile_expired_certificate_of_an_nginx_started_with_c_is_tls_expired(kb) -> None:
    result = _replay(kb, "expired-certificate-no-profile")
    nginx = next(s for s in result.discovery.services if s.kind == "nginx")
    assert not nginx.config.startswith("/etc/")  # started with -c, outside /etc
    expired = result.finding("tls.cert_expired")
    assert expired.state is P
    assert {e["where"] for e in expired.evidence["expired"]} & {p for p, _ in result.discovery.certificates}
    assert result.differential.leader.condition == "tls-expired"
