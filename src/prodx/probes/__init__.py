"""Probes: one module per area, each self-registering. ``all_probes()`` imports them all."""

from __future__ import annotations

import importlib
import pkgutil

from prodx.probes.base import REGISTRY, Probe


def load_all() -> dict[str, type[Probe]]:
    """Every registered probe class, by name: importing each module of this package
    registers the probes it defines."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(REGISTRY.items()))


def all_probes() -> list[Probe]:
    """One instance of every probe, in name order."""
    return [cls() for cls in load_all().values()]
