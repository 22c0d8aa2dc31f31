"""How much "incidents like this one" adds on text it never learned from, and the choice of its
knobs: each fold is a collection's *first look* (``bench/corpus/first_looks/``: every case's
differential as the KB of that day ranked it from its words, before any tuning on the
collection), mixed with the resemblance learned from the *other* collections (never the
held-out half), exactly as the engine mixes them when no probe runs:
P(c) = (1 − w) · P_first(c) + w · alike(c).

    python bench/alike_folds.py            # the shipped knobs, before and after, per fold
    python bench/alike_folds.py --grid     # the weight and sharpness the knobs were chosen from

Prints top-1, top-3 and wrong leaders at P >= 0.9 per fold and variant (with and without the
observations), and the pooled figures. Reads the corpus and the first looks; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import CASE_SETS, CASE_VARIANTS  # noqa: E402
from accuracy_lib import CONFIDENT_WRONG_P, NONE_ID, load_cases  # noqa: E402
from learn_reports import ALIKE_COLLECTIONS, KEEP, MIN_DF, SHARPNESS, WEIGHT, learn_alike  # noqa: E402

from prodx.engine.alike import AlikeModel, resemblance  # noqa: E402
from prodx.kb.loader import load_kb  # noqa: E402

FIRST_LOOKS = Path(__file__).resolve().parent / "corpus" / "first_looks"


def first_looks() -> dict[str, dict[str, dict[str, float]]]:
    """collection → "case id|variant" → the first look's probabilities (its ten leaders and
    "none of the known")."""
    out = {}
    for path in sorted(FIRST_LOOKS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out[data["collection"]] = data["cases"]
    return out


def score(mixed: dict[str, float], accepted: tuple[str, ...]) -> tuple[bool, bool, bool]:
    """(top-1, top-3, wrong leader at P >= 0.9) of one mixed differential."""
    order = sorted(mixed, key=lambda c: (-mixed[c], c))
    rank = next((i for i, c in enumerate(order, 1) if c in accepted), None)
    top1 = rank == 1
    return top1, rank is not None and rank <= 3, not top1 and mixed[order[0]] >= CONFIDENT_WRONG_P


def fold(name: str, looks: dict[str, dict[str, float]], model: AlikeModel | None, lexicon, weight: float) -> dict[str, list[int]]:
    """variant → [top-1, top-3, confident wrong, cases] of one collection."""
    out = {variant: [0, 0, 0, 0] for variant, _obs in CASE_VARIANTS}
    for case in load_cases(CASE_SETS[name][0]):
        for variant, with_observations in CASE_VARIANTS:
            first = looks[f"{case.id}|{variant}"]
            total = sum(first.values())
            r = resemblance(model, case.symptoms + (case.observations if with_observations else ()), lexicon)
            labels = set(first) | (set(r.shares) if r else set())
            mixed = {c: (1 - weight) * first.get(c, 0.0) / total + weight * r.share(c) if r else first.get(c, 0.0) / total
                     for c in labels}
            row = out[variant]
            for i, hit in enumerate(score(mixed, case.accepted)):
                row[i] += hit
            row[3] += 1
    return out


def run(weight: float, sharpness: float, keep: int, min_df: int, *, show_folds: bool) -> dict[str, list[int]]:
    lexicon = load_kb(told=False).lexicon
    pooled = {variant: [0, 0, 0, 0] for variant, _obs in CASE_VARIANTS}
    for name, looks in first_looks().items():
        others = tuple(c for c in ALIKE_COLLECTIONS if c != name)
        model = AlikeModel.from_json(learn_alike(others, keep=keep, min_df=min_df, weight=weight, sharpness=sharpness))
        for variant, row in fold(name, looks, model if weight else None, lexicon, weight).items():
            pooled[variant] = [a + b for a, b in zip(pooled[variant], row)]
            if show_folds:
                print(f"  {name:8} {variant:22} {_figures(row)}")
    return pooled


def _figures(row: list[int]) -> str:
    t1, t3, cw, n = row
    return f"top-1 {t1}/{n} {100 * t1 / n:5.1f} %  top-3 {t3}/{n} {100 * t3 / n:5.1f} %  wrong at P>=0.9: {cw}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", action="store_true", help="also try the weights and sharpnesses the knobs were chosen from")
    args = parser.parse_args(argv)
    if not first_looks():
        raise SystemExit(f"alike_folds: no first looks in {FIRST_LOOKS}")
    settings = [(0.0, SHARPNESS), (WEIGHT, SHARPNESS)]
    if args.grid:
        settings += [(w, s) for w in (0.2, 0.3, 0.4, 0.5) for s in (10.0, 20.0, 40.0) if (w, s) != (WEIGHT, SHARPNESS)]
    for weight, sharpness in settings:
        title = "first look alone" if not weight else f"mixed, weight {weight}, sharpness {sharpness:g}"
        print(f"== {title} (keep {KEEP}, min df {MIN_DF}) ==")
        for variant, row in run(weight, sharpness, KEEP, MIN_DF, show_folds=not args.grid or weight == WEIGHT and sharpness == SHARPNESS).items():
            print(f"  pooled   {variant:22} {_figures(row)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
