"""Splits the incident corpus into a tuning half and a held-out half, once, before any tuning.

Reads every ``*.yaml`` case in ``bench/corpus/incoming/`` (or checks an existing split when
that folder is empty). Within each root cause the cases are ordered by SHA-256 of
``SALT + id`` and dealt alternately to ``tuning/`` and ``heldout/`` (the side that starts
alternates between causes, so odd counts even out). Prints the SHA-256 of the sorted held-out
ids, the figure bench/corpus/README.md records: ``--check`` recomputes it from the folders and
fails when a held-out case was added, removed or moved.

    python bench/corpus_split.py            # split incoming/ (moves the files)
    python bench/corpus_split.py --check    # verify the committed split
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"
SALT = "prodx-issue-8-corpus-split"


def heldout_digest(ids: list[str]) -> str:
    """SHA-256 of the sorted held-out ids, one per line.

    >>> heldout_digest(["b", "a"]) == hashlib.sha256(b"a\\nb\\n").hexdigest()
    True
    """
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(ids)).encode()).hexdigest()


def deal(cases: dict[str, str]) -> tuple[list[str], list[str]]:
    """(tuning ids, held-out ids) for ``cases`` (id → root cause), stratified by cause.

    >>> deal({"a": "x", "b": "x", "c": "y"})
    (['b', 'c'], ['a'])
    """
    by_cause: dict[str, list[str]] = defaultdict(list)
    for cid, cause in cases.items():
        by_cause[cause].append(cid)
    tuning, heldout = [], []
    start = 0
    for cause in sorted(by_cause):
        ordered = sorted(by_cause[cause], key=lambda i: hashlib.sha256((SALT + i).encode()).hexdigest())
        for n, cid in enumerate(ordered):
            (tuning if (n + start) % 2 == 0 else heldout).append(cid)
        start += len(ordered) % 2
    return sorted(tuning), sorted(heldout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Verify the committed split.")
    args = parser.parse_args(argv)
    if args.check:
        ids = [p.stem for p in (CORPUS / "heldout").glob("*.yaml")]
        print(f"{len(ids)} held-out cases, sha256 {heldout_digest(ids)}")
        return 0
    incoming = sorted((CORPUS / "incoming").glob("*.yaml"))
    if not incoming:
        print("corpus_split: nothing in incoming/", file=sys.stderr)
        return 2
    cases = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8"))["root_cause"] for p in incoming}
    tuning, heldout = deal(cases)
    for folder, ids in (("tuning", tuning), ("heldout", heldout)):
        (CORPUS / folder).mkdir(exist_ok=True)
        for cid in ids:
            (CORPUS / "incoming" / f"{cid}.yaml").rename(CORPUS / folder / f"{cid}.yaml")
    print(f"tuning {len(tuning)}, held-out {len(heldout)}, held-out sha256 {heldout_digest(heldout)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
