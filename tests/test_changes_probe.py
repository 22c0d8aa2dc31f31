"""The "what changed?" probes on real files: dpkg logs written in dpkg's own format with recent
times, a real git repository with a fresh commit, real lockfiles and configs with real mtimes
(a fixture host rooted in tmp_path serves them at their host paths), and the real `nginx -t`
on nginx configs broken on purpose."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from prodx.discovery import Discovery
from prodx.discovery.stack import Service, config_test_argv, rules
from prodx.host.fixture import FixtureHost
from prodx.host.local import LocalHost
from prodx.model import FindingState
from prodx.probes.base import ProbeContext, Target
from prodx.probes.changes import ChangesProbe, ConfigTestProbe
from prodx.probes.runner import run_probes

HOUR = 3600


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _host(root: Path, now: float) -> FixtureHost:
    (root / "host.json").write_text(json.dumps({"now": now, "is_root": True, "hostname": "fixture"}))
    (root / "root").mkdir(exist_ok=True)
    return FixtureHost(root)


def _put(root: Path, path: str, text: str, mtime: float | None = None) -> Path:
    p = root / "root" / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    return p


def _run(host, kb, target: Target | None = None, found: Discovery | None = None, probe=None):
    ctx = ProbeContext(host, target or Target(), kb)
    ctx.fact("discovery", lambda: found or Discovery())
    findings, runs = run_probes([probe or ChangesProbe()], ctx, 5.0)
    assert all(r.status.value == "ok" for r in runs), runs
    return {f.id: f for f in findings}


def test_packages_probe_with_a_recent_dpkg_upgrade_reports_it_with_versions(tmp_path, kb):
    now = time.time()
    _put(tmp_path, "/var/log/dpkg.log", "\n".join([
        f"{_stamp(now - 5 * 86400)} upgrade libc6:amd64 2.36-9 2.36-9+deb12u1",
        f"{_stamp(now - HOUR)} startup archives unpack",
        f"{_stamp(now - HOUR)} upgrade php8.2-fpm:amd64 8.2.7-1~deb12u1 8.2.20-1~deb12u1",
        f"{_stamp(now - HOUR)} status half-configured php8.2-fpm:amd64 8.2.20-1~deb12u1",
        f"{_stamp(now - HOUR + 2)} install php8.2-intl:amd64 <none> 8.2.20-1~deb12u1",
    ]) + "\n")
    _put(tmp_path, "/var/log/apt/history.log",
         f"Start-Date: {_stamp(now - HOUR - 5).replace(' ', '  ')}\nCommandline: apt-get upgrade -y\nEnd-Date: x\n")
    found = _run(_host(tmp_path, now), kb)
    f = found["change.packages_recent"]
    assert f.state is FindingState.PRESENT
    whats = [e["what"] for e in f.evidence["events"]]
    assert whats == ["apt upgraded php8.2-fpm 8.2.7 → 8.2.20", "apt installed php8.2-intl 8.2.20-1~deb12u1"]
    assert f.evidence["commands"][0]["commandline"] == "apt-get upgrade -y"


def test_packages_probe_with_only_old_dpkg_lines_reports_absent(tmp_path, kb):
    now = time.time()
    _put(tmp_path, "/var/log/dpkg.log", f"{_stamp(now - 9 * 86400)} upgrade libc6:amd64 2.36-9 2.36-9+deb12u1\n")
    assert _run(_host(tmp_path, now), kb)["change.packages_recent"].state is FindingState.ABSENT


def test_changes_probe_with_no_package_log_and_no_app_says_unknown_not_absent(tmp_path, kb):
    found = _run(_host(tmp_path, time.time()), kb)
    for fid in ("change.packages_recent", "change.app_dependencies_recent", "change.deploy_recent",
                "change.reboot_recent", "change.config_recent"):
        assert found[fid].state is FindingState.UNKNOWN, fid
        assert found[fid].reason


def test_reboot_probe_reads_btime_from_proc_stat(tmp_path, kb):
    now = time.time()
    _put(tmp_path, "/proc/stat", f"cpu  1 2 3 4\nbtime {int(now - 2 * HOUR)}\nprocesses 9\n")
    f = _run(_host(tmp_path, now), kb)["change.reboot_recent"]
    assert f.state is FindingState.PRESENT and f.evidence["uptime_s"] == pytest.approx(2 * HOUR, abs=2)
    _put(tmp_path, "/proc/stat", f"btime {int(now - 30 * 86400)}\n")
    assert _run(_host(tmp_path, now), kb)["change.reboot_recent"].state is FindingState.ABSENT


def _git(repo: Path, *args: str, when: float | None = None) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), "GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "d@x",
           "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "d@x"}
    if when is not None:
        # The reflog line takes the committer date.
        env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"] = f"@{int(when)} +0000"
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env, timeout=30)


@pytest.mark.skipif(not shutil.which("git"), reason="needs Debian package git")
def test_deploy_probe_on_a_real_git_checkout_with_a_fresh_commit_reports_the_deploy(tmp_path, kb):
    now = time.time()
    app = tmp_path / "root/srv/shop"
    (app / "var/cache").mkdir(parents=True)
    (app / "bin").mkdir()
    (app / "bin/console").write_text("#!/usr/bin/env php\n")
    _git(app, "init", "-q")
    _git(app, "add", "-A")
    _git(app, "commit", "-q", "-m", "Release 2.4: new checkout flow")
    (app / "composer.lock").write_text('{"packages": []}\n')
    found = _run(_host(tmp_path, now), kb, Target(writable=["/srv/shop/var/cache"]))
    deploy = found["change.deploy_recent"]
    assert deploy.state is FindingState.PRESENT
    assert "Release 2.4: new checkout flow" in deploy.summary
    deps = found["change.app_dependencies_recent"]
    assert deps.state is FindingState.PRESENT and deps.evidence["events"][0]["path"] == "/srv/shop/composer.lock"


@pytest.mark.skipif(not shutil.which("git"), reason="needs Debian package git")
def test_deploy_probe_on_a_git_checkout_untouched_for_days_reports_absent(tmp_path, kb):
    now = time.time()
    old = now - 6 * 86400
    app = tmp_path / "root/srv/shop"
    app.mkdir(parents=True)
    (app / "index.php").write_text("<?php echo 1;\n")
    _git(app, "init", "-q", when=old)
    _git(app, "add", "-A", when=old)
    _git(app, "commit", "-q", "-m", "old release", when=old)
    lock = app / "composer.lock"
    lock.write_text("{}\n")
    os.utime(lock, (old, old))
    found = _run(_host(tmp_path, now), kb, Target(logs=["/srv/shop/var/log/prod.log"]))
    assert found["change.deploy_recent"].state is FindingState.ABSENT
    assert found["change.app_dependencies_recent"].state is FindingState.ABSENT


def test_deploy_probe_sees_a_release_symlink_switched_just_now(tmp_path, kb):
    now = time.time()
    base = tmp_path / "root/var/www/shop"
    (base / "releases/20240514031200").mkdir(parents=True)
    (base / "releases/20240514031200/composer.json").write_text("{}\n")
    (base / "current").symlink_to("releases/20240514031200")
    found = _run(_host(tmp_path, now), kb, found=Discovery(app_roots=[("/var/www/shop/current", "nginx root")]))
    f = found["change.deploy_recent"]
    assert f.state is FindingState.PRESENT and "switched to releases/20240514031200" in f.summary


def test_config_probe_reports_an_edited_etc_file_but_not_one_a_package_install_wrote(tmp_path, kb):
    now = time.time()
    _put(tmp_path, "/var/log/dpkg.log", f"{_stamp(now - 3 * HOUR)} upgrade php8.2-fpm:amd64 8.2.7-1 8.2.20-1\n")
    _put(tmp_path, "/etc/php/8.2/fpm/php.ini", "memory_limit = 128M\n", mtime=now - 3 * HOUR + 20)
    _put(tmp_path, "/etc/nginx/nginx.conf", "events {}\n", mtime=now - 40 * 86400)
    _put(tmp_path, "/etc/nginx/sites-enabled/shop", "server { listen 80; }\n", mtime=now - 600)
    f = _run(_host(tmp_path, now), kb)["change.config_recent"]
    assert f.state is FindingState.PRESENT
    assert [e["path"] for e in f.evidence["events"]] == ["/etc/nginx/sites-enabled/shop"]
    assert f.evidence["by_packages"] == ["/etc/php/8.2/fpm/php.ini"]


def test_errors_after_change_dates_the_first_php_fatal_after_a_lockfile_change(tmp_path, kb):
    now = time.time()
    lock_time = now - 40 * 60
    app = tmp_path / "root/srv/shop"
    (app / "var/log").mkdir(parents=True)
    (app / "artisan").write_text("#!/usr/bin/env php\n")
    lock = app / "composer.lock"
    lock.write_text("{}\n")
    os.utime(lock, (lock_time, lock_time))
    first = datetime.fromtimestamp(lock_time + 120).astimezone()
    lines = [f"[{datetime.fromtimestamp(lock_time - 600).astimezone().isoformat()}] production.INFO: ok"]
    lines += [f"[{first.isoformat()}] production.ERROR: Class \"Illuminate\\Support\\Str\" not found"] * 3
    (app / "var/log/laravel.log").write_text("\n".join(lines) + "\n")
    found = _run(_host(tmp_path, now), kb, Target(logs=["/srv/shop/var/log/laravel.log"]))
    f = found["change.errors_after_change"]
    assert f.state is FindingState.PRESENT, f.reason or f.summary
    assert f.evidence["change"]["path"] == "/srv/shop/composer.lock"
    assert f.evidence["gap_s"] == pytest.approx(120, abs=2)


def test_errors_after_change_with_errors_older_than_every_change_reports_absent(tmp_path, kb):
    now = time.time()
    app = tmp_path / "root/srv/shop"
    (app / "var/log").mkdir(parents=True)
    (app / "composer.lock").write_text("{}\n")  # changed just now, after the errors began
    old = datetime.fromtimestamp(now - 20 * HOUR).astimezone().isoformat()
    (app / "var/log/prod.log").write_text(f"[{old}] PHP Fatal error:  Uncaught Error: Call to undefined function x()\n")
    f = _run(_host(tmp_path, now), kb, Target(logs=["/srv/shop/var/log/prod.log"]))["change.errors_after_change"]
    assert f.state is FindingState.ABSENT


# ---- the real nginx -t -------------------------------------------------------------------

_NGINX_CONF = """worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 16; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    server {{
        listen 127.0.0.1:1;
        root {d}/public;
    }}
}}
"""


def _nginx_service(conf: Path) -> Service:
    rule = next(r for r in rules()["services"] if r["kind"] == "nginx")
    exe = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    svc = Service("nginx", "web", "nginx", 4242, "root", exe=exe or "", config=str(conf),
                  cmdline=(f"nginx: master process {exe} -c {conf}",))
    svc.config_test = config_test_argv(rule["config_test"], svc)
    return svc


needs_nginx = pytest.mark.skipif(
    not (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")), reason="needs Debian package nginx-light"
)


@needs_nginx
def test_config_test_probe_with_a_real_nginx_config_missing_a_semicolon_reports_the_line(tmp_path, kb):
    conf = tmp_path / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(d=tmp_path).replace("listen 127.0.0.1:1;", "listen 127.0.0.1:1"))
    found = _run(LocalHost(), kb, found=Discovery(services=[_nginx_service(conf)]), probe=ConfigTestProbe())
    f = found["change.config_invalid"]
    assert f.state is FindingState.PRESENT
    assert "[emerg]" in f.summary and f"{conf}:10" in f.summary
    # A failing test leaves nothing behind: no log, pid or temp folder was created.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nginx.conf"]


@needs_nginx
def test_config_test_probe_with_a_valid_nginx_config_reports_absent_and_keeps_existing_files(tmp_path, kb):
    conf = tmp_path / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(d=tmp_path))
    for name, text in (("error.log", "old line\n"), ("access.log", ""), ("nginx.pid", "12345\n")):
        (tmp_path / name).write_text(text)
    (tmp_path / "body").mkdir()
    found = _run(LocalHost(), kb, found=Discovery(services=[_nginx_service(conf)]), probe=ConfigTestProbe())
    assert found["change.config_invalid"].state is FindingState.ABSENT
    assert (tmp_path / "error.log").read_text() == "old line\n"
    assert (tmp_path / "nginx.pid").read_text() == "12345\n"


def test_config_test_probe_with_no_testable_server_says_unknown(tmp_path, kb):
    found = _run(_host(tmp_path, time.time()), kb, probe=ConfigTestProbe())
    assert found["change.config_invalid"].state is FindingState.UNKNOWN


# ---- a dependency update against a deploy of the app's own code ---------------------------

def _app_tree(base: Path, *, when: float) -> Path:
    """A Symfony-shaped app: own code in src/ and templates/, a vendored library, a lockfile,
    caches and logs, every file dated ``when``."""
    for rel, text in (("bin/console", "#!/usr/bin/env php\n"), ("src/Controller/Shop.php", "<?php // shop\n"),
                      ("templates/shop.html.twig", "{{ greeting }}\n"), ("public/index.php", "<?php require 'x';\n"),
                      ("composer.lock", '{"packages": [{"name": "acme/greeter", "version": "1.0.0"}]}\n'),
                      ("vendor/composer/installed.json", '{"packages": []}\n'),
                      ("vendor/acme/greeter/src/Greeter.php", "<?php // 1.0\n"),
                      ("var/cache/prod/Container.php", "<?php // compiled\n"), ("var/log/prod.log", "")):
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for p in [base, *base.rglob("*")]:
        os.utime(p, (when, when), follow_symlinks=False)
    return base


def _touch(path: Path, text: str, when: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if when is not None:
        os.utime(path, (when, when))


def test_a_composer_update_is_a_dependency_change_not_new_app_code(tmp_path, kb):
    now = time.time()
    app = _app_tree(tmp_path / "root/srv/shop", when=now - 6 * 86400)
    # What `composer update` writes: the lockfile, vendor/ and its manifest; the app's cache
    # and log move too as it runs. The app's own code stays as deployed days ago.
    _touch(app / "composer.lock", '{"packages": [{"name": "acme/greeter", "version": "2.0.0"}]}\n', now - 600)
    _touch(app / "vendor/composer/installed.json", '{"packages": [2]}\n', now - 600)
    _touch(app / "vendor/acme/greeter/src/Greeter.php", "<?php // 2.0\n", now - 600)
    _touch(app / "var/cache/prod/Container.php", "<?php // rebuilt\n", now - 500)
    found = _run(_host(tmp_path, now), kb, Target(writable=["/srv/shop/var/cache"]))
    deps, code = found["change.app_dependencies_recent"], found["change.app_code_recent"]
    assert deps.state is FindingState.PRESENT
    assert {e["path"] for e in deps.evidence["events"]} == {"/srv/shop/composer.lock",
                                                            "/srv/shop/vendor/composer/installed.json"}
    assert code.state is FindingState.ABSENT, code.summary
    assert code.evidence["files"] == 3  # src/, templates/ and public/ are counted; vendor/ and var/ are not


def test_new_own_code_with_the_lockfile_untouched_is_code_not_dependencies(tmp_path, kb):
    now = time.time()
    app = _app_tree(tmp_path / "root/srv/shop", when=now - 6 * 86400)
    _touch(app / "src/Controller/Shop.php", "<?php // broken\n", now - 300)
    found = _run(_host(tmp_path, now), kb, Target(writable=["/srv/shop/var/cache"]))
    code = found["change.app_code_recent"]
    assert code.state is FindingState.PRESENT
    assert [e["path"] for e in code.evidence["events"]] == ["/srv/shop/src/Controller/Shop.php"]
    assert found["change.app_dependencies_recent"].state is FindingState.ABSENT


def test_a_new_release_that_copied_the_lockfile_unchanged_is_not_a_dependency_change(tmp_path, kb):
    now = time.time()
    base = tmp_path / "root/var/www/shop"
    _app_tree(base / "releases/41", when=now - 9 * 86400)
    new = _app_tree(base / "releases/42", when=now - 120)  # every file of a fresh release is new
    (base / "current").symlink_to("releases/42")
    found = _run(_host(tmp_path, now), kb, found=Discovery(app_roots=[("/var/www/shop/current", "nginx root")]))
    deps = found["change.app_dependencies_recent"]
    assert deps.state is FindingState.ABSENT, deps.summary
    assert "/var/www/shop/current/composer.lock" in deps.evidence["same_as_previous_release"]
    assert found["change.app_code_recent"].state is FindingState.PRESENT
    assert found["change.deploy_recent"].state is FindingState.PRESENT
    # The same release with a new lockfile is a dependency change too.
    _touch(new / "composer.lock", '{"packages": [{"name": "acme/greeter", "version": "2.0.0"}]}\n', now - 120)
    deps = _run(_host(tmp_path, now), kb, found=Discovery(app_roots=[("/var/www/shop/current", "nginx root")]))[
        "change.app_dependencies_recent"]
    assert deps.state is FindingState.PRESENT


def test_a_pip_install_into_the_apps_virtualenv_is_a_dependency_change(tmp_path, kb):
    now = time.time()
    app = tmp_path / "root/srv/api"
    _touch(app / "manage.py", "import django\n", now - 9 * 86400)
    _touch(app / "api/views.py", "def index(r): pass\n", now - 9 * 86400)
    site = app / ".venv/lib/python3.11/site-packages"
    _touch(site / "requests-2.32.0.dist-info/METADATA", "Name: requests\n", now - 900)
    os.utime(site, (now - 900, now - 900))
    found = _run(_host(tmp_path, now), kb, Target(writable=["/srv/api/media"]),
                 found=Discovery(app_roots=[("/srv/api", "gunicorn cwd")]))
    deps = found["change.app_dependencies_recent"]
    assert deps.state is FindingState.PRESENT
    assert deps.evidence["events"][0]["path"] == "/srv/api/.venv/lib/python3.11/site-packages"
    assert found["change.app_code_recent"].state is FindingState.ABSENT
