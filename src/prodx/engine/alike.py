"""Incidents like this one: which known failures a person's whole account reads like.

The symptom reader (``prodx.engine.symptoms``) turns the sentences it understands into
findings; the rest of the words are lost to the engine, though they often tell the failure
("session files in /tmp", "certbot", "the nightly tar"). This module weighs the whole account
against the real incidents of the tuning collections (``bench/corpus``; never the held-out
half), learned by ``bench/learn_reports.py`` into ``kb/data/alike.json``: for every condition
(and for "none of the known conditions", from the incidents whose cause the KB does not know)
the normalised TF-IDF centroid of its incidents' words (Rocchio's classifier), kept to its
strongest words. The account's own TF-IDF vector is compared to each centroid by cosine, and
the similarities become shares by a softmax of the learned sharpness.

The engine mixes these shares into what the words alone give (``prodx.engine.posterior``): a
second reading of the same words, so it is mixed with the first, never multiplied into it.
What the probes measure still weighs in full. README, "Incidents like this one".

Deterministic and offline: words are the symptom reader's keys (stems through the KB's
lexicon), the model is data.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from prodx.engine.symptoms import CONTENTLESS
from prodx.engine.words import Lexicon, Vocabulary

#: The label of the incidents no known condition explains.
NONE_LABEL = "none-of-the-known"
#: Words shown as the resemblance's reasons.
_SHOWN_WORDS = 4
#: Reports name the resemblance as evidence for a condition from this share on.
SHOWN_SHARE = 0.1


@dataclass(frozen=True)
class AlikeModel:
    """The learned centroids: ``idf`` (word key → inverse document frequency over the counted
    incidents), ``centroids`` (label → word key → weight, unit length), ``incidents`` (label →
    how many were counted), the mixing ``weight`` and the softmax ``sharpness``."""

    idf: Mapping[str, float]
    centroids: Mapping[str, Mapping[str, float]]
    incidents: Mapping[str, int]
    weight: float
    sharpness: float

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> AlikeModel:
        return cls(idf=dict(data["idf"]), centroids={k: dict(v) for k, v in dict(data["centroids"]).items()},
                   incidents=dict(data["incidents"]), weight=float(data["weight"]),
                   sharpness=float(data["sharpness"]))


@dataclass(frozen=True)
class Resemblance:
    """What an account reads like: ``shares`` (label → share, summing to 1 over every learned
    label) and, per label, the account's own words it shares with that label's incidents,
    strongest first. ``weight`` is how much of the words' reading the shares make up."""

    shares: Mapping[str, float]
    words: Mapping[str, tuple[str, ...]]
    weight: float

    def share(self, label: str) -> float:
        return self.shares.get(label, 0.0)


def load_alike(path: Path) -> AlikeModel | None:
    """The model in ``path``; None when there is no file (a KB without learned incidents)."""
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as fh:
        return AlikeModel.from_json(json.load(fh))


@lru_cache(maxsize=8)
def _vocabulary(lexicon: Lexicon) -> Vocabulary:
    return Vocabulary(lexicon)


def word_keys(lines: Iterable[str], lexicon: Lexicon) -> tuple[Counter[str], dict[str, str]]:
    """(word key → occurrences, word key → the first word the text used for it) of the content
    words of ``lines``: function words, fillers, keys under three letters and lexicon classes
    are left out. Empty when the text has no content word."""
    voc = _vocabulary(lexicon)
    counts: Counter[str] = Counter()
    spelled: dict[str, str] = {}
    for line in lines:
        for word in voc.words(line):
            if word in CONTENTLESS:
                continue
            key = voc.key(word)
            if key in CONTENTLESS or len(key) < 3 or key.startswith("@"):
                continue
            counts[key] += 1
            spelled.setdefault(key, word)
    return counts, spelled


def tfidf(counts: Mapping[str, int], idf: Mapping[str, float]) -> dict[str, float]:
    """The unit-length vector of (1 + ln count) · idf over the words ``idf`` knows; empty when
    it knows none of them."""
    vec = {k: (1 + math.log(n)) * idf[k] for k, n in counts.items() if k in idf}
    return unit(vec)


def unit(vec: Mapping[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(x * x for x in vec.values()))
    return {k: x / norm for k, x in vec.items()} if norm else {}


def resemblance(model: AlikeModel | None, lines: Iterable[str], lexicon: Lexicon) -> Resemblance | None:
    """What ``lines`` read like under ``model``; None without a model or when no word of the
    text is one the learned incidents used (nothing to compare)."""
    if model is None:
        return None
    counts, spelled = word_keys(lines, lexicon)
    vec = tfidf(counts, model.idf)
    if not vec:
        return None
    sims: dict[str, float] = {}
    words: dict[str, tuple[str, ...]] = {}
    for label, centroid in sorted(model.centroids.items()):
        parts = sorted(((x * centroid[k], k) for k, x in vec.items() if k in centroid), reverse=True)
        sims[label] = sum(p for p, _k in parts)
        words[label] = tuple(spelled[k] for _p, k in parts[:_SHOWN_WORDS])
    top = max(sims.values())
    exp = {label: math.exp(model.sharpness * (s - top)) for label, s in sims.items()}
    total = sum(exp.values())
    return Resemblance({label: e / total for label, e in exp.items()}, words, model.weight)
