"""What a finding's evidence names that is worth examining next: the leads of the second pass.

Reads the JSON-like evidence of present findings (``{"hits": [{"example": LINE, "file":
PATH}, ...]}``, summaries) and applies the rules of ``kb/data/follow.yaml``::

    log.cache_write_failed  'PHP Fatal error:  Uncaught RuntimeException: Failed to write
                             cache file "/srv/shop/var/cache/prod/twig/ab/x.php". in ...'
        → Lead(kind="folder", value="/srv/shop/var/cache/prod/twig/ab/x.php", ...)

Pure: no host access. An empty result means no present finding names a target a rule knows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

#: At most this many leads of one kind: the second pass is bounded.
MAX_PER_KIND = 8
#: Characters of the line kept with a lead, for the person reading the evidence.
_LINE_KEEP = 240


@dataclass(frozen=True)
class Lead:
    """One target named in a present finding's evidence.

    Attributes:
        kind: folder, endpoint, upstream, certificate or tls (see follow.yaml).
        value: a path, ``host:port`` or ``unix:/path``.
        origin: the finding whose evidence named it.
        rule: the follow.yaml rule that read it.
        line: the text it was read from, clipped.
        file: the log the line came from, when the evidence says.
        service: postgres, mysql or redis when the rule or the port says what listens there.
    """

    kind: str
    value: str
    origin: str
    rule: str
    line: str
    file: str = ""
    service: str = ""

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of an endpoint, upstream or tls lead given as ``host:port``."""
        host, _, port = self.value.rpartition(":")
        return host.strip("[]"), int(port)

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, "target": self.value, "from": self.origin, "rule": self.rule, "line": self.line}
        if self.file:
            out["file"] = self.file
        if self.service:
            out["service"] = self.service
        return out


def evidence_texts(evidence: Any, file: str = "") -> Iterator[tuple[str, str]]:
    """Every string in ``evidence`` with the log file it came from (the nearest enclosing
    object's ``file``), depth first.

    >>> list(evidence_texts({"hits": [{"example": "a", "file": "/var/log/x.log", "count": 2}], "n": 1}))
    [('a', '/var/log/x.log'), ('/var/log/x.log', '/var/log/x.log')]
    """
    if isinstance(evidence, Mapping):
        here = evidence.get("file") if isinstance(evidence.get("file"), str) else file
        for value in evidence.values():
            yield from evidence_texts(value, here)
    elif isinstance(evidence, (list, tuple)):
        for item in evidence:
            yield from evidence_texts(item, file)
    elif isinstance(evidence, str):
        yield evidence, file


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def read_lead(rule: Mapping[str, Any], text: str, ports: Mapping[int, str]) -> tuple[str, str] | None:
    """(value, service) that ``rule`` reads in ``text``, or None when it does not match.

    >>> rule = {"kind": "endpoint", "service": "postgres",
    ...         "pattern": 'connection to server at "(?P<host>[^"]+)", port (?P<port>[0-9]+) failed'}
    >>> read_lead(rule, 'SQLSTATE[08006] [7] connection to server at "127.0.0.1", port 5433 failed: Connection refused', {})
    ('127.0.0.1:5433', 'postgres')
    >>> read_lead({"kind": "endpoint", "pattern": "ECONNREFUSED (?P<host>[0-9.]+):(?P<port>[0-9]+)"},
    ...           "connect ECONNREFUSED 10.0.0.5:6379", {6379: "redis"})
    ('10.0.0.5:6379', 'redis')
    >>> read_lead({"kind": "upstream", "pattern": "unix:(?P<socket>/[^ ]+) failed"}, "connect() to unix:/run/a.sock failed", {})
    ('unix:/run/a.sock', '')
    >>> read_lead({"kind": "folder", "pattern": 'file "(?P<path>/[^"]+)"'}, 'cache file "relative/x"', {}) is None
    True
    """
    m = _compiled(rule["pattern"]).search(text)
    if not m:
        return None
    groups = {k: v for k, v in m.groupdict().items() if v}
    kind = rule["kind"]
    if kind in ("folder", "certificate"):
        path = groups.get("path", "").rstrip(".")
        return (path, "") if path.startswith("/") else None
    if "socket" in groups:
        return (f"unix:{groups['socket']}", "") if groups["socket"].startswith("/") else None
    host = groups.get("host", "").strip("[]")
    port = int(groups["port"]) if groups.get("port", "").isdigit() else int(rule.get("default_port", 0))
    if not host or not 0 < port < 65536:
        return None
    value = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return value, rule.get("service") or ports.get(port, "")


def find_leads(findings: Iterable[tuple[str, str, Any]], rules: list[Mapping[str, Any]],
               ports: Mapping[int, str] | None = None) -> list[Lead]:
    """The leads named by ``findings`` — (id, summary, evidence) of the PRESENT findings —
    one per (kind, value), the first finding to name it kept, at most MAX_PER_KIND per kind.

    >>> rules = [{"id": "twig", "kind": "folder", "pattern": 'cache file "(?P<path>/[^"]+)"'}]
    >>> ev = {"hits": [{"file": "/srv/shop/php-errors.log",
    ...                 "example": 'Failed to write cache file "/srv/shop/var/cache/prod/twig/ab/x.php".'}]}
    >>> [(l.kind, l.value, l.origin, l.file) for l in find_leads([("log.cache_write_failed", "", ev)], rules)]
    [('folder', '/srv/shop/var/cache/prod/twig/ab/x.php', 'log.cache_write_failed', '/srv/shop/php-errors.log')]
    """
    ports = ports or {}
    out: dict[tuple[str, str], Lead] = {}
    per_kind: dict[str, int] = {}
    for fid, summary, evidence in findings:
        texts = [(summary, "")] if summary else []
        for text, file in [*evidence_texts(evidence), *texts]:
            for rule in rules:
                found = read_lead(rule, text, ports)
                if found is None:
                    continue
                value, service = found
                key = (rule["kind"], value)
                if key in out or per_kind.get(rule["kind"], 0) >= MAX_PER_KIND:
                    continue
                per_kind[rule["kind"]] = per_kind.get(rule["kind"], 0) + 1
                out[key] = Lead(rule["kind"], value, fid, rule["id"], text[:_LINE_KEEP], file, service)
    return list(out.values())
