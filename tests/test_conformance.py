"""One test walks every probe and KB file: docstrings present, declared ids exist,
deadlines under the ceiling, every finding observable by some probe or question."""

from __future__ import annotations

import inspect
import re
import sys

import pytest

from prodx.probes import load_all
from prodx.probes.base import DEADLINE_CEILING_S

PROBES = load_all()


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_declares_a_valid_contract(name, kb):
    cls = PROBES[name]
    assert re.fullmatch(r"[a-z]+\.[a-z_]+", name), "probe names are area.noun"
    assert inspect.getdoc(cls), f"{name} has no class docstring"
    assert (sys.modules[cls.__module__].__doc__ or "").strip(), f"{cls.__module__} has no module docstring"
    assert cls.findings, f"{name} declares no findings"
    for fid in cls.findings:
        assert fid in kb.findings, f"{name} declares {fid}, absent from the catalogue"
    assert 0 < cls.deadline_s <= DEADLINE_CEILING_S
    assert cls.cost > 0
    assert inspect.isgeneratorfunction(cls.run), f"{name}.run must yield findings"


def test_only_the_write_test_writes():
    assert [n for n, c in PROBES.items() if c.writes] == ["storage.write_test"]


def test_every_finding_is_observable_by_a_probe_or_a_question(kb):
    declared = {fid for cls in PROBES.values() for fid in cls.findings}
    for fid, fdef in kb.findings.items():
        if fdef.observed_by == "probe":
            assert fid in declared, f"{fid} says a probe observes it, but none declares it"
        else:
            assert fdef.question, f"{fid} is asked but has no question"


def test_every_signature_supports_a_declared_finding(kb):
    declared = {fid for cls in PROBES.values() for fid in cls.findings}
    for sig in kb.signatures:
        assert sig["finding"] in declared, sig["id"]
