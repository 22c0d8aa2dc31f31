"""Declares the optional C walker; all other metadata lives in pyproject.toml."""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    # optional=True: a failed compile (no gcc, no Python headers) still installs prodx,
    # and prodx.scanners.space falls back to its pure-Python walker.
    ext_modules.append(
        Extension(
            "prodx.scanners._fastscan",
            sources=["src/prodx/scanners/_fastscan.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
