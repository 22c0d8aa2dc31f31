"""How prodx touches a machine: the running one (``LocalHost``) or a captured tree
(``FixtureHost``). Probes see only the ``Host`` interface."""

from prodx.host.base import Host
from prodx.host.fixture import FixtureHost
from prodx.host.local import LocalHost

__all__ = ["FixtureHost", "Host", "LocalHost"]
