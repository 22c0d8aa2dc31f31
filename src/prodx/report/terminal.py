"""The human report of a diagnosis: headline, differential, evidence, next test, remedy.

Written for a person at 3 a.m.: the leading condition and its probability first, then why
(the real numbers and paths), what to check next, and what to do, safe steps first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prodx.diagnosis import Diagnosis
from prodx.engine.alike import SHOWN_SHARE
from prodx.model import LIKELY_PROBABILITY, Finding, FindingState, ProbeStatus
from prodx.report.diagnosis_json import ordered_remedy, timeline

if TYPE_CHECKING:
    from rich.console import Console

_RISK_STYLE = {"safe": "green", "downtime": "yellow", "data-loss": "bold red"}


def _pct(p: float) -> str:
    return f"{100 * p:.0f} %" if p >= 0.01 else "<1 %"


def render_terminal(d: Diagnosis, console: Console) -> None:
    from prodx.report.safe import escape
    from rich.table import Table

    kb = d.kb
    ranked = d.differential.ranked
    leader = ranked[0] if ranked else None
    console.print(
        f"[bold]prodx diagnose[/] · {escape(d.host)} · {d.started_at} · {d.duration_s:.2f} s"
        + (f" · profile {escape(d.profile.source)}" if d.profile.source else " · no profile")
    )
    console.print()
    if not d.differential.enough_to_go_on:
        _not_enough(d, console)
        _footer(d, console, unmatched=False)
        return
    family = d.differential.family_leader
    if leader and leader.probability >= LIKELY_PROBABILITY:
        cond = kb.conditions[leader.condition]
        console.print(f"[bold red]LIKELY: {escape(cond.name)}[/] [dim]({leader.condition})[/] — [bold]{_pct(leader.probability)}[/]")
    elif leader and d.differential.family_probability >= LIKELY_PROBABILITY:
        root = kb.conditions[family]
        console.print(
            f"[bold red]LIKELY: {escape(root.name)}[/] [dim]({family}, with its specific causes)[/] — "
            f"[bold]{_pct(d.differential.family_probability)}[/]; the cause is not settled yet: "
            f"{leader.condition} {_pct(leader.probability)}"
            + "".join(f", {r.condition} {_pct(r.probability)}" for r in ranked[1:3] if family in kb.chain(r.condition))
        )
    elif leader:
        cond = kb.conditions[leader.condition]
        console.print(
            f"[bold yellow]No condition is likely yet.[/] Leading: {escape(cond.name)} "
            f"[dim]({leader.condition})[/] at {_pct(leader.probability)}"
        )
    if leader:
        console.print(f"  {escape(_first_sentence(kb.conditions[leader.condition].summary))}", style="dim")
        chain = kb.chain(leader.condition)
        if len(chain) > 1:
            why = _hog_evidence(d, leader.support)
            console.print(
                f"  [bold]{' → '.join(reversed(chain))}[/]: {escape(kb.conditions[chain[1]].name.lower())}, "
                f"because {escape(kb.conditions[chain[0]].name.lower())}" + (f": {escape(why)}" if why else "")
            )
    for pair in d.differential.pairs:
        console.print(
            f"[bold magenta]Two causes at once?[/] {pair.first} + {pair.second} together explain the findings "
            f"{pair.factor:,.0f}× better than either alone"
            + (f" ({', '.join(pair.explained_only_together)})" if pair.explained_only_together else "")
        )
    console.print()

    table = Table(title="Differential", title_justify="left", show_edge=False, box=None, padding=(0, 1))
    table.add_column("P", justify="right")
    table.add_column("condition")
    table.add_column("name")
    table.add_column("distinctive evidence", style="green")
    shown = ranked[:6]
    # Findings every row shares (a full disk) tell the rows apart no better than nothing.
    common = set.intersection(*(set(r.support) for r in shown)) if len(shown) > 1 else set()
    for row in shown:
        own = [f for f in row.support if f not in common]
        table.add_row(_pct(row.probability), row.condition, kb.conditions[row.condition].name, ", ".join(own[:3]) or "—")
    table.add_row(_pct(d.differential.none_probability), "—", "none of the known conditions", "", style="dim")
    console.print(table)
    console.print()

    if leader:
        by_id = {f.id: f for f in d.findings}
        # A group's later witnesses are the same event as its first: say so, it counts once.
        same_as = {fid: fids[0] for _gid, fids in leader.support_groups for fid in fids[1:]}
        console.print(f"[bold]Evidence for {leader.condition}[/]")
        for fid in leader.support or ():
            f = by_id.get(fid)
            mark = "+" if f and f.state is FindingState.PRESENT else "−"
            once = f" [dim](same event as {same_as[fid]}, counted once)[/]" if fid in same_as else ""
            console.print(f"  [green]{mark}[/] [bold]{fid}[/]{once} {escape(_evidence_line(f))}")
        alike = d.alike is not None and leader.alike >= SHOWN_SHARE and leader.alike_words
        if alike:
            console.print(f"  [green]≈[/] [bold]your account[/] reads like its incidents "
                          f"({leader.alike:.0%} of the resemblance; words: {escape(', '.join(leader.alike_words))})")
        if not leader.support and not alike:
            console.print("  (nothing observed points to it yet)", style="dim")
        if leader.against:
            console.print("[bold]Against[/]")
            for fid in leader.against:
                f = by_id.get(fid)
                console.print(f"  [red]✗[/] [bold]{fid}[/] {escape(_evidence_line(f))}")
        cond = kb.conditions[leader.condition]
        if leader.explains:
            console.print("[bold]Explains your symptoms[/]")
            for sid in leader.explains:
                console.print(f"  ✓ {sid}: {escape(cond.explains[sid])}")
        unexplained = [f.id for f in d.findings if f.id.startswith("symptom.") and f.present and f.id not in leader.explains]
        if unexplained:
            console.print(f"  [yellow]not explained by it:[/] {', '.join(unexplained)}")
        console.print()

    _what_changed(d, console)

    if d.next_tests:
        console.print("[bold]Next test[/] (most information per effort)")
        for t in d.next_tests:
            how = "run the probe" if t.how == "probe" else "ask"
            console.print(f"  → {escape(t.question)} [dim]({t.finding}, {how}, {t.gain:.2f} bits)[/]")
        console.print()

    if leader and leader.probability >= 0.2:
        cond = kb.conditions[leader.condition]
        console.print(f"[bold]Remedy for {leader.condition}[/] (safe steps first)")
        for i, step in enumerate(ordered_remedy(cond), 1):
            style = _RISK_STYLE[step.risk]
            cmd = f"\n       [cyan]{escape(step.command)}[/]" if step.command else ""
            console.print(f"  {i}. [{style}]\\[{step.risk}][/] {escape(step.step)}{cmd}")
        if cond.avoid:
            console.print("[bold]Do not[/]")
            for text in cond.avoid:
                console.print(f"  ✗ {escape(text)}")
        console.print()

    _footer(d, console)


def _not_enough(d: Diagnosis, console: Console) -> None:
    """Nothing observed or said bears on any condition: say so, show what was not
    understood and the questions whose answers would, instead of ranking by prior."""
    from prodx.report.safe import escape

    console.print("[bold yellow]NOT ENOUGH TO GO ON.[/] Nothing observed or said bears on any known condition, "
                  "so a ranking would only repeat how common each failure is.")
    for u in d.unmatched:
        near = f" [dim](nearest: {', '.join(u.nearest)})[/]" if u.nearest else ""
        console.print(f"  [yellow]symptom not understood:[/] \"{escape(u.text)}\"{near}")
    if d.next_tests:
        console.print("[bold]Questions to answer[/] (each would tell the likely failures apart)")
        for t in d.next_tests:
            how = "run the probe" if t.how == "probe" else "ask"
            console.print(f"  → {escape(t.question)} [dim]({t.finding}, {how})[/]")
    console.print("  [dim]Say what you see with --symptom \"...\" (error messages, status codes, what changed), "
                  "or run without --no-probes; `prodx ask` asks these questions one at a time.[/]")
    console.print()


def _what_changed(d: Diagnosis, console: Console) -> None:
    """The timeline of changes against the first errors, when a change was found."""
    from prodx.report.safe import escape

    events = timeline(d)
    if not any(e["kind"] != "error" for e in events):
        return
    console.print("[bold]What changed[/] (last 48 h, oldest first; errors in red)")
    packages = [e for e in events if e["kind"] == "package"]
    hidden = packages[:-5] if len(packages) > 5 else []
    if hidden:
        console.print(f"  [dim]… {len(hidden)} earlier package change(s) (see the JSON timeline)[/]")
    for e in events:
        if e in hidden:
            continue
        when = e["when"][5:16].replace("T", " ")
        what = e["what"] if len(e["what"]) <= 100 else e["what"][:99] + "…"
        if e["kind"] == "error":
            console.print(f"  [red]{when}  ✗ {escape(what)}[/]")
        else:
            console.print(f"  {when}  {escape(what)} [dim]({e['kind']})[/]")
    console.print()


def _first_sentence(text: str) -> str:
    head, sep, _rest = text.partition(". ")
    return head + "." if sep else text


def _hog_evidence(d: Diagnosis, support: tuple[str, ...]) -> str:
    for fid in support:
        if fid.startswith("storage.hog_"):
            f = d.finding(fid)
            if f and f.summary:
                return f.summary
    return ""


def _evidence_line(f: Finding | None) -> str:
    if f is None:
        return ""
    if f.state is FindingState.ABSENT:
        return f"(absent) {f.summary}"
    return f.summary or f.reason


def _footer(d: Diagnosis, console: Console, *, unmatched: bool = True) -> None:
    from prodx.report.safe import escape

    if d.probe_runs:
        line = "[dim]Probes: "
        for label, runs in (("", [r for r in d.probe_runs if not r.followed]),
                            ("; second pass (following the evidence): ", [r for r in d.probe_runs if r.followed])):
            counts: dict[str, int] = {}
            for r in runs:
                counts[r.status.value] = counts.get(r.status.value, 0) + 1
            if counts:
                line += label + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        console.print(line + "[/]")
        for r in d.probe_runs:
            if r.status is not ProbeStatus.OK:
                console.print(f"  [yellow]{r.name}{' (second pass)' if r.followed else ''}: {r.status.value}[/] {escape(r.detail)}")
    else:
        console.print("[dim]No probes run (--no-probes): reasoning from symptoms alone.[/]")
    unknown = [f for f in d.findings if f.state is FindingState.UNKNOWN and not f.id.startswith("symptom.")]
    reasons: dict[str, list[str]] = {}
    for f in unknown:
        reasons.setdefault(f.reason, []).append(f.id)
    for reason, ids in sorted(reasons.items()):
        console.print(f"  [dim]unknown ({len(ids)}): {escape(reason)} — {', '.join(ids[:4])}{'…' if len(ids) > 4 else ''}[/]")
    for u in d.unmatched if unmatched else ():
        near = f" (nearest: {', '.join(u.nearest)})" if u.nearest else ""
        console.print(f"  [yellow]symptom not understood:[/] \"{escape(u.text)}\"{near}")
