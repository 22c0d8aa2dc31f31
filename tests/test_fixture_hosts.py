"""Probes on fixture hosts captured from real lab scenarios (tests/fixtures/capture.py):
replaying a capture must give the findings the real run observed and rank the injected
condition first. No root, no mounts: this is how probe logic is unit-tested."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prodx.diagnosis import DiagnoseOptions, diagnose
from prodx.engine.posterior import rank
from prodx.host.fixture import FixtureHost
from prodx.model import FindingState

HOSTS = sorted((Path(__file__).parent / "fixtures" / "hosts").glob("*/expected.yaml"))


@pytest.fixture(params=HOSTS, ids=[p.parent.name for p in HOSTS])
def replayed(request, kb):
    directory = request.param.parent
    expected = yaml.safe_load(request.param.read_text())
    # A replay cannot hang, but a loaded machine can slow it: a generous deadline keeps a
    # busy CI from turning findings into timeouts.
    profile = directory / "profile.toml"  # none in a capture made without a profile
    options = DiagnoseOptions(profile_path=str(profile) if profile.exists() else "", deadline_s=60)
    result = diagnose(options, host=FixtureHost(directory), kb=kb)
    return expected, result


def test_fixture_host_replay_gives_the_captured_findings(replayed):
    """Every finding the real run saw present or absent comes out the same from its capture.
    (Probes written after the capture may add findings; those are not judged here.)"""
    expected, result = replayed
    states = {f.id: f.state for f in result.findings}
    assert {f: states.get(f) for f in expected["present"]} == {f: FindingState.PRESENT for f in expected["present"]}
    assert {f: states.get(f) for f in expected["absent"]} == {f: FindingState.ABSENT for f in expected["absent"]}


def test_fixture_host_replay_ranks_the_injected_condition_first(replayed, kb):
    expected, result = replayed
    if "areas" in expected:
        # Captured on a shared machine (capture.py --areas): ranked on its areas' findings alone.
        areas = tuple(expected["areas"])
        ranked = rank(kb, {f.id: f.state for f in result.findings if f.id.startswith(areas)})
        leader, probability = ranked.leader, ranked.likely_probability
    else:
        leader, probability = result.differential.leader, result.differential.likely_probability
    assert leader.condition in kb.chain(expected["condition"])  # it, or the condition it refines
    assert probability >= expected.get("min_probability", 0.5)


def test_fixture_hosts_exist():
    assert len(HOSTS) >= 8
