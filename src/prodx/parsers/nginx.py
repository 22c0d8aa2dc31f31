"""nginx configuration text: its server blocks (listen, server_name, certificates, backends)
and its upstream blocks.

Reads the text of one config file, e.g.::

    upstream app { server 127.0.0.1:8000; }
    server {
        listen 127.0.0.1:8443 ssl;
        server_name shop.example.com;
        ssl_certificate /etc/ssl/shop/fullchain.pem;
        location / { proxy_pass http://app; }
        location ~ \\.php$ { fastcgi_pass unix:/run/php/php8.2-fpm.sock; }
    }

An empty result means the text holds no server or upstream block. Values holding nginx
variables (``$host``) are skipped: they are known only per request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};]+')
#: Directives that hand a request to a backend, and the scheme their bare address implies.
_PASSES = {"proxy_pass": "http", "fastcgi_pass": "", "uwsgi_pass": "", "scgi_pass": "", "grpc_pass": "grpc"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "grpc": 80, "grpcs": 443}


@dataclass
class NginxServer:
    """One ``server { }`` block: where it listens, its names, certificates and backends."""

    listens: list[tuple[str, int, bool]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)
    passes: list[tuple[str, str]] = field(default_factory=list)


def _statements(text: str) -> list[tuple[list[str], list[str]]]:
    """(words, enclosing block names) of every statement and block opening, in order."""
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    out: list[tuple[list[str], list[str]]] = []
    stack: list[str] = []
    words: list[str] = []
    for tok in _TOKEN.findall(text):
        if tok == ";":
            if words:
                out.append((words, list(stack)))
            words = []
        elif tok == "{":
            out.append((words + ["{"], list(stack)))
            stack.append(words[0] if words else "")
            words = []
        elif tok == "}":
            words = []
            if stack:
                stack.pop()
        else:
            words.append(tok.strip("'\""))
    return out


def parse_listen(words: list[str]) -> tuple[str, int, bool] | None:
    """(host, port, ssl) of a ``listen`` directive's words; "*" for any address; None for a
    unix socket.

    >>> parse_listen(["127.0.0.1:8443", "ssl"]), parse_listen(["443", "ssl", "http2"]), parse_listen(["[::]:80"])
    (('127.0.0.1', 8443, True), ('*', 443, True), ('::', 80, False))
    >>> parse_listen(["unix:/run/nginx.sock"]) is None, parse_listen(["localhost"])
    (True, ('localhost', 80, False))
    """
    if not words or words[0].startswith("unix:"):
        return None
    addr, ssl = words[0], "ssl" in words[1:]
    if addr.isdigit():
        return "*", int(addr), ssl
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:]+)(?::(\d+))?", addr)
    if not m:
        return None
    host = m.group(1) or m.group(3)
    port = m.group(2) or m.group(4) or "80"
    return host, int(port), ssl


def backend_address(directive: str, value: str, upstreams: dict[str, list[str]] | None = None) -> list[str]:
    """What a ``*_pass`` value points at: ``unix:/path`` or ``host:port``, through the
    ``upstream`` blocks given; [] for a value with variables.

    >>> backend_address("fastcgi_pass", "unix:/run/php/php8.2-fpm.sock")
    ['unix:/run/php/php8.2-fpm.sock']
    >>> backend_address("proxy_pass", "http://127.0.0.1:8000/"), backend_address("proxy_pass", "https://api.example")
    (['127.0.0.1:8000'], ['api.example:443'])
    >>> backend_address("proxy_pass", "http://app", {"app": ["127.0.0.1:8000", "unix:/run/app.sock"]})
    ['127.0.0.1:8000', 'unix:/run/app.sock']
    >>> backend_address("proxy_pass", "http://unix:/run/gunicorn.sock:/"), backend_address("proxy_pass", "http://$host")
    (['unix:/run/gunicorn.sock'], [])
    """
    if "$" in value:
        return []
    scheme = _PASSES.get(directive, "")
    m = re.match(r"^([a-z]+)://(.*)$", value)
    if m:
        scheme, value = m.group(1), m.group(2)
    if value.startswith("unix:"):
        return ["unix:" + value[5:].split(":", 1)[0]]
    hostport = value.split("/", 1)[0]
    if upstreams and hostport in upstreams:
        return list(upstreams[hostport])
    if re.search(r":\d+$", hostport):
        return [hostport]
    if not hostport:
        return []
    return [f"{hostport}:{_DEFAULT_PORTS.get(scheme, 80)}"]


def parse_nginx_blocks(text: str) -> tuple[list[NginxServer], dict[str, list[str]]]:
    """The server blocks of one config file, and its upstream blocks (name → servers).

    >>> servers, ups = parse_nginx_blocks('''upstream app { server 127.0.0.1:8000 weight=2; }
    ... server { listen 127.0.0.1:8443 ssl; server_name shop.example.com www.shop.example.com;
    ...   ssl_certificate /etc/ssl/shop/fullchain.pem;  # the live chain
    ...   location / { proxy_pass http://app; }
    ...   location ~ \\\\.php$ { fastcgi_pass unix:/run/php/php8.2-fpm.sock; } }''')
    >>> ups
    {'app': ['127.0.0.1:8000']}
    >>> s = servers[0]
    >>> s.listens, s.names, s.certificates, s.passes
    ([('127.0.0.1', 8443, True)], ['shop.example.com', 'www.shop.example.com'], ['/etc/ssl/shop/fullchain.pem'], [('proxy_pass', 'http://app'), ('fastcgi_pass', 'unix:/run/php/php8.2-fpm.sock')])
    """
    servers: list[NginxServer] = []
    upstreams: dict[str, list[str]] = {}
    current: NginxServer | None = None
    upstream_name = ""
    for words, stack in _statements(text):
        if words[-1] == "{":
            if words[0] == "server" and "upstream" not in stack:
                current = NginxServer()
                servers.append(current)
            elif words[0] == "upstream" and len(words) >= 3:
                upstream_name = words[1]
                upstreams.setdefault(upstream_name, [])
            continue
        if "upstream" in stack and words[0] == "server" and len(words) >= 2 and upstream_name:
            upstreams[upstream_name] += backend_address("fastcgi_pass", words[1])
            continue
        if current is None or "server" not in stack:
            continue
        if words[0] == "listen":
            listen = parse_listen(words[1:])
            if listen:
                current.listens.append(listen)
        elif words[0] == "server_name":
            current.names += [w for w in words[1:] if w not in ("_", '""') and "$" not in w and "~" not in w]
        elif words[0] == "ssl_certificate" and len(words) >= 2 and "$" not in words[1]:
            current.certificates.append(words[1])
        elif words[0] in _PASSES and len(words) >= 2:
            current.passes.append((words[0], words[1]))
    return servers, upstreams
