"""Every lab scenario; importing this package registers them (see prodx.lab.framework)."""

from prodx.lab.scenarios import permissions, storage, web  # noqa: F401 - registration by import
