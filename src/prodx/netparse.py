"""Pure parsers of the kernel's network tables and of the configs that name ports and names.

Each takes text read elsewhere (through the host layer) and returns plain data; nothing here
touches the machine. Sources, see proc(5) and the kernel's Documentation/networking:

- ``/proc/net/tcp`` and ``/proc/net/tcp6``: one socket a line, addresses in hex, e.g.::

    sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
     0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000    33        0 40417 1 ...

- ``/proc/net/netstat`` and ``/proc/net/snmp``: pairs of lines, names then values.
- ``/proc/sys/net/ipv4/ip_local_port_range``: ``32768	60999``.
- ``/proc/net/stat/nf_conntrack``: per-CPU counters in hex, a header line first.
- ``/etc/resolv.conf`` and nginx's ``listen`` directives.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass

#: TCP states as /proc/net/tcp numbers them (include/net/tcp_states.h).
TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
    7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}


@dataclass(frozen=True)
class TcpSocket:
    """One line of /proc/net/tcp{,6}.

    For a LISTEN socket ``rx_queue`` is the accept queue's current length (its limit, the
    backlog, is not shown here); ``inode`` is 0 for sockets no process holds (TIME_WAIT).
    """

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str
    tx_queue: int
    rx_queue: int
    uid: int
    inode: int


def _hex_ip(text: str) -> str:
    """An address as /proc/net/tcp writes it: 32-bit words in host (little-endian) order.

    >>> _hex_ip("0100007F"), _hex_ip("00000000000000000000000001000000")
    ('127.0.0.1', '::1')
    """
    raw = bytes.fromhex(text)
    words = b"".join(struct.pack("<I", struct.unpack(">I", raw[i : i + 4])[0]) for i in range(0, len(raw), 4))
    if len(words) == 4:
        return socket.inet_ntop(socket.AF_INET, words)
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def parse_proc_net_tcp(text: str) -> list[TcpSocket]:
    """Every socket in a /proc/net/tcp or tcp6 text; empty for a header alone (no sockets).

    >>> s = parse_proc_net_tcp(
    ...     "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\\n"
    ...     "   0: 0100007F:1F90 00000000:0000 0A 00000080:00000003 00:00000000 00000000    33        0 40417 1 0\\n")
    >>> (s[0].local_ip, s[0].local_port, s[0].state, s[0].rx_queue, s[0].uid, s[0].inode)
    ('127.0.0.1', 8080, 'LISTEN', 3, 33, 40417)
    """
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10 or ":" not in f[1]:
            continue
        try:
            lip, lport = f[1].split(":")
            rip, rport = f[2].split(":")
            tx, rx = f[4].split(":")
            out.append(
                TcpSocket(_hex_ip(lip), int(lport, 16), _hex_ip(rip), int(rport, 16),
                          TCP_STATES.get(int(f[3], 16), f[3]), int(tx, 16), int(rx, 16), int(f[7]), int(f[9]))
            )
        except (ValueError, OSError):
            continue
    return out


def socket_inode(target: str) -> int | None:
    """The inode of a ``/proc/PID/fd`` link target that is a socket, else None.

    >>> socket_inode("socket:[40417]"), socket_inode("/var/log/x.log")
    (40417, None)
    """
    m = re.fullmatch(r"socket:\[(\d+)\]", target)
    return int(m.group(1)) if m else None


def parse_netstat(text: str) -> dict[str, int]:
    """``Group.Name`` → value from /proc/net/netstat or /proc/net/snmp; empty for empty text.

    >>> parse_netstat("TcpExt: SyncookiesSent ListenOverflows ListenDrops\\nTcpExt: 0 12 14\\n")
    {'TcpExt.SyncookiesSent': 0, 'TcpExt.ListenOverflows': 12, 'TcpExt.ListenDrops': 14}

    A group whose names and values differ in number is left out: every value after a missing
    name would be read under the wrong one.

    >>> parse_netstat("TcpExt: SyncookiesSent ListenDrops\\nTcpExt: 0 12 14\\nIpExt: InOctets\\nIpExt: 7\\n")
    {'IpExt.InOctets': 7}
    """
    out: dict[str, int] = {}
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        group, _, keys = names.partition(":")
        vgroup, _, vals = values.partition(":")
        if group != vgroup or len(keys.split()) != len(vals.split()):
            continue
        for k, v in zip(keys.split(), vals.split()):
            try:
                out[f"{group}.{k}"] = int(v)
            except ValueError:
                continue
    return out


def parse_port_range(text: str) -> tuple[int, int]:
    """(first, last) of ip_local_port_range; ValueError if malformed.

    >>> parse_port_range("32768\\t60999\\n")
    (32768, 60999)
    """
    lo, hi = (int(x) for x in text.split()[:2])
    return lo, hi


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """Counters of /proc/net/stat/nf_conntrack summed over CPUs (hex columns); empty when the
    file has only its header.

    >>> parse_conntrack_stat("entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop\\n"
    ...                      "00000010  00000000 00000000 00000000 00000002 00000000 00000000 00000000 00000000 00000001 00000003 00000004\\n"
    ...                      "00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000000\\n")["drop"]
    5
    """
    lines = text.split("\n")
    if not lines or not lines[0].strip():
        return {}
    names = lines[0].split()
    totals: dict[str, int] = {}
    for line in lines[1:]:
        for name, value in zip(names, line.split()):
            try:
                totals[name] = totals.get(name, 0) + int(value, 16)
            except ValueError:
                continue
    totals.pop("entries", None)  # the same global number on every CPU line, not a counter
    return totals


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...]
    search: tuple[str, ...]


def parse_resolv_conf(text: str) -> ResolvConf:
    """Nameservers and search domains of a resolv.conf text (``domain`` counts as search).

    >>> parse_resolv_conf("# x\\nnameserver 10.0.0.2\\nsearch corp.example svc.local\\noptions ndots:2\\n")
    ResolvConf(nameservers=('10.0.0.2',), search=('corp.example', 'svc.local'))
    """
    servers: list[str] = []
    search: list[str] = []
    for line in text.splitlines():
        f = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(f) >= 2 and f[0] == "nameserver":
            servers.append(f[1])
        elif len(f) >= 2 and f[0] in ("search", "domain"):
            search = f[1:]  # the last search/domain line wins (resolv.conf(5))
    return ResolvConf(tuple(servers), tuple(search))


_NGINX_LISTEN = re.compile(r"(?:^|[;{}\s])listen\s+([^;]+);")


def parse_nginx_listen(text: str) -> list[tuple[str, int]]:
    """(address, port) of every TCP ``listen`` directive in an nginx config text; ``*`` for
    all addresses; Unix sockets are left out. Empty when the text has none.

    >>> parse_nginx_listen("server {\\n listen 80 default_server;\\n listen [::]:443 ssl;\\n"
    ...                    " listen 127.0.0.1:8080;\\n listen unix:/run/a.sock;\\n # listen 9;\\n}")
    [('*', 80), ('::', 443), ('127.0.0.1', 8080)]
    """
    text = re.sub(r"#[^\n]*", "", text)
    out = []
    for m in _NGINX_LISTEN.finditer(text):
        target = m.group(1).split()[0]
        if target.startswith("unix:"):
            continue
        host, port = "*", ""
        if target.startswith("["):
            host, _, rest = target[1:].partition("]")
            port = rest.lstrip(":")
        elif ":" in target:
            host, port = target.rsplit(":", 1)
        elif target.isdigit():
            port = target
        else:
            host, port = target, "80"
        if port.isdigit() and 0 < int(port) < 65536 and (host, int(port)) not in out:
            out.append((host, int(port)))
    return out


def parse_nginx_includes(text: str) -> list[str]:
    """The glob patterns of ``include`` directives in an nginx config text.

    >>> parse_nginx_includes("http {\\n include /etc/nginx/mime.types;\\n include /etc/nginx/sites-enabled/*;\\n}")
    ['/etc/nginx/mime.types', '/etc/nginx/sites-enabled/*']
    """
    text = re.sub(r"#[^\n]*", "", text)
    return [m.group(1).strip("\"'") for m in re.finditer(r"(?:^|[;{}\s])include\s+([^;\s]+)\s*;", text)]


_BIND_PORT = (
    re.compile(r"bind\(\) to (\S+) failed"),  # nginx
    re.compile(r"could not bind to address (\S+)"),  # Apache
    re.compile(r"listening socket (\S+?):? bind"),  # Redis
    re.compile(r"address already in use (\S+)"),  # Node
    re.compile(r"Connection in use: \('([^']*)', (\d+)\)"),  # gunicorn
    re.compile(r"on port (\d+)\?"),  # PostgreSQL's HINT line
)


def parse_bind_failure(line: str) -> tuple[str, int] | None:
    """(address, port) a log line says could not be bound because it was in use; None when
    the line names no port. ``*`` stands for every address.

    >>> parse_bind_failure('2024/03/02 10:41:07 [emerg] 77#77: bind() to 127.0.0.1:8080 failed (98: Address already in use)')
    ('127.0.0.1', 8080)
    >>> parse_bind_failure("(98)Address already in use: AH00072: make_sock: could not bind to address [::]:80")
    ('::', 80)
    >>> parse_bind_failure("Warning: Could not create server TCP listening socket *:6379: bind: Address already in use")
    ('*', 6379)
    >>> parse_bind_failure("Error: listen EADDRINUSE: address already in use :::3000")
    ('::', 3000)
    >>> parse_bind_failure("[ERROR] Connection in use: ('0.0.0.0', 8000)")
    ('0.0.0.0', 8000)
    >>> parse_bind_failure("OSError: [Errno 98] Address already in use") is None
    True
    """
    for rx in _BIND_PORT:
        m = rx.search(line)
        if not m:
            continue
        if rx.groups == 2:
            host, port = m.group(1), m.group(2)
        elif rx.pattern.startswith("on port"):
            host, port = "*", m.group(1)
        else:
            host, _, port = m.group(1).rpartition(":")
        host = host.strip("[]") or "*"
        if host == ":":
            host = "::"
        if port.isdigit() and 0 < int(port) < 65536:
            return host, int(port)
    return None


#: /proc/net/unix Flags bit of a socket that accepts connections (__SO_ACCEPTCON).
_SO_ACCEPTCON = 0x10000


def parse_proc_net_unix_listening(text: str) -> dict[int, str]:
    """Inode → path of every listening Unix socket in a /proc/net/unix text ("@name" for an
    abstract one, "" when unnamed); empty when none listens.

    >>> parse_proc_net_unix_listening(
    ...     "Num       RefCount Protocol Flags    Type St Inode Path\\n"
    ...     "0000000046fd45d3: 00000002 00000000 00010000 0001 01 40420 /run/php/php8.2-fpm.sock\\n"
    ...     "0000000046fd45d4: 00000003 00000000 00000000 0001 03 40421 /run/php/php8.2-fpm.sock\\n")
    {40420: '/run/php/php8.2-fpm.sock'}
    """
    out = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 7:
            continue
        try:
            if int(f[3], 16) & _SO_ACCEPTCON:
                out[int(f[6])] = f[7] if len(f) > 7 else ""
        except ValueError:
            continue
    return out
