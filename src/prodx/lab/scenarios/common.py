"""The healthy system most scenarios start from: an app on a small loop-mounted ext4.

Layout inside the sandbox::

    disk.img                      sparse ext4 image (size and mkfs options per scenario)
    mnt/                          its mount point
    mnt/app/var/{cache,log,sessions}   owned by the throwaway app user
    mnt/app/var/log/prod.log      a few healthy log lines

and, for a served app (``ServedAppOnLoop``), a real nginx + PHP-FPM (prodx.lab.webstack) as
the app user with its pages in ``mnt/app/public`` and its sessions in ``mnt/app/var/sessions``,
so the app runs, writes its own errors when the fault bites, and can be discovered like a
real server's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from prodx.lab.framework import LOOP_COMMANDS, Needs, Scenario, profile_toml
from prodx.lab.sandbox import Account, LabError, Sandbox

_FILL_SOURCE = (Path(__file__).resolve().parent.parent / "fill.py").read_text(encoding="utf-8")

APP_DIRS = ("var/cache", "var/log", "var/sessions")


def child_python() -> str:
    """A Python any user may execute: the system one (Debian package python3), since ours may
    live in a home directory the throwaway user cannot enter (pyenv, a venv under /root)."""
    return next((p for p in ("/usr/bin/python3", "/bin/python3") if os.access(p, os.X_OK)), sys.executable)


def fill_argv(mode: str, *args: str | os.PathLike[str]) -> list[str]:
    """argv running the stdlib-only filler (prodx/lab/fill.py) in isolated mode, for any user."""
    return [child_python(), "-I", "-c", _FILL_SOURCE, mode, *map(str, args)]


def fill(sb: Sandbox, mode: str, *paths: str | os.PathLike[str], user: Account | None = None,
         timeout_s: float = 300.0) -> dict[str, Any]:
    """Run a filler (see prodx/lab/fill.py) until the kernel refuses; its JSON result.

    Raises LabError when the filler stopped without being refused: the fault is not real.
    """
    checked = [str(sb.check(p)) for p in paths[:1]] + [str(p) for p in paths[1:]]
    proc = sb.run(fill_argv(mode, *checked), user=user, timeout_s=timeout_s)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result.get("errno"):
        raise LabError(f"filler {mode} stopped without an error: {result}")
    return result


def mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


class AppOnLoop(Scenario):
    """An app whose var/ lives on its own small ext4, run by a throwaway user."""

    size_mib: ClassVar[int] = 48
    mkfs_args: ClassVar[tuple[str, ...]] = ()
    mount_options: ClassVar[tuple[str, ...]] = ()

    def disk_image(self, sb: Sandbox) -> Path:
        """The ext4 image the app's var/ lives on (a sparse file in the sandbox)."""
        return sb.make_ext4("disk.img", self.size_mib, self.mkfs_args)

    def setup(self, sb: Sandbox) -> None:
        image = self.disk_image(sb)
        _dev, self.mnt = sb.mount_image(image, "mnt", self.mount_options)
        self.user = sb.add_user()
        self.app = sb.mkdirs(self.mnt / "app", owner=self.user)
        for d in APP_DIRS:
            sb.mkdirs(self.app / d, owner=self.user)
        self.log = sb.write_text(
            self.app / "var/log/prod.log",
            '[2024-05-14T03:12:45.123456+00:00] request.INFO: Matched route "app_home". {"route":"app_home"} []\n',
            owner=self.user,
        )

    def app_path(self, rel: str) -> Path:
        return self.app / rel

    def profile(self, sb: Sandbox) -> str:
        assert self.user is not None
        return profile_toml(name=f"lab-{self.name}", user=self.user.name,
                            writable=[str(self.app / d) for d in ("var/cache", "var/sessions", "var/log")],
                            logs=[str(self.log)])


def _webstack_unmet() -> str | None:
    from prodx.lab.webstack import webstack_unmet

    return webstack_unmet()


class ServedAppOnLoop(AppOnLoop):
    """An app on a loop-mounted ext4 that really runs: nginx + PHP-FPM as the app's user serve
    ``pages`` from mnt/app/public and keep PHP sessions in mnt/app/var/sessions."""

    needs = Needs(commands=LOOP_COMMANDS, check=_webstack_unmet)
    #: File name → PHP source, written to the document root.
    pages: ClassVar[dict[str, str]] = {}

    def setup(self, sb: Sandbox) -> None:
        from prodx.lab.webstack import WebStack

        super().setup(sb)
        assert self.user is not None
        self.web = WebStack(sb, self.user, self.app / "public", self.app / "var/sessions")
        self.web.start()
        for name, source in self.pages.items():
            sb.write_text(self.web.docroot / name, source, owner=self.user)

    def get(self, path: str) -> tuple[int, str]:
        """(HTTP status, body) of a GET through nginx, as a browser would see it."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.web.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def profile(self, sb: Sandbox) -> str:
        assert self.user is not None
        return profile_toml(name=f"lab-{self.name}", user=self.user.name,
                            writable=[str(self.app / d) for d in ("var/cache", "var/sessions", "var/log")],
                            logs=[str(self.log), *self.web.logs], services=self.web.service_names)
