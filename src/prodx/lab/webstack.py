"""A real nginx + PHP-FPM pair run from the sandbox, for scenarios users see through HTTP.

Both run with their own config, pid file, socket and logs under the sandbox root, never
/etc/nginx or the system php-fpm service::

    nginx -p ROOT/nginx/ -c ROOT/nginx/nginx.conf -e ROOT/nginx-error.log -g 'daemon off;'
    php-fpm8.2 --nodaemonize --fpm-config ROOT/php-fpm.conf -c ROOT/php.ini

Both masters start as root (so they can switch to the app user) in their own process
groups, which the sandbox kills at teardown. nginx listens on 127.0.0.1 on a free port.
The app is two pages: ``login.php`` stores ``$_SESSION['user']`` and redirects to
``account.php``, which prints ``logged in as NAME`` only if the session came back.
"""

from __future__ import annotations

import glob
import http.client
import re
import shutil
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from prodx.lab.sandbox import Account, NetNs, Sandbox, free_port, wait_until

LOGGED_IN = "logged in as "

_LOGIN_PHP = """<?php
session_start();
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $_SESSION['user'] = $_POST['user'] ?? 'alice';
    header('Location: /account.php', true, 303);
    exit;
}
echo '<form method="post" action="/login.php"><input name="user"><button>Log in</button></form>';
"""

_ACCOUNT_PHP = """<?php
session_start();
if (!empty($_SESSION['user'])) {
    echo 'logged in as ' . htmlspecialchars($_SESSION['user']);
} else {
    echo '<form method="post" action="/login.php"><input name="user"><button>Log in</button></form>';
}
"""

_FASTCGI_PARAMS = """fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
fastcgi_param QUERY_STRING $query_string;
fastcgi_param REQUEST_METHOD $request_method;
fastcgi_param CONTENT_TYPE $content_type;
fastcgi_param CONTENT_LENGTH $content_length;
fastcgi_param SCRIPT_NAME $fastcgi_script_name;
fastcgi_param REQUEST_URI $request_uri;
fastcgi_param DOCUMENT_URI $document_uri;
fastcgi_param DOCUMENT_ROOT $document_root;
fastcgi_param SERVER_PROTOCOL $server_protocol;
fastcgi_param REMOTE_ADDR $remote_addr;
fastcgi_param REMOTE_PORT $remote_port;
fastcgi_param SERVER_ADDR $server_addr;
fastcgi_param SERVER_PORT $server_port;
fastcgi_param SERVER_NAME $server_name;
"""


def find_php_fpm() -> str | None:
    """The newest versioned php-fpm binary Debian installed (``/usr/sbin/php-fpm8.2``), or None."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", Path(path).name))

    found = sorted(glob.glob("/usr/sbin/php-fpm[0-9]*"), key=version)
    return found[-1] if found else (shutil.which("php-fpm") or None)


def find_nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def webstack_unmet() -> str | None:
    """Why the web stack cannot run here, or None."""
    missing = [pkg for pkg, found in (("nginx-light", find_nginx()), ("php-fpm", find_php_fpm())) if not found]
    return f"needs Debian package{'s' if len(missing) > 1 else ''} {', '.join(missing)}" if missing else None



@dataclass
class LoginResult:
    """What a browser would see: the login POST's status, then the account page."""

    login_status: int
    account_status: int
    account_body: str

    @property
    def logged_in(self) -> bool:
        return LOGGED_IN in self.account_body


class WebStack:
    """nginx + PHP-FPM serving ``docroot`` as ``user``, sessions in ``session_dir``; PHP-FPM
    inside ``netns`` when given (nginx reaches it through its Unix socket all the same)."""

    def __init__(self, sb: Sandbox, user: Account, docroot: Path, session_dir: Path, netns: NetNs | None = None) -> None:
        self.sb, self.user, self.netns = sb, user, netns
        self.docroot, self.session_dir = sb.check(docroot), sb.check(session_dir)
        self.port = 0
        self.php_fpm = find_php_fpm() or "php-fpm"
        self.nginx = find_nginx() or "nginx"
        self.php_error_log = sb.path("php-errors.log")
        self.fpm_log = sb.path("php-fpm.log")
        self.nginx_error_log = sb.path("nginx-error.log")

    @property
    def service_names(self) -> list[str]:
        return ["nginx", Path(self.php_fpm).name]

    @property
    def logs(self) -> list[str]:
        return [str(self.php_error_log), str(self.fpm_log), str(self.nginx_error_log)]

    def start(self) -> None:
        """Write the configs and the app, start PHP-FPM then nginx, wait until both answer."""
        sb, u = self.sb, self.user
        sb.mkdirs(self.docroot, owner=u)
        sb.write_text(self.docroot / "login.php", _LOGIN_PHP, owner=u)
        sb.write_text(self.docroot / "account.php", _ACCOUNT_PHP, owner=u)
        for log in (self.php_error_log, self.fpm_log, self.nginx_error_log):
            sb.write_text(log, "", owner=u)
        sock = sb.path("php-fpm.sock")
        sb.write_text("php.ini", "; prodx lab: the pool sets what matters\n")
        sb.write_text("php-fpm.conf", f"""[global]
pid = {sb.path('php-fpm.pid')}
error_log = {self.fpm_log}
daemonize = no

[lab]
user = {u.name}
group = {u.name}
listen = {sock}
listen.owner = {u.name}
listen.group = {u.name}
listen.mode = 0660
pm = static
pm.max_children = 2
catch_workers_output = yes
php_admin_value[session.save_handler] = files
php_admin_value[session.save_path] = {self.session_dir}
; Debian turns PHP's own session GC off and relies on a cron job for the default path only.
php_admin_value[session.gc_probability] = 0
php_admin_flag[log_errors] = on
php_admin_flag[display_errors] = off
php_admin_value[error_log] = {self.php_error_log}
""")
        fpm = [self.php_fpm, "--nodaemonize", "--fpm-config", str(sb.path("php-fpm.conf")), "-c", str(sb.path("php.ini"))]
        sb.spawn(self.netns.exec_argv(fpm) if self.netns else fpm, log="php-fpm.out")
        wait_until(lambda: sock.exists(), 15, f"php-fpm did not create {sock}; see {sb.path('php-fpm.out')}")

        self.port = free_port()
        prefix = sb.mkdirs("nginx")
        tmp = sb.mkdirs("nginx/tmp")
        sb.write_text(prefix / "fastcgi_params", _FASTCGI_PARAMS)
        v = sb.run([self.nginx, "-V"]).stderr
        temps = "".join(f"    {kind}_temp_path {tmp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                        if kind == "client_body" or f"without-http_{kind}_module" not in v)
        sb.write_text(prefix / "nginx.conf", f"""worker_processes 1;
user {u.name} {u.name};
pid {sb.path('nginx.pid')};
error_log {self.nginx_error_log};
events {{ worker_connections 64; }}
http {{
    access_log {sb.path('nginx-access.log')};
{temps}    server {{
        listen 127.0.0.1:{self.port};
        root {self.docroot};
        index login.php;
        location ~ \\.php$ {{
            include {prefix / 'fastcgi_params'};
            fastcgi_pass unix:{sock};
        }}
    }}
}}
""")
        argv = [self.nginx, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", str(self.nginx_error_log)]
        sb.run([*argv, "-t", "-q"])
        sb.spawn([*argv, "-g", "daemon off;"], log="nginx.out")
        wait_until(self._answers, 15, f"nginx did not answer on 127.0.0.1:{self.port}; see {self.nginx_error_log}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _request(self, method: str, path: str, body: str = "", cookie: str = "") -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        if cookie:
            headers["Cookie"] = cookie
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        resp.body = resp.read().decode("utf-8", "replace")  # type: ignore[attr-defined]
        conn.close()
        return resp

    def login(self, user: str = "alice") -> LoginResult:
        """POST the login form, follow the redirect with the session cookie like a browser."""
        r1 = self._request("POST", "/login.php", urllib.parse.urlencode({"user": user}))
        cookies = "; ".join(c.split(";", 1)[0] for c in r1.headers.get_all("Set-Cookie") or [])
        location = urllib.parse.urlsplit(r1.headers.get("Location") or "/account.php").path
        r2 = self._request("GET", location, cookie=cookies)
        return LoginResult(r1.status, r2.status, r2.body)  # type: ignore[attr-defined]

    def php_errors(self) -> str:
        """The PHP error log's text (warnings such as 'Failed to write session data')."""
        return self.php_error_log.read_text(errors="replace") + self.fpm_log.read_text(errors="replace")


