"""What a probe is, and the context it runs in.

A probe is a small class declaring its name (``area.noun``), the finding ids it may assert,
its cost and deadline, whether it needs root, and ``run(ctx)``, a generator of findings. It
touches the machine only through ``ctx.host``, prints nothing and does nothing at import.
Subclasses register themselves; the runner owns deadlines and turns exceptions into
``timeout``, ``error`` or ``unprivileged``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from prodx.host.base import Host, ProcessInfo, UserInfo
from prodx.kb.loader import KnowledgeBase
from prodx.profile import Dependency, HttpCheck, TlsCheck
from prodx.model import Finding

REGISTRY: dict[str, type[Probe]] = {}

#: No probe may declare a deadline above this: a 3 a.m. tool answers in seconds.
DEADLINE_CEILING_S = 10.0

T = TypeVar("T")


class Probe:
    """Base class of every probe. Subclasses set the class attributes and ``run``."""

    name: ClassVar[str] = ""
    findings: ClassVar[tuple[str, ...]] = ()
    cost: ClassVar[float] = 1.0
    deadline_s: ClassVar[float] = 2.0
    needs_root: ClassVar[bool] = False
    #: Set when the probe writes (only the write test may): turned off by --no-write-test.
    writes: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        raise NotImplementedError


@dataclass
class Target:
    """What the probes examine: the app as the profile (or the defaults) describe it."""

    name: str = ""
    user: UserInfo | None = None
    user_name: str = ""
    writable: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    #: True when ``writable`` is the site's own list, not the defaults every host has.
    writable_from_profile: bool = False
    #: True when ``services`` is the profile's list, not what discovery recognised running.
    services_from_profile: bool = False
    http: list[HttpCheck] = field(default_factory=list)
    dependencies: list[Dependency] = field(default_factory=list)
    tls: list[TlsCheck] = field(default_factory=list)


class ProbeContext:
    """The host, the target, the KB's data (signatures, hog rules) and facts several probes
    share, each computed once on demand."""

    def __init__(self, host: Host, target: Target, kb: KnowledgeBase, *, write_test: bool = True) -> None:
        self.host = host
        self.target = target
        self.kb = kb
        self.write_test = write_test
        self._facts: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def processes(self) -> list[ProcessInfo]:
        """The process table, read once per run: every probe sees the same processes."""
        return self.fact("processes", self.host.processes)

    def seed(self, key: str, value: Any) -> None:
        """Provide fact ``key`` computed before the probes ran (discovery)."""
        with self._guard:
            self._facts[key] = (True, value)

    def fact(self, key: str, compute: Callable[[], T]) -> T:
        """The shared fact ``key``, computed by the first probe that asks for it.

        Exceptions are cached too, so every probe that needs a fact sees the same failure.
        """
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._facts:
                try:
                    self._facts[key] = (True, compute())
                except Exception as exc:  # noqa: BLE001 - re-raised to each caller below
                    self._facts[key] = (False, exc)
            ok, value = self._facts[key]
        if not ok:
            raise value
        return value
