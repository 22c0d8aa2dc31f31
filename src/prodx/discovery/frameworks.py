"""Where the app lives and where it must write: server configs, PHP settings, frameworks.

Reads, through the host layer only (every walk bounded):

- nginx configs from the master's ``-c`` (and what they ``include``): ``root``,
  ``error_log`` and ``access_log``, e.g. ``root /var/www/shop/public;``;
- Apache configs: ``DocumentRoot``, ``ErrorLog``, ``CustomLog``;
- PHP-FPM's config and pools: ``user``, ``chdir``,
  ``php_admin_value[session.save_path] = /var/lib/php/sessions``, ``php_admin_value[error_log]``;
  php.ini files (``kb/data/frameworks.yaml`` ``php.ini``) for ``session.save_path``;
- a project root's markers (``bin/console``, ``artisan``, ``manage.py``, ``bin/rails`` ...),
  and a Django project's ``settings.py`` for ``MEDIA_ROOT`` and ``STATIC_ROOT``.

Rules are data (``kb/data/frameworks.yaml``). Empty results mean nothing was found, not
that nothing exists: the notes say what could not be read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from prodx.host.base import Host

_MAX_CONFIG_FILES = 60
_MAX_CONFIG_BYTES = 256 * 1024
_APACHE = re.compile(r"^\s*(DocumentRoot|ErrorLog|CustomLog|Include|IncludeOptional)\s+(\S+)", re.M | re.I)


def parse_nginx(text: str) -> dict[str, list[str]]:
    """The directives of one nginx config file that discovery uses, by name.

    >>> parse_nginx('''http {
    ...   access_log /var/log/nginx/shop.access.log combined;
    ...   include /etc/nginx/sites-enabled/*;
    ...   server { listen 80; root /var/www/shop/public; # the app
    ...   error_log off; }
    ... }''')
    {'access_log': ['/var/log/nginx/shop.access.log'], 'include': ['/etc/nginx/sites-enabled/*'], 'listen': ['80'], 'root': ['/var/www/shop/public']}
    """
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        for statement in line.split("#", 1)[0].replace("{", ";").replace("}", ";").split(";"):
            words = statement.split()
            if len(words) >= 2 and words[0] in ("root", "error_log", "access_log", "include", "listen"):
                value = words[1].strip("'\"")
                if value not in ("off", "stderr", "syslog") and not value.startswith("syslog:"):
                    out.setdefault(words[0], []).append(value)
    return dict(sorted(out.items()))


def parse_apache(text: str) -> dict[str, list[str]]:
    """The Apache directives discovery uses (``${APACHE_LOG_DIR}`` is Debian's /var/log/apache2).

    >>> parse_apache('DocumentRoot /var/www/shop/public\\nErrorLog ${APACHE_LOG_DIR}/error.log\\nIncludeOptional sites-enabled/*.conf')
    {'documentroot': ['/var/www/shop/public'], 'errorlog': ['/var/log/apache2/error.log'], 'includeoptional': ['sites-enabled/*.conf']}
    """
    out: dict[str, list[str]] = {}
    for m in _APACHE.finditer(text):
        value = m.group(2).strip("'\"").replace("${APACHE_LOG_DIR}", "/var/log/apache2")
        out.setdefault(m.group(1).lower(), []).append(value)
    return dict(sorted(out.items()))


@dataclass
class PhpPool:
    """One PHP-FPM pool: who runs it and where it keeps sessions and errors."""

    name: str
    user: str = ""
    chdir: str = ""
    session_save_path: str = ""
    error_log: str = ""
    source: str = ""


def parse_fpm(text: str) -> tuple[dict[str, str], list[PhpPool]]:
    """PHP-FPM config: the [global] settings and each pool's user, chdir, session and error log.

    >>> g, pools = parse_fpm('''[global]
    ... error_log = /var/log/php8.2-fpm.log
    ... include=/etc/php/8.2/fpm/pool.d/*.conf
    ... [www]
    ... user = www-data
    ... php_admin_value[session.save_path] = "/srv/shop/sessions"
    ... php_value[error_log] = /var/log/shop/php.log''')
    >>> g["include"], pools[0].user, pools[0].session_save_path, pools[0].error_log
    ('/etc/php/8.2/fpm/pool.d/*.conf', 'www-data', '/srv/shop/sessions', '/var/log/shop/php.log')
    """
    glob_: dict[str, str] = {}
    pools: list[PhpPool] = []
    section = ""
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip() if not raw.lstrip().startswith("php_") else raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.match(r"^\[([^\]]+)\]$", line)
        if header:
            section = header.group(1)
            if section != "global":
                pools.append(PhpPool(section))
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), _ini_value(value)
        if section in ("", "global"):
            glob_[key] = value
            continue
        pool = pools[-1]
        if key == "user":
            pool.user = value
        elif key == "chdir":
            pool.chdir = value
        elif key in ("php_admin_value[session.save_path]", "php_value[session.save_path]"):
            pool.session_save_path = save_path_dir(value)
        elif key in ("php_admin_value[error_log]", "php_value[error_log]"):
            pool.error_log = value
    return glob_, pools


def _ini_value(value: str) -> str:
    value = value.strip()
    if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) > 1:
        return value[1:-1]
    return value.split(";", 1)[0].strip()


def save_path_dir(value: str) -> str:
    """The folder of a ``session.save_path`` value ("N;MODE;/path" keeps the path last).

    >>> save_path_dir('"2;/var/lib/php/sessions"'), save_path_dir("/tmp/s"), save_path_dir("tcp://127.0.0.1:6379")
    ('/var/lib/php/sessions', '/tmp/s', '')
    """
    path = value.strip().strip("\"'").rsplit(";", 1)[-1].strip()
    return path if path.startswith("/") else ""


def parse_ini(text: str) -> dict[str, str]:
    """The settings of a php.ini file (later ones win, comments dropped).

    >>> parse_ini("; comment\\n[Session]\\nsession.save_path = \\"/var/lib/php/sessions\\"\\nerror_log = /var/log/php.log")
    {'session.save_path': '/var/lib/php/sessions', 'error_log': '/var/log/php.log'}
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#[":
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = _ini_value(value)
    return out


def parse_django_settings(text: str, base_dir: str) -> dict[str, str]:
    """MEDIA_ROOT and STATIC_ROOT of a Django settings file, best effort: absolute string
    literals, ``BASE_DIR / "x"`` and ``os.path.join(BASE_DIR, "x")``, with BASE_DIR the project.

    >>> parse_django_settings('MEDIA_ROOT = BASE_DIR / "media"\\nSTATIC_ROOT = os.path.join(BASE_DIR, \\'static\\')\\nX=1', "/srv/app")
    {'MEDIA_ROOT': '/srv/app/media', 'STATIC_ROOT': '/srv/app/static'}
    >>> parse_django_settings('MEDIA_ROOT = "/var/www/media/"', "/srv/app")
    {'MEDIA_ROOT': '/var/www/media'}
    """
    out: dict[str, str] = {}
    for key in ("MEDIA_ROOT", "STATIC_ROOT"):
        m = re.search(rf"^{key}\s*=\s*(.+)$", text, re.M)
        if not m:
            continue
        expr = m.group(1).strip()
        lit = re.fullmatch(r"[rf]?(['\"])(/[^'\"]*)\1", expr)
        rel = re.fullmatch(r"BASE_DIR\s*/\s*(['\"])([^'\"]+)\1", expr) or re.fullmatch(
            r"os\.path\.join\(\s*BASE_DIR\s*,\s*(['\"])([^'\"]+)\1\s*\)", expr)
        if lit:
            out[key] = lit.group(2).rstrip("/") or "/"
        elif rel:
            out[key] = os.path.join(base_dir, rel.group(2)).rstrip("/")
    return out


@dataclass
class Layout:
    """What the configs and project folders say: where the app is, writes and logs.

    Each entry is (path, where it came from) so a person can check it.
    """

    app_roots: list[tuple[str, str]] = field(default_factory=list)
    writable: list[tuple[str, str]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    pools: list[PhpPool] = field(default_factory=list)
    frameworks: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Certificate files the servers' configs name (chain files apart), as (path, why).
    certificates: list[tuple[str, str]] = field(default_factory=list)
    chain_files: list[tuple[str, str]] = field(default_factory=list)
    #: TLS listeners: (host:port to connect to, server name to ask for, why).
    tls_endpoints: list[tuple[str, str, str]] = field(default_factory=list)
    #: Backends the web servers hand requests to: (unix:/path or host:port, why).
    upstreams: list[tuple[str, str]] = field(default_factory=list)
    #: Programs a supervisor starts, as (process name, why): services that should run.
    supervised: list[tuple[str, str]] = field(default_factory=list)
    #: Writable folder → the user who writes there (a pool's session folder → its user), for
    #: hosts where several apps run as different users.
    writable_users: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, path: str, why: str) -> None:
        items: list[tuple[str, str]] = getattr(self, kind)
        path = os.path.normpath(path)
        if path not in (p for p, _ in items):
            items.append((path, why))


def _read(host: Host, path: str, layout: Layout) -> str | None:
    try:
        return host.read_text(path, _MAX_CONFIG_BYTES)
    except (IsADirectoryError, NotADirectoryError):
        return None
    except FileNotFoundError:
        return None
    except OSError as exc:
        layout.notes.append(f"cannot read {path}: {exc.strerror or exc}")
        return None


def _expand(host: Host, pattern: str, base: str) -> list[str]:
    if not pattern.startswith("/"):
        pattern = os.path.join(base, pattern)
    if any(c in pattern for c in "*?["):
        return host.glob(pattern)
    return [pattern]


def walk_configs(host: Host, first: str, layout: Layout, parse: Any, include_keys: tuple[str, ...],
                 base: str = "") -> list[tuple[str, dict[str, list[str]], str]]:
    """(path, parsed, text) of ``first`` and every file it includes, at most
    _MAX_CONFIG_FILES; relative includes are relative to ``base`` (default: first's folder)."""
    base = base or os.path.dirname(first)
    todo, seen, out = [first], set(), []
    while todo and len(seen) < _MAX_CONFIG_FILES:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        text = _read(host, path, layout)
        if text is None:
            continue
        parsed = parse(text)
        out.append((path, parsed, text))
        for key in include_keys:
            for pattern in parsed.get(key, []):
                todo += [p for p in _expand(host, pattern, base) if p not in seen]
    return out


def _is_dir(host: Host, path: str) -> bool:
    import stat as statmod

    try:
        return statmod.S_ISDIR(host.stat(path).st_mode)
    except OSError:
        return False


def read_layout(host: Host, services: list[Any], rules: dict[str, Any]) -> Layout:
    """Read the configs of the running ``services`` (from ``find_services``) and the project
    folders they point at."""
    layout = Layout()
    candidates: list[tuple[str, str]] = []
    from prodx.discovery.configs import read_apache_extras, read_database_config, read_nginx_extras, read_supervisor

    for svc in services:
        if svc.kind == "nginx" and svc.config:
            walked = walk_configs(host, svc.config, layout, parse_nginx, ("include",))
            svc.config_files = [path for path, _d, _t in walked]
            for path, d, _text in walked:
                for root in d.get("root", []):
                    candidates.append((root, f"nginx root in {path}"))
                for log in d.get("error_log", []) + d.get("access_log", []):
                    if log.startswith("/"):
                        layout.add("logs", log, f"nginx config {path}")
            read_nginx_extras(host, svc, walked, layout)
        elif svc.kind == "apache" and svc.config:
            walked = walk_configs(host, svc.config, layout, parse_apache, ("include", "includeoptional"),
                                  base=_server_root(svc))
            svc.config_files = [path for path, _d, _t in walked]
            for path, d, _text in walked:
                for root in d.get("documentroot", []):
                    candidates.append((root, f"Apache DocumentRoot in {path}"))
                for log in d.get("errorlog", []) + d.get("customlog", []):
                    if log.startswith("/"):
                        layout.add("logs", log, f"Apache config {path}")
            read_apache_extras(host, svc, walked, layout, _server_root(svc))
        elif svc.kind == "php-fpm" and svc.config:
            _read_fpm(host, svc, layout, rules, candidates)
        elif svc.role in ("database", "cache") and svc.config:
            read_database_config(host, svc, layout)
        elif svc.kind == "supervisor" and svc.config:
            read_supervisor(host, svc, layout)
        if svc.app_cwd:
            for cwd in svc.cwd:
                if cwd != "/":
                    candidates.append((cwd, f"working folder of {svc.name} (pid {svc.pid})"))
    for path, why in candidates:
        root = _project_root(host, path, rules)
        if root:
            layout.add("app_roots", root, why)
    for root, why in list(layout.app_roots):
        _framework_dirs(host, root, rules, layout)
    return layout


def _server_root(svc: Any) -> str:
    """Apache's ServerRoot: its ``-d`` at start, else the config file's folder."""
    from prodx.discovery.stack import command_words, flag_value
    from prodx.host.base import ProcessInfo

    root = flag_value(command_words(ProcessInfo(svc.pid, svc.name, cmdline=svc.cmdline)), ["-d"])
    return root or os.path.dirname(svc.config)


def _read_fpm(host: Host, svc: Any, layout: Layout, rules: dict[str, Any], candidates: list[tuple[str, str]]) -> None:
    text = _read(host, svc.config, layout)
    if text is None:
        return
    glob_, pools = parse_fpm(text)
    for pattern in glob_.get("include", "").split():
        for path in _expand(host, pattern, os.path.dirname(svc.config)):
            more = _read(host, path, layout)
            if more is not None:
                _, extra = parse_fpm(more)
                for pool in extra:
                    pool.source = path
                pools += extra
    for pool in pools:
        pool.source = pool.source or svc.config
    if glob_.get("error_log", "").startswith("/"):
        layout.add("logs", glob_["error_log"], f"php-fpm error_log in {svc.config}")
    ini: dict[str, str] = {}
    for pattern in rules["php"]["ini"]:
        for path in host.glob(pattern):
            if svc.exe and "/php" in path and re.search(r"/php/(\d+\.\d+)/", path):
                version = re.search(r"(\d+\.\d+)", os.path.basename(svc.exe) or "")
                if version and f"/php/{version.group(1)}/" not in path:
                    continue
            text = _read(host, path, layout)
            if text is not None:
                ini.update(parse_ini(text))
    default_sessions = save_path_dir(ini.get("session.save_path", "")) or rules["php"]["session_save_path_default"]
    for pool in pools:
        layout.pools.append(pool)
        sessions = pool.session_save_path or default_sessions
        why = (f"session.save_path of pool [{pool.name}] in {pool.source}" if pool.session_save_path
               else f"PHP's session.save_path for pool [{pool.name}] (php.ini or the default)")
        layout.add("writable", sessions, why)
        if pool.user and pool.user != "root":
            layout.writable_users.setdefault(os.path.normpath(sessions), pool.user)
        error_log = pool.error_log or ini.get("error_log", "")
        if error_log.startswith("/"):
            layout.add("logs", error_log, f"PHP error_log of pool [{pool.name}]")
        if pool.chdir and pool.chdir != "/":
            candidates.append((pool.chdir, f"chdir of pool [{pool.name}]"))


def _project_root(host: Host, path: str, rules: dict[str, Any]) -> str:
    """``path`` or the nearest of its two parents that looks like a project (a framework
    marker, a lockfile or .git); "" when none does."""
    probe = os.path.normpath(path)
    markers = [m for fw in rules["frameworks"] for m in fw["markers"]] + list(rules.get("lockfiles", [])) + [".git"]
    for _ in range(3):
        if probe in ("/", "") or not _is_dir(host, probe):
            break
        if any(host.exists(os.path.join(probe, m)) for m in markers):
            return probe
        probe = os.path.dirname(probe)
    return ""


def _framework_dirs(host: Host, root: str, rules: dict[str, Any], layout: Layout) -> None:
    for fw in rules["frameworks"]:
        if not any(host.exists(os.path.join(root, m)) for m in fw["markers"]):
            continue
        layout.frameworks.append((root, fw["id"]))
        for rel in fw["writable"]:
            path = os.path.join(root, rel)
            if _is_dir(host, path):
                layout.add("writable", path, f"{fw['id']} project at {root}")
        for rel in fw.get("logs", []):
            path = os.path.join(root, rel)
            if host.exists(path):
                layout.add("logs", path, f"{fw['id']} project at {root}")
        for pattern in fw.get("settings", []):
            for settings in host.glob(os.path.join(root, pattern))[:10]:
                text = _read(host, settings, layout)
                if text is None:
                    continue
                for key, path in parse_django_settings(text, root).items():
                    if key in fw.get("settings_keys", []) and _is_dir(host, path):
                        layout.add("writable", path, f"{key} in {settings}")
