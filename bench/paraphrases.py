"""Benchmark: does prodx understand a fact however an operator says it?

Reads ``bench/paraphrases/bank-*.yaml`` and ``validation.yaml``: for each matchable finding,
six statements that assert it (``says``), two that deny it (``denies``) and two that share
its words but mean something else (``unrelated``), written by two people (in different
voices) who had not seen the KB's phrase lists. Each statement goes through
``prodx.engine.symptoms.match_symptoms`` alone. The first bank's statements are dealt into a
``dev`` half (what the vocabulary may be tuned on) and a ``test`` half (never tuned on) by
SHA-256 of the finding and the statement, so a finding's statements fall on both sides; the
second bank is ``validation``, a check of tuning choices made on ``dev`` that is itself never
tuned on statement by statement. Prints, per half:

- recall: share of ``says`` that map to their finding as present;
- denial: share of ``denies`` that map to it as absent (and how many map to it as present: wrong);
- false alarms: share of ``unrelated`` that map to it as present.

    python bench/paraphrases.py                 # every half
    python bench/paraphrases.py --half dev -v   # the dev half, with every miss printed
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import yaml

from prodx.engine.symptoms import match_symptoms
from prodx.kb.loader import KnowledgeBase, load_kb
from prodx.model import FindingState

BANK = Path(__file__).resolve().parent / "paraphrases"
KINDS = ("says", "denies", "unrelated")


def half_of(finding: str, statement: str) -> str:
    """``dev`` or ``test``, fixed by the finding and the statement's text.

    >>> half_of("symptom.http_5xx", "nginx keeps throwing 502s") in ("dev", "test")
    True
    """
    digest = hashlib.sha256(f"{finding}\0{statement}".encode()).digest()
    return "dev" if digest[0] % 2 == 0 else "test"


HALVES = ("dev", "test", "validation")


def load_bank(directory: Path = BANK) -> list[tuple[str, str, str, str]]:
    """(half, kind, finding, statement) for every statement of the banks, in file order."""
    rows = []
    for path in [*sorted(directory.glob("bank-*.yaml")), directory / "validation.yaml"]:
        if not path.exists():
            continue
        for entry in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            for kind in KINDS:
                for statement in entry.get(kind) or []:
                    half = "validation" if path.name == "validation.yaml" else half_of(entry["finding"], statement)
                    rows.append((half, kind, entry["finding"], str(statement)))
    return rows


def measure(rows: list[tuple[str, str, str, str]], kb: KnowledgeBase) -> dict[str, dict[str, list]]:
    """Per half and kind, the (finding, statement, state it mapped to or None) of every row."""
    out: dict[str, dict[str, list]] = {}
    for half, kind, finding, statement in rows:
        findings, _unmatched = match_symptoms([statement], kb)
        state = next((f.state for f in findings if f.id == finding), None)
        out.setdefault(half, {k: [] for k in KINDS})[kind].append((finding, statement, state))
    return out


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} = {100 * n / d:.1f} %" if d else "n/a"


def report(results: dict[str, dict[str, list]], verbose: bool, show_test: bool = False) -> str:
    """The figures per half; with ``verbose`` every miss too, except the test half's unless
    ``show_test``: a list of its misses in front of whoever tunes the words is tuning on it."""
    lines = []
    for half in HALVES:
        if half not in results:
            continue
        r = results[half]
        says, denies, unrelated = r["says"], r["denies"], r["unrelated"]
        lines += [f"== {half} half ==",
                  "  recall (says -> present)        " + _pct(sum(s is FindingState.PRESENT for *_x, s in says), len(says)),
                  "  denial (denies -> absent)       " + _pct(sum(s is FindingState.ABSENT for *_x, s in denies), len(denies)),
                  "  denial read as present (wrong)  " + _pct(sum(s is FindingState.PRESENT for *_x, s in denies), len(denies)),
                  "  false alarms (unrelated -> present) " + _pct(sum(s is FindingState.PRESENT for *_x, s in unrelated), len(unrelated))]
        if verbose and half == "test" and not show_test:
            lines.append("    (the test half's misses are not printed: --show-test, for the final report, not for tuning)")
        elif verbose:
            lines += [f"    missed   {f}: {t}" for f, t, s in says if s is not FindingState.PRESENT]
            lines += [f"    denial   {f} ({s.value if s else 'nothing'}): {t}" for f, t, s in denies if s is not FindingState.ABSENT]
            lines += [f"    alarm    {f}: {t}" for f, t, s in unrelated if s is FindingState.PRESENT]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--half", choices=HALVES, action="append", help="Only this half (repeatable).")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="Print every miss, wrong denial and false alarm (the test half's only with --show-test).")
    parser.add_argument("--show-test", action="store_true",
                        help="With -v, print the test half's misses too (for the final report, not for tuning).")
    args = parser.parse_args(argv)
    rows = [r for r in load_bank() if not args.half or r[0] in args.half]
    if not rows:
        print(f"paraphrases: no statements in {BANK}", file=sys.stderr)
        return 2
    print(report(measure(rows, load_kb()), args.verbose, args.show_test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
