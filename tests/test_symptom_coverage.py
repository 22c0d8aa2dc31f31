"""How much of what operators wrote in real incidents prodx understands.

Every symptom and observation line of the shared cases (``../shared/cases/*.yaml``, public
postmortems paraphrased) is run through the matcher on its own; a line is covered when it maps
to at least one symptom finding. Lines of pure context ("Ubuntu 16.04 with MySQL 5.7", "no
alert fired") map to nothing, so the floor stays below 100 %. The figure and the lines left
over are printed (``pytest -s``) to show where the catalogue is thin.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prodx.engine.symptoms import match_symptoms

CASES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "cases"
CASES = sorted(CASES_DIR.glob("*.yaml")) if CASES_DIR.is_dir() else []
#: The share of lines that must map to a symptom: 66 of 79 lines (84 %) map today.
FLOOR = 0.80


def _lines() -> list[str]:
    out = []
    for path in CASES:
        case = yaml.safe_load(path.read_text(encoding="utf-8"))
        out += [*case["symptoms"], *case.get("observations", [])]
    return out


@pytest.mark.skipif(not CASES, reason=f"no shared cases at {CASES_DIR}")
def test_symptom_coverage_of_shared_case_lines_reaches_floor(kb):
    lines = _lines()
    unmapped = [line for line in lines if not match_symptoms([line], kb)[0]]
    covered = 1 - len(unmapped) / len(lines)
    print(f"\nsymptom coverage: {len(lines) - len(unmapped)}/{len(lines)} lines ({covered:.0%}) map to a symptom")
    for line in unmapped:
        print(f"  unmapped: {line}")
    assert covered >= FLOOR


@pytest.mark.skipif(not CASES, reason=f"no shared cases at {CASES_DIR}")
def test_symptom_coverage_every_case_maps_at_least_one_line(kb):
    silent = []
    for path in CASES:
        case = yaml.safe_load(path.read_text(encoding="utf-8"))
        findings, _ = match_symptoms([*case["symptoms"], *case.get("observations", [])], kb)
        if not findings:
            silent.append(path.name)
    assert silent == []
