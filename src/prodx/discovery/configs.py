"""What the running servers' configs say beyond roots and logs: certificate files, TLS
listeners, the backends a web server hands requests to, databases' own logs and
certificates, and the programs a supervisor starts (services that should run, running or not).

Reads, through the host, the config files discovery found from each master's command line
(``nginx -p PREFIX -c FILE``, ``apache2 -d ROOT -f FILE``, ``postgres -D DATA -c
config_file=FILE``, ``redis-server FILE``, ``mysqld --defaults-file=FILE``, ``supervisord -c
FILE``), e.g.::

    server { listen 127.0.0.1:8443 ssl; server_name shop.example.com;
             ssl_certificate /srv/tls/fullchain.pem;
             location ~ \\.php$ { fastcgi_pass unix:/srv/run/php-fpm.sock; } }

Relative paths are resolved as each server does (nginx: its prefix's conf folder, Apache:
ServerRoot, PostgreSQL: the data directory). Nothing found adds nothing.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

from prodx.discovery.frameworks import Layout, _read
from prodx.discovery.stack import Service, command_words, flag_value
from prodx.host.base import Host, ProcessInfo
from prodx.parsers.nginx import backend_address, parse_nginx_blocks
from prodx.parsers.serverconf import (
    parse_apache_tls_proxy,
    parse_my_cnf,
    parse_pg_conf,
    parse_redis_conf,
    parse_supervisor_conf,
)

_ANY = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def _words(svc: Service) -> list[str]:
    return command_words(ProcessInfo(svc.pid, svc.name, cmdline=svc.cmdline))


def _absolute(path: str, base: str) -> str:
    return os.path.normpath(path if path.startswith("/") else os.path.join(base, path))


def _add(items: list[Any], item: tuple[Any, ...]) -> None:
    if item[0] not in (i[0] for i in items):
        items.append(item)


def read_nginx_extras(host: Host, svc: Service, walked: list[tuple[str, Any, str]], layout: Layout) -> None:
    """Certificates, TLS listeners and backends of one nginx from its walked config files."""
    base = os.path.dirname(svc.config)
    parsed = [(path, parse_nginx_blocks(text)) for path, _d, text in walked]
    upstreams: dict[str, list[str]] = {}
    for _path, (_servers, ups) in parsed:
        upstreams.update(ups)
    for path, (servers, _ups) in parsed:
        for server in servers:
            for cert in server.certificates:
                _add(layout.certificates, (_absolute(cert, base), f"ssl_certificate in {path} (nginx pid {svc.pid})"))
            name = next((n for n in server.names if "*" not in n), "")
            for listen_host, port, ssl in server.listens:
                if ssl:
                    address = _ANY.get(listen_host, listen_host)
                    endpoint = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
                    _add(layout.tls_endpoints, (endpoint, name, f"listen ... ssl in {path} (nginx pid {svc.pid})"))
            for directive, value in server.passes:
                for target in backend_address(directive, value, upstreams):
                    _add(layout.upstreams, (target, f"{directive} in {path} (nginx pid {svc.pid})"))


def read_apache_extras(host: Host, svc: Service, walked: list[tuple[str, Any, str]], layout: Layout, root: str) -> None:
    """Certificates and proxied backends of one Apache from its walked config files."""
    for path, _d, text in walked:
        found = parse_apache_tls_proxy(text)
        for cert in found["certificates"]:
            _add(layout.certificates, (_absolute(cert, root), f"SSLCertificateFile in {path} ({svc.name} pid {svc.pid})"))
        for cert in found["chain"]:
            _add(layout.chain_files, (_absolute(cert, root), f"SSLCertificateChainFile in {path}"))
        for target in found["backends"]:
            _add(layout.upstreams, (target, f"proxy in {path} ({svc.name} pid {svc.pid})"))


def read_database_config(host: Host, svc: Service, layout: Layout) -> None:
    """A database's or cache's config: its log file and TLS certificate, where set."""
    text = _read(host, svc.config, layout)
    if text is None:
        return
    why = f"{os.path.basename(svc.config)} of {svc.name} (pid {svc.pid})"
    logs: list[str] = []
    certs: list[str] = []
    if svc.kind == "postgresql":
        conf = parse_pg_conf(text)
        data = flag_value(_words(svc), ["-D"]) or conf.get("data_directory", "") or os.path.dirname(svc.config)
        if conf.get("ssl", "off").lower() in ("on", "true", "yes", "1") and conf.get("ssl_cert_file"):
            certs.append(_absolute(conf["ssl_cert_file"], data))
    elif svc.kind == "redis":
        conf = parse_redis_conf(text)
        logs += [conf["logfile"]] if conf.get("logfile", "").startswith("/") else []
        certs += [conf["tls-cert-file"]] if conf.get("tls-cert-file") else []
    elif svc.kind == "mysql":
        conf = parse_my_cnf(text)
        logs += [conf["log_error"]] if conf.get("log_error", "").startswith("/") else []
        certs += [conf["ssl_cert"]] if conf.get("ssl_cert") else []
    for log in logs:
        if host.exists(log):
            layout.add("logs", log, why)
    for cert in certs:
        _add(layout.certificates, (cert, why))


_INTERPRETERS = re.compile(r"^(python[0-9.]*|php[0-9.]*|node|nodejs|ruby[0-9.]*|perl|sh|bash)$")


def program_name(command: str) -> str:
    """The process name a supervised command runs as (the script for an interpreter).

    >>> program_name('/usr/sbin/nginx -g "daemon off;"'), program_name("php /srv/shop/bin/console messenger:consume")
    ('nginx', 'console')
    """
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    if not words:
        return ""
    first = os.path.basename(words[0])
    if _INTERPRETERS.match(first) and len(words) > 1 and not words[1].startswith("-"):
        return os.path.basename(words[1])
    return first


def read_supervisor(host: Host, svc: Service, layout: Layout) -> None:
    """The programs a supervisord starts (they should run) and their log files."""
    base = os.path.dirname(svc.config)
    todo, seen = [svc.config], set()
    while todo and len(seen) < 40:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        text = _read(host, path, layout)
        if text is None:
            continue
        conf = parse_supervisor_conf(text)
        for pattern in conf["include"]:  # type: ignore[union-attr]
            full = _absolute(pattern, base)
            todo += host.glob(full) if any(c in full for c in "*?[") else [full]
        if str(conf["logfile"]).startswith("/") and host.exists(str(conf["logfile"])):
            layout.add("logs", str(conf["logfile"]), f"supervisord log in {path}")
        for program, settings in conf["programs"].items():  # type: ignore[union-attr]
            name = program_name(settings.get("command", ""))
            if name:
                _add(layout.supervised, (name, f"[program:{program}] in {path} (supervisord pid {svc.pid})"))
            for key in ("stderr_logfile", "stdout_logfile"):
                log = settings.get(key, "")
                if log.startswith("/") and host.exists(log):
                    layout.add("logs", log, f"{key} of [program:{program}] in {path}")
