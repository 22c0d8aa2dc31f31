"""Every lab scenario; importing this package registers them (see prodx.lab.framework)."""

from prodx.lab.scenarios import storage, permissions, web  # isort: skip - list order  # noqa: F401 - registration by import
