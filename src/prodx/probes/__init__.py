"""Probes: one module per area, each self-registering. ``all_probes()`` imports them all."""

from __future__ import annotations

import importlib

from prodx.probes.base import REGISTRY, Probe

_MODULES = (
    "storage",
    "write_test",
    "ownership",
    "deleted_open",
    "space",
    "logs",
)


def load_all() -> dict[str, type[Probe]]:
    """Every registered probe class, by name."""
    for module in _MODULES:
        importlib.import_module(f"prodx.probes.{module}")
    return dict(sorted(REGISTRY.items()))


def all_probes() -> list[Probe]:
    """One instance of every probe, in name order."""
    return [cls() for cls in load_all().values()]
