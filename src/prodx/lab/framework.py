"""What a fault scenario is, and how one is staged and always torn down.

A scenario is a small class that declares, as data, the KB condition it reproduces, the
conditions a fair judge also accepts, what it injects, what a user would see and what it
needs (root, commands from Debian packages, kernel features); and that implements
``setup``, ``inject``, ``teardown`` and ``profile`` against a :class:`~prodx.lab.sandbox.Sandbox`.
Subclasses with a ``name`` register themselves.

:func:`staged` is the one way to run a scenario: root check, stale-sandbox cleanup, SIGINT /
SIGTERM / SIGHUP turned into exceptions so ``finally`` runs, setup, backdating of what setup
made (days old, as on a real server: only what the fault changes is new), inject, the profile
file, and teardown on every way out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from prodx.lab.sandbox import Account, LabError, Sandbox, cleanup_stale

REGISTRY: dict[str, type[Scenario]] = {}

#: Commands every loop-mount scenario runs, with the Debian package that ships each.
LOOP_COMMANDS: tuple[tuple[str, str], ...] = (
    ("mkfs.ext4", "e2fsprogs"),
    ("losetup", "mount"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("useradd", "passwd"),
    ("userdel", "passwd"),
)


class NotRoot(LabError):
    """The lab needs root (mounts, loop devices, users)."""


@dataclass(frozen=True)
class Needs:
    """What a scenario needs from the host, as data.

    Attributes:
        root: needs uid 0.
        commands: (command, Debian package) pairs that must be on PATH.
        kernel: (/proc or /sys path that must exist, what it stands for) pairs.
        check: a last test that returns why the scenario cannot run, or None.
    """

    root: bool = True
    commands: tuple[tuple[str, str], ...] = LOOP_COMMANDS
    kernel: tuple[tuple[str, str], ...] = (("/dev/loop-control", "loop devices"),)
    check: Callable[[], str | None] | None = None

    def unmet(self) -> list[str]:
        """Why the scenario cannot run here; empty when it can."""
        out = []
        if self.root and os.geteuid() != 0:
            out.append("needs root")
        missing = sorted({pkg for cmd, pkg in self.commands if not _which(cmd)})
        if missing:
            out.append("needs Debian package" + ("s " if len(missing) > 1 else " ") + ", ".join(missing))
        out += [f"needs {what} ({path} missing)" for path, what in self.kernel if not os.path.exists(path)]
        if self.check is not None and not out:
            reason = self.check()
            if reason:
                out.append(reason)
        return out

    @property
    def packages(self) -> list[str]:
        return sorted({pkg for _cmd, pkg in self.commands})


def _which(cmd: str) -> str | None:
    # root's PATH may lack /usr/sbin when started through sudo or cron.
    return shutil.which(cmd) or shutil.which(cmd, path="/usr/sbin:/sbin:/usr/bin:/bin")


class Scenario:
    """Base class of every fault scenario. Subclasses set the class attributes and methods."""

    name: ClassVar[str] = ""
    condition: ClassVar[str] = ""
    accept: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    symptoms: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[Needs] = Needs()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in REGISTRY:
                raise TypeError(f"two lab scenarios named {cls.name}")
            REGISTRY[cls.name] = cls

    def __init__(self) -> None:
        #: What inject did, in numbers, one line each (printed by ``prodx lab run``).
        self.injected: list[str] = []
        #: The app's throwaway user, when the scenario has one.
        self.user: Account | None = None

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every condition id a fair judge accepts as the leading diagnosis."""
        return (self.condition, *self.accept)

    def setup(self, sb: Sandbox) -> None:
        """Build the healthy system: filesystems, users, app folders, services. History it
        writes (git commits, log lines) takes its time from ``sb.now()``; afterwards
        :func:`staged` makes every file it left days old."""

    def inject(self, sb: Sandbox) -> None:
        """Break it for real (what it writes stays new)."""
        raise NotImplementedError

    def teardown(self, sb: Sandbox) -> None:
        """Scenario-specific undo before the sandbox undoes its records (rarely needed)."""

    def profile(self, sb: Sandbox) -> str:
        """The prodx profile (TOML text) describing the scenario's app."""
        return profile_toml(name=f"lab-{self.name}", user=self.user.name if self.user else "root")


def profile_toml(*, name: str, user: str, writable: Sequence[str] = (), logs: Sequence[str] = (),
                 services: Sequence[str] = ()) -> str:
    """A prodx profile as TOML text.

    >>> print(profile_toml(name="lab-x", user="root", logs=["/tmp/a.log"]), end="")
    [app]
    name = "lab-x"
    user = "root"
    writable = []
    logs = ["/tmp/a.log"]
    services = []
    """
    # A JSON string is a valid TOML basic string (same escapes), so json.dumps quotes safely.
    def arr(items: Sequence[str]) -> str:
        return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"

    return (f"[app]\nname = {json.dumps(name)}\nuser = {json.dumps(user)}\nwritable = {arr(writable)}\n"
            f"logs = {arr(logs)}\nservices = {arr(services)}\n")


def all_scenarios() -> dict[str, type[Scenario]]:
    """Every registered scenario by name, in declaration order."""
    import prodx.lab.scenarios  # noqa: F401 - registers the scenarios

    return dict(REGISTRY)


def get_scenario(name: str) -> type[Scenario]:
    """The scenario called ``name``; LabError naming the known ones otherwise."""
    known = all_scenarios()
    if name not in known:
        raise LabError(f"no lab scenario named {name!r}; known: {', '.join(known)}")
    return known[name]


def require_root() -> None:
    """NotRoot unless running as uid 0."""
    if os.geteuid() != 0:
        raise NotRoot("the lab needs root (loop mounts, throwaway users): run it as root")


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """Within the block SIGINT raises KeyboardInterrupt and SIGTERM / SIGHUP raise SystemExit,
    so every ``finally`` runs; the old handlers come back afterwards.

    Only the main thread can set handlers; elsewhere the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _exit, signal.SIGHUP: _exit}
    old = {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@dataclass
class Staged:
    """A scenario set up and injected in its sandbox, with its profile written."""

    scenario: Scenario
    sandbox: Sandbox
    profile_path: Path
    teardown_problems: list[str] = field(default_factory=list)


@contextmanager
def staged(scenario: str | type[Scenario] | Scenario, *, keep: bool = False) -> Iterator[Staged]:
    """Set up and inject ``scenario`` in a fresh sandbox; tear everything down on the way out.

    Teardown runs on exceptions, Ctrl-C, SIGTERM and SIGHUP. With ``keep`` a clean exit leaves
    the sandbox running and marked kept (``prodx lab cleanup`` removes it); an exception still
    tears it down. Raises NotRoot, LabError (unmet needs or a failed step).
    """
    if isinstance(scenario, str):
        scenario = get_scenario(scenario)
    if isinstance(scenario, type):
        scenario = scenario()
    require_root()
    unmet = scenario.needs.unmet()
    if unmet:
        raise LabError(f"{scenario.name} cannot run here: {'; '.join(unmet)}")
    cleanup_stale()
    with exit_on_signals():
        sb = Sandbox(scenario.name)
        result = Staged(scenario, sb, sb.path("profile.toml"))
        ok = False
        try:
            scenario.setup(sb)
            sb.backdate()
            scenario.inject(sb)
            sb.write_text(result.profile_path, scenario.profile(sb))
            yield result
            ok = True
        finally:
            if keep and ok:
                sb.keep()
            else:
                try:
                    scenario.teardown(sb)
                finally:
                    result.teardown_problems = sb.teardown()
                    for problem in result.teardown_problems:
                        print(f"prodx lab: teardown: {problem}", file=sys.stderr)
