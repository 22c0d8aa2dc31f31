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
    #: True when ``services`` says what should run (the profile's list, a supervisor's
    #: programs), so some may be stopped; not only what discovery saw running.
    services_from_profile: bool = False
    http: list[HttpCheck] = field(default_factory=list)
    dependencies: list[Dependency] = field(default_factory=list)
    tls: list[TlsCheck] = field(default_factory=list)
    #: Where the user came from: "--as", "profile", "discovery" or "default".
    user_source: str = ""
    #: Writable folder → the user who writes there when that is not ``user`` (discovery saw
    #: several apps: a pool's session folder is written by that pool's user).
    writable_users: dict[str, UserInfo] = field(default_factory=dict)
    #: A second-pass target (prodx.probes.follow): only what it lists is examined, nothing the
    #: host shows besides (the first pass did that), and ``leads`` say what named each item.
    second_pass: bool = False
    leads: list[Any] = field(default_factory=list)


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

    def derive(self, target: Target) -> ProbeContext:
        """A context for ``target`` on the same host and KB that shares this one's facts (the
        process table, mounts, sockets are read once per run, whichever pass asks first)."""
        other = ProbeContext(self.host, target, self.kb, write_test=self.write_test)
        other._facts, other._locks, other._guard = self._facts, self._locks, self._guard
        return other

    def processes(self) -> list[ProcessInfo]:
        """The process table, read once per run: every probe sees the same processes."""
        return self.fact("processes", self.host.processes)

    def writer_of(self, directory: str) -> UserInfo | None:
        """Whose writes to test in ``directory``: its own writer when known, else the app's user."""
        return self.target.writable_users.get(directory) or self.target.user

    def discovery(self) -> Any:
        """What discovery found (``prodx.discovery.Discovery``): seeded by ``diagnose``, else
        computed once by the first probe that asks."""
        from prodx.discovery import Discovery, discover

        def compute() -> Any:
            try:
                return discover(self.host)
            except Exception as exc:  # noqa: BLE001 - a convenience: without it probes see less
                return Discovery(notes=[f"discovery failed: {type(exc).__name__}: {exc}"])

        return self.fact("discovery", compute)

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
