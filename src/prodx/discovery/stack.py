"""Which servers run here, as whom, on which ports, writing which logs, from which folders.

Reads, through the host layer only:

- the process table (``host.processes()``: name, user, exe, command line, start time) and
  ``/proc/PID/stat`` for each candidate's parent pid, e.g. ``812 (nginx) S 1 812 812 ...``;
- ``/proc/net/tcp`` and ``/proc/net/tcp6`` for listening sockets and their inodes, e.g.
  ``0: 0100007F:1F90 00000000:0000 0A ... 0 0 48211 ...`` (127.0.0.1:8080, inode 48211),
  matched to each service through its ``/proc/PID/fd`` links (``socket:[48211]``);
- ``/proc/PID/fd`` links to regular files for open logs, and ``/proc/PID/cwd`` for the
  working folder.

Which process is what is data (``kb/data/frameworks.yaml``). An empty ``Stack.services``
means no known server runs (or the process table could not be read: see ``notes``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from prodx.host.base import Host, HostAccessDenied, ProcessInfo

#: Listening TCP state in /proc/net/tcp (include/net/tcp_states.h: TCP_LISTEN = 10).
_TCP_LISTEN = "0A"
_LOG_SUFFIXES = (".log", "_log", ".err", ".out")
_NOT_LOGS = ("/dev/", "/proc/", "/sys/", "/run/", "/var/lib/")


@lru_cache(maxsize=1)
def rules() -> dict[str, Any]:
    """The discovery rules of ``kb/data/frameworks.yaml``, validated by its schema."""
    from prodx.kb.loader import DATA_DIR, load_yaml

    return load_yaml(DATA_DIR / "frameworks.yaml", "frameworks")


@dataclass
class Service:
    """One running server instance: its master process and every process below it."""

    kind: str
    role: str
    name: str
    pid: int
    user: str
    exe: str = ""
    cmdline: tuple[str, ...] = ()
    started: float = 0.0
    pids: list[int] = field(default_factory=list)
    worker_users: list[str] = field(default_factory=list)
    config: str = ""
    ports: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    cwd: list[str] = field(default_factory=list)
    config_test: list[str] = field(default_factory=list)
    #: The config files read for it: the main one and what it includes (nginx, Apache).
    config_files: list[str] = field(default_factory=list)
    #: Its working folder is the app's (gunicorn, Node), not "/" or wherever it was started.
    app_cwd: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "role": self.role, "name": self.name, "pid": self.pid, "user": self.user,
            "worker_users": self.worker_users, "started": self.started, "processes": len(self.pids),
            "config": self.config, "ports": self.ports, "logs": self.logs, "cwd": self.cwd,
        }


def parse_ppid(stat_text: str) -> int | None:
    """The parent pid from ``/proc/PID/stat`` (field 4); None if the text is not one.

    >>> parse_ppid("812 (nginx: worker) S 811 811 811 0 -1 4194560 ...")
    811
    >>> parse_ppid("") is None
    True
    """
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = stat_text[stat_text.rfind(")") + 2 :].split()
    return int(rest[1]) if len(rest) > 1 and rest[1].isdigit() else None


def _hex_addr(text: str) -> str:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    import ipaddress

    addr = ipaddress.IPv6Address(words)
    return f"[{addr.ipv4_mapped or addr}]" if not addr.ipv4_mapped else str(addr.ipv4_mapped)


def parse_listeners(text: str) -> dict[int, str]:
    """Socket inode → "address:port" for every LISTEN line of /proc/net/tcp or tcp6.

    >>> parse_listeners('''  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
    ...    0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 48211 1 0 100 0 0 10 0
    ...    1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 48999 1 0 100 0 0 10 0''')
    {48211: '127.0.0.1:8080'}
    >>> parse_listeners("   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 7 1")
    {7: '[::]:80'}
    """
    out: dict[int, str] = {}
    for line in text.splitlines()[1:] if text.lstrip().startswith("sl") else text.splitlines():
        parts = line.split()
        if len(parts) < 10 or parts[3] != _TCP_LISTEN or ":" not in parts[1]:
            continue
        addr, port = parts[1].rsplit(":", 1)
        try:
            out[int(parts[9])] = f"{_hex_addr(addr)}:{int(port, 16)}"
        except ValueError:
            continue
    return out


def command_words(proc: ProcessInfo) -> list[str]:
    """The command line as words. Servers that rewrite their title into one string
    ("nginx: master process /usr/sbin/nginx -c /etc/nginx/nginx.conf") are split again.

    >>> command_words(ProcessInfo(1, "nginx", cmdline=("nginx: master process /usr/sbin/nginx -p /srv/ -c x.conf",)))
    ['/usr/sbin/nginx', '-p', '/srv/', '-c', 'x.conf']
    >>> command_words(ProcessInfo(1, "nginx", cmdline=("nginx:", "master", "process", "/usr/sbin/nginx", "-g", "daemon", "off;")))
    ['/usr/sbin/nginx', '-g', 'daemon', 'off;']
    >>> command_words(ProcessInfo(2, "python3", cmdline=("/usr/bin/python3", "/srv/venv/bin/gunicorn", "app:wsgi")))
    ['/usr/bin/python3', '/srv/venv/bin/gunicorn', 'app:wsgi']
    """
    words = [w for w in proc.cmdline if w]
    joined = " ".join(words)
    title = re.match(r"^[\w.-]+: (master|worker) process\s*", joined)
    if title or (len(words) == 1 and " " in joined):
        text = joined[title.end() :] if title else joined
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()
    return words


def flag_value(words: list[str], flags: list[str]) -> str:
    """The value given to any of ``flags`` ("-c X", "--config=X", "-cX"); "" if none.

    >>> flag_value(["nginx", "-p", "/srv/", "-c", "/srv/nginx.conf"], ["-c"])
    '/srv/nginx.conf'
    >>> flag_value(["php-fpm8.2", "--fpm-config=/etc/php/8.2/fpm/php-fpm.conf"], ["--fpm-config", "-y"])
    '/etc/php/8.2/fpm/php-fpm.conf'
    >>> flag_value(["redis-server", "127.0.0.1:6379"], ["-c"])
    ''
    """
    for i, word in enumerate(words):
        for flag in flags:
            if word == flag and i + 1 < len(words):
                return words[i + 1]
            if flag.startswith("--") and word.startswith(flag + "="):
                return word[len(flag) + 1 :]
            if not flag.startswith("--") and word.startswith(flag) and len(word) > len(flag) and word[len(flag)] == "/":
                return word[len(flag) :]
    return ""


def flag_values(words: list[str], flag: str) -> list[str]:
    """Every value given to ``flag`` ("-c a=1 -c b=2", "-cb=2", "--flag=x").

    >>> flag_values(["postgres", "-D", "/d", "-c", "port=5433", "-cconfig_file=/etc/pg.conf"], "-c")
    ['port=5433', 'config_file=/etc/pg.conf']
    """
    out = []
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            out.append(words[i + 1])
        elif flag.startswith("--") and word.startswith(flag + "="):
            out.append(word[len(flag) + 1 :])
        elif not flag.startswith("--") and word.startswith(flag) and len(word) > len(flag):
            out.append(word[len(flag) :])
    return out


def config_from_command(words: list[str], rule: dict[str, Any]) -> str:
    """The config file a server was started with, from its command line words and its
    rule in frameworks.yaml; "" when the command line does not say.

    >>> config_from_command(["/usr/sbin/nginx", "-p", "/srv/x/", "-c", "conf/n.conf"], {"config_flag": ["-c"], "prefix_flag": "-p"})
    '/srv/x/conf/n.conf'
    >>> pg = {"config_flag": ["--config-file"], "config_setting": "-c config_file", "data_flag": "-D", "config_in_data": "postgresql.conf"}
    >>> config_from_command(["postgres", "-D", "/var/lib/postgresql/15/main", "-c", "config_file=/etc/postgresql/15/main/postgresql.conf"], pg)
    '/etc/postgresql/15/main/postgresql.conf'
    >>> config_from_command(["postgres", "-D", "/srv/pg/data", "-p", "5433", "-c", "fsync=off"], pg)
    '/srv/pg/data/postgresql.conf'
    >>> config_from_command(["/usr/bin/redis-server", "/srv/redis/redis.conf", "--port", "6380"], {"config_arg": True})
    '/srv/redis/redis.conf'
    >>> config_from_command(["/usr/sbin/apache2", "-d", "/srv/httpd", "-f", "conf/httpd.conf"], {"config_flag": ["-f"], "prefix_flag": "-d"})
    '/srv/httpd/conf/httpd.conf'
    """
    found = flag_value(words, rule.get("config_flag", []))
    if not found and rule.get("config_setting"):
        flag, name = rule["config_setting"].split(" ", 1)
        for value in flag_values(words, flag):
            key, sep, val = value.partition("=")
            if sep and key.strip() == name:
                found = val.strip().strip("'\"")
    if not found and rule.get("config_arg"):
        found = next((w for w in words[1:] if not w.startswith("-") and w.endswith(".conf")), "")
    if found and not found.startswith("/") and rule.get("prefix_flag"):
        prefix = flag_value(words, [rule["prefix_flag"]])
        found = (prefix.rstrip("/") + "/" + found) if prefix else found
    if not found and rule.get("data_flag") and rule.get("config_in_data"):
        data = flag_value(words, [rule["data_flag"]])
        found = (data.rstrip("/") + "/" + rule["config_in_data"]) if data else ""
    return found


def _config_of(proc: ProcessInfo, rule: dict[str, Any]) -> str:
    joined = " ".join(proc.cmdline)
    # php-fpm renames its master "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)".
    match = re.search(r"master process \((/[^)]+)\)", joined)
    if match:
        return match.group(1)
    return config_from_command(command_words(proc), rule) or rule.get("config_default", "")


def config_test_argv(template: list[str], svc: Service) -> list[str]:
    """The server's own syntax check for ``svc`` from the rule's template; [] when a value
    the template needs is missing.

    >>> s = Service("nginx", "web", "nginx", 1, "root", exe="/usr/sbin/nginx",
    ...             cmdline=("nginx: master process /usr/sbin/nginx -p /srv/x/ -c /srv/x/n.conf",), config="/srv/x/n.conf")
    >>> config_test_argv(["{exe}", "-t", "-q", "{flag:-p}", "-c", "{config}"], s)
    ['/usr/sbin/nginx', '-t', '-q', '-p', '/srv/x/', '-c', '/srv/x/n.conf']
    """
    words = command_words(ProcessInfo(svc.pid, svc.name, cmdline=svc.cmdline))
    out: list[str] = []
    for part in template:
        if part == "{exe}":
            if not svc.exe:
                return []
            out.append(svc.exe)
        elif part == "{config}":
            if not svc.config:
                return []
            out.append(svc.config)
        elif part.startswith("{flag:"):
            flag = part[6:-1]
            value = flag_value(words, [flag])
            if value:
                out += [flag, value]
        else:
            out.append(part)
    return out


def _matches(rule: dict[str, Any], proc: ProcessInfo) -> bool:
    if not re.search(rule["name"], proc.name):
        return False
    return not rule.get("cmdline") or bool(re.search(rule["cmdline"], " ".join(proc.cmdline)))


def _is_log(path: str) -> bool:
    if path.startswith(_NOT_LOGS):
        return False
    return path.startswith("/var/log/") or path.endswith(_LOG_SUFFIXES)


@dataclass
class Stack:
    """What discovery found: the services, and why some of it could not be seen."""

    services: list[Service] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> list[Service]:
        return [s for s in self.services if s.kind in kinds]


def find_services(host: Host) -> Stack:
    """Every known server running on ``host``, grouped into instances (a master and its
    children), with ports, open logs and working folders where the host lets us read them."""
    stack = Stack()
    try:
        procs = host.processes()
    except (OSError, HostAccessDenied) as exc:
        stack.notes.append(f"cannot list processes: {exc}")
        return stack
    by_kind: dict[int, tuple[dict[str, Any], ProcessInfo]] = {}
    for proc in procs:
        for rule in rules()["services"]:
            if _matches(rule, proc):
                by_kind[proc.pid] = (rule, proc)
                break
    if not by_kind:
        return stack
    parents: dict[int, int | None] = {}
    for pid in by_kind:
        try:
            parents[pid] = parse_ppid(host.read_text(f"/proc/{pid}/stat", 4096))
        except OSError:
            parents[pid] = None  # exited while we looked
    masters: dict[int, int] = {}  # pid → master pid

    def master_of(pid: int) -> int:
        seen = {pid}
        while True:
            parent = parents.get(pid)
            if parent is None or parent in seen or parent not in by_kind:
                return pid
            if by_kind[parent][0]["kind"] != by_kind[pid][0]["kind"]:
                return pid
            seen.add(parent)
            pid = parent

    for pid in by_kind:
        masters[pid] = master_of(pid)
    listeners = _listeners(host, stack)
    instances: dict[int, Service] = {}
    for pid in sorted(by_kind, key=lambda p: (by_kind[p][1].create_time, p)):
        rule, proc = by_kind[pid]
        top = masters[pid]
        svc = instances.get(top)
        if svc is None:
            mrule, mproc = by_kind[top]
            svc = Service(kind=mrule["kind"], role=mrule.get("role", "app"), name=mproc.name, pid=top,
                          user=mproc.user, exe=mproc.exe, cmdline=mproc.cmdline, started=mproc.create_time)
            svc.config = _config_of(mproc, mrule)
            svc.config_test = config_test_argv(mrule.get("config_test", []), svc)
            svc.app_cwd = bool(mrule.get("app_cwd"))
            instances[top] = svc
        svc.pids.append(pid)
        if pid != top and proc.user and proc.user not in svc.worker_users:
            svc.worker_users.append(proc.user)
    denied: list[int] = []
    for svc in instances.values():
        _fill_files(host, svc, listeners, denied)
    if denied:
        stack.notes.append(f"needs root to read /proc/PID/fd and cwd of {len(denied)} process(es) of other "
                           f"users: their ports, logs and folders are not known (pids {', '.join(map(str, denied[:5]))})")
    stack.services = sorted(instances.values(), key=lambda s: (s.kind, s.started, s.pid))
    return stack


def _listeners(host: Host, stack: Stack) -> dict[int, str]:
    out: dict[int, str] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            out.update(parse_listeners(host.read_text(path, 4 << 20)))
        except OSError as exc:
            stack.notes.append(f"cannot read {path}: {exc.strerror or exc}")
    return out


def _fill_files(host: Host, svc: Service, listeners: dict[int, str], denied: list[int]) -> None:
    ports: list[str] = []
    logs: list[str] = []
    cwds: list[str] = []
    for pid in svc.pids:
        try:
            files = host.open_files(pid)
        except HostAccessDenied:
            denied.append(pid)
            continue
        except (ProcessLookupError, OSError):
            continue
        for f in files:
            if f.target.startswith("socket:["):
                addr = listeners.get(int(f.target[8:-1]) if f.target[8:-1].isdigit() else -1)
                if addr and addr not in ports:
                    ports.append(addr)
            elif not f.deleted and f.target.startswith("/") and _is_log(f.target) and f.target not in logs:
                logs.append(f.target)
        try:
            cwd = host.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd not in cwds:
            cwds.append(cwd)
    svc.ports, svc.logs, svc.cwd = sorted(ports), sorted(logs), cwds
