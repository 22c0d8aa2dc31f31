"""The lab: fault scenarios reproduced for real in a sandbox, for tests, benchmarks and drills.

    from prodx.lab import staged
    with staged("disk-full") as run:
        ...  # run.sandbox.root, run.profile_path, run.scenario.injected

See framework (Scenario, Needs, staged), sandbox (Sandbox) and scenarios/.
"""

from prodx.lab.framework import (
    Needs,
    NotRoot,
    Scenario,
    Staged,
    all_scenarios,
    get_scenario,
    require_root,
    staged,
)
from prodx.lab.sandbox import LabError, Sandbox, SandboxEscape, cleanup_stale

__all__ = [
    "LabError",
    "Needs",
    "NotRoot",
    "Sandbox",
    "SandboxEscape",
    "Scenario",
    "Staged",
    "all_scenarios",
    "cleanup_stale",
    "get_scenario",
    "require_root",
    "staged",
]
