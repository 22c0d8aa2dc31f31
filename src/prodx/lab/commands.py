"""``prodx lab list|run|cleanup``: the lab's command bodies (cli.py only declares options).

``run`` stages a scenario, prints what it injected and what a user would see, then runs
``python -m prodx diagnose --profile <sandbox>/profile.toml`` as a child process, prints its
answer, and tears down (unless ``--keep``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import IO, Any

from prodx.lab.framework import NotRoot, all_scenarios, get_scenario, require_root, staged
from prodx.lab.sandbox import LabError, cleanup_stale
from prodx.model import ExitStatus

#: Deadline for the diagnosis child: diagnose answers in seconds; this only stops a hang.
DIAGNOSE_TIMEOUT_S = 120.0


def list_command(*, as_json: bool = False, out: IO[str] = sys.stdout) -> int:
    """Print every scenario: name, condition, what it injects, whether it can run here."""
    rows = []
    for name, cls in all_scenarios().items():
        unmet = cls.needs.unmet()
        rows.append({"name": name, "condition": cls.condition, "accept": list(cls.accept),
                     "injects": cls.description, "symptoms": list(cls.symptoms),
                     "packages": cls.needs.packages, "runnable": not unmet, "why_not": unmet})
    if as_json:
        out.write(json.dumps({"schema": "prodx.lab-list/1", "scenarios": rows}, indent=2) + "\n")
        return ExitStatus.NOTHING_LIKELY
    from rich.console import Console
    from rich.table import Table

    from prodx.report.safe import escape

    table = Table(show_lines=False, box=None, pad_edge=False)
    for col in ("scenario", "condition", "injects", "runs here"):
        table.add_column(col, overflow="fold")
    for r in rows:
        cond = r["condition"] + (f" (or {', '.join(r['accept'])})" if r["accept"] else "")
        # Descriptions hold brackets ("[[http]]", "[emerg]"): text, not Rich markup.
        table.add_row(*(escape(c) for c in (r["name"], cond, r["injects"],
                                            "yes" if r["runnable"] else "no: " + "; ".join(r["why_not"]))))
    Console(file=out, highlight=False, soft_wrap=False, width=160 if not out.isatty() else None).print(table)
    return ExitStatus.NOTHING_LIKELY


def diagnose(profile: str | None, *, as_json: bool) -> dict[str, Any]:
    """Run ``prodx diagnose`` as a child: {"returncode", "stdout", "stderr", "available", "json"}."""
    argv = [sys.executable, "-m", "prodx", "diagnose"]
    if profile:
        argv += ["--profile", profile]
    if as_json:
        argv.append("--json")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=DIAGNOSE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "stdout": "", "stderr": f"diagnose gave no answer within {DIAGNOSE_TIMEOUT_S:.0f} s",
                "available": True, "json": None}
    available = not (proc.returncode == 2 and "No such command" in proc.stderr)
    doc = None
    if as_json and available:
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            doc = None
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "available": available, "json": doc}


def verdict(doc: dict[str, Any] | None, accepted: tuple[str, ...]) -> dict[str, Any] | None:
    """Whether the diagnosis led with an accepted condition at probability ≥ 0.5; None without one."""
    if not doc:
        return None
    diff = doc.get("differential") or []
    lead = diff[0] if diff else {}
    prob = float(lead.get("probability") or 0.0)
    return {"leading": lead.get("condition"), "probability": prob,
            "reproduced": lead.get("condition") in accepted and prob >= 0.5}


def run_command(name: str, *, keep: bool = False, as_json: bool = False, use_profile: bool = True,
                out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """Stage ``name``, show the fault and prodx's diagnosis of it, tear down unless ``keep``."""
    try:
        scenario_cls = get_scenario(name)
        require_root()
    except (NotRoot, LabError) as exc:
        err.write(f"prodx lab: {exc}\n")
        return ExitStatus.USAGE_ERROR
    unmet = scenario_cls.needs.unmet()
    if unmet:
        err.write(f"prodx lab: {name} cannot run here: {'; '.join(unmet)}\n")
        return ExitStatus.USAGE_ERROR
    scenario = scenario_cls()

    def say(text: str) -> None:
        if not as_json:
            out.write(text + "\n")
            out.flush()

    report: dict[str, Any] = {"schema": "prodx.lab-run/1", "scenario": name, "condition": scenario.condition,
                              "accept": list(scenario.accept)}
    try:
        with staged(scenario, keep=keep) as run:
            root = str(run.sandbox.root)
            say(f"lab scenario {name}: reproduces {scenario.condition}"
                + (f" (also accepted: {', '.join(scenario.accept)})" if scenario.accept else ""))
            say(f"sandbox {root}\n\ninjected:")
            for line in scenario.injected:
                say(f"  - {line}")
            say("\nwhat a user would see:")
            for line in scenario.symptoms:
                say(f"  - {line}")
            profile = str(run.profile_path) if use_profile else None
            say(f"\n$ prodx diagnose{' --profile ' + profile if profile else ''}\n")
            result = diagnose(profile, as_json=as_json)
            if not result["available"]:
                say("diagnose not available in this build of prodx")
            else:
                say(result["stdout"].rstrip())
                if result["stderr"].strip():
                    err.write(result["stderr"])
            report.update(sandbox=root, profile=profile, injected=scenario.injected, symptoms=list(scenario.symptoms),
                          diagnose_available=result["available"], diagnose_exit=result["returncode"],
                          diagnosis=result["json"], verdict=verdict(result["json"], scenario.accepted), kept=keep)
            if keep:
                say(f"\nkept: the fault stays in {root} (processes keep running).\n"
                    f"clean up with: prodx lab cleanup {root}")
    except KeyboardInterrupt:
        err.write("prodx lab: interrupted; the sandbox was torn down\n")
        return 130
    except LabError as exc:
        err.write(f"prodx lab: {name}: {exc} (the sandbox was torn down)\n")
        return ExitStatus.INTERNAL_ERROR
    if not keep:
        say("\nsandbox torn down")
    if as_json:
        out.write(json.dumps(report, indent=2, default=str) + "\n")
    return ExitStatus.NOTHING_LIKELY


def cleanup_command(paths: tuple[str, ...] = (), *, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """Tear down kept sandboxes (all, or those at ``paths``) and any a killed run left."""
    try:
        require_root()
    except NotRoot as exc:
        err.write(f"prodx lab: {exc}\n")
        return ExitStatus.USAGE_ERROR
    done = cleanup_stale(include_kept=True, only=[p.rstrip("/") for p in paths] or None)
    for root, problems in done:
        out.write(f"removed {root}" + (f" (left: {'; '.join(problems)})" if problems else "") + "\n")
    if not done:
        out.write("no lab sandboxes to clean up\n")
    return ExitStatus.INTERNAL_ERROR if any(p for _r, p in done) else ExitStatus.NOTHING_LIKELY
