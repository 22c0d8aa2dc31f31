"""Shared fixtures: the real KB, and helpers that need root."""

from __future__ import annotations

import os

import pytest

from prodx.kb.loader import KnowledgeBase, load_kb


@pytest.fixture(scope="session")
def kb() -> KnowledgeBase:
    return load_kb()


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, users, setuid)")
