"""Settings of server config files discovery reads beyond nginx: Apache's TLS and proxy
directives, ``postgresql.conf``, ``redis.conf``, MySQL's ``my.cnf`` and supervisord's
programs.

Each function takes the text of one file and returns what it says, e.g.
``parse_pg_conf("port = 5433\\nlogging_collector = on")`` → ``{'port': '5433',
'logging_collector': 'on'}``. An empty result means the file sets none of it.
"""

from __future__ import annotations

import re

_APACHE_TLS = re.compile(r"^\s*(SSLCertificateFile|SSLCertificateChainFile)\s+[\"']?([^\s\"']+)", re.M | re.I)
_APACHE_PROXY = re.compile(r"^\s*(?:ProxyPass|ProxyPassMatch)\s+\S+\s+[\"']?([a-z]+://[^\s\"']+)", re.M | re.I)
_APACHE_HANDLER = re.compile(r"^\s*SetHandler\s+[\"']?proxy:(unix:[^|\s\"']+|[a-z]+://[^\s\"']+)", re.M | re.I)


def parse_apache_tls_proxy(text: str) -> dict[str, list[str]]:
    """Apache's certificate files and proxied backends (``unix:/path`` or ``host:port``).

    >>> parse_apache_tls_proxy('''SSLCertificateFile /etc/ssl/shop.pem
    ... # SSLCertificateFile /old.pem
    ... ProxyPass /api http://127.0.0.1:8000/
    ... <FilesMatch \\\\.php$>
    ...   SetHandler "proxy:unix:/run/php/php8.2-fpm.sock|fcgi://localhost"
    ... </FilesMatch>''')
    {'certificates': ['/etc/ssl/shop.pem'], 'chain': [], 'backends': ['127.0.0.1:8000', 'unix:/run/php/php8.2-fpm.sock']}
    """
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    out: dict[str, list[str]] = {"certificates": [], "chain": [], "backends": []}
    for m in _APACHE_TLS.finditer(text):
        out["chain" if m.group(1).lower() == "sslcertificatechainfile" else "certificates"].append(m.group(2))
    for m in [*_APACHE_PROXY.finditer(text), *_APACHE_HANDLER.finditer(text)]:
        value = m.group(1)
        if value.startswith("unix:"):
            out["backends"].append(value)
            continue
        hostport = value.split("://", 1)[1].split("/", 1)[0]
        if "$" not in hostport:
            scheme = value.split("://", 1)[0]
            out["backends"].append(hostport if ":" in hostport else f"{hostport}:{443 if scheme == 'https' else 80}")
    return out


def parse_pg_conf(text: str) -> dict[str, str]:
    """``postgresql.conf`` settings (later ones win; quotes and comments dropped).

    >>> parse_pg_conf("port = 5433  # the second cluster\\nlog_directory = 'log'\\nssl_cert_file='/etc/ssl/pg.pem'")
    {'port': '5433', 'log_directory': 'log', 'ssl_cert_file': '/etc/ssl/pg.pem'}
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        m = re.match(r"^\s*([a-z_.]+)\s*=?\s*('(?:[^']|'')*'|[^#\s]+)", raw)
        if m:
            out[m.group(1)] = m.group(2).strip("'").replace("''", "'")
    return out


def parse_redis_conf(text: str) -> dict[str, str]:
    """``redis.conf`` directives (first word the name, the rest the value).

    >>> parse_redis_conf('port 6380\\n# logfile /old.log\\nlogfile "/var/log/redis/redis-server.log"\\ndir /var/lib/redis')
    {'port': '6380', 'logfile': '/var/log/redis/redis-server.log', 'dir': '/var/lib/redis'}
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(None, 1)
        if len(words) == 2:
            out[words[0].lower()] = words[1].strip().strip("\"'")
    return out


def parse_my_cnf(text: str) -> dict[str, str]:
    """The ``[mysqld]`` / ``[mariadb]`` / ``[server]`` settings of a MySQL option file
    (dashes and underscores alike).

    >>> parse_my_cnf("[client]\\nport=1\\n[mysqld]\\nport = 3307\\nlog-error = /var/log/mysql/error.log\\nssl_cert=/etc/mysql/cert.pem")
    {'port': '3307', 'log_error': '/var/log/mysql/error.log', 'ssl_cert': '/etc/mysql/cert.pem'}
    """
    out: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        header = re.fullmatch(r"\[([^\]]+)\]", line)
        if header:
            section = header.group(1).strip().lower()
            continue
        if section in ("mysqld", "mariadb", "server", "mariadbd") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip().replace("-", "_")] = value.strip().strip("\"'")
    return out


def parse_supervisor_conf(text: str) -> dict[str, object]:
    """supervisord's own log, its ``[include] files`` and each ``[program:x]`` that starts
    with it (``autostart`` true, the default): its command and log files.

    >>> conf = parse_supervisor_conf('''[supervisord]
    ... logfile=/var/log/supervisor/supervisord.log
    ... [include]
    ... files = conf.d/*.conf
    ... [program:nginx]
    ... command=/usr/sbin/nginx -g "daemon off;"  ; the web server
    ... stderr_logfile=/var/log/supervisor/nginx.err.log
    ... [program:queue]
    ... command=php /srv/shop/bin/console messenger:consume
    ... autostart=false''')
    >>> conf["logfile"], conf["include"], conf["programs"]
    ('/var/log/supervisor/supervisord.log', ['conf.d/*.conf'], {'nginx': {'command': '/usr/sbin/nginx -g "daemon off;"', 'stderr_logfile': '/var/log/supervisor/nginx.err.log'}})
    """
    section = ""
    raw: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        line = re.sub(r"(^|\s);.*$", "", line).strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[([^\]]+)\]", line)
        if header:
            section = header.group(1).strip()
            raw.setdefault(section, {})
        elif "=" in line and section:
            key, value = line.split("=", 1)
            raw[section][key.strip()] = value.strip()
    programs = {}
    for name, settings in raw.items():
        if name.startswith("program:") and settings.get("autostart", "true").lower() not in ("false", "0", "no"):
            programs[name[8:]] = {k: v for k, v in settings.items() if k in ("command", "stdout_logfile", "stderr_logfile")}
    return {"logfile": raw.get("supervisord", {}).get("logfile", ""),
            "include": raw.get("include", {}).get("files", "").split(), "programs": programs}
