"""Every lab scenario; importing this package imports each module here, which registers
the scenarios it defines (see prodx.lab.framework)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
