"""Plain words to ``symptom.*`` findings, through the phrases in the finding catalogue.

Each text is split into clauses ("login fails; register gives 503 and logs stopped").
A clause maps to a symptom when one of its phrases matches exactly, or fuzzily: every
content word of the phrase appears in the clause, allowing inflections ("logins" for
"login", "working" for "work") and small typos. A negation phrase of the catalogue ("no
errors in the log"), or a negator just before the match ("not", "no", "never"), makes the
symptom absent. HTTP status codes 5xx map to ``symptom.http_5xx``. Text that maps to
nothing is returned with the nearest known symptoms, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

from prodx.kb.loader import FindingDef, KnowledgeBase
from prodx.model import Finding, FindingState

_STOPWORDS = frozenset(
    "a an the is are was were be been it its this that to of in on at for from by with and or "
    "but our my we i us our they them their some any all just again still also very".split()
)
_NEGATORS = frozenset("no not never nothing without none cannot isn't doesn't didn't don't won't wasn't aren't".split())
# "can't"/"cannot" usually describe the failure itself ("can't log in"), not its absence.
_FAILURE_NEGATORS = frozenset({"cannot", "can't", "couldn't", "unable"})
_HTTP_5XX = re.compile(r"\b5\d\d\b")
_SPLIT = re.compile(r"[;\n]|,\s+|\.\s+|\s+(?:and|but|then|while)\s+")
_WORD = re.compile(r"[a-z0-9][a-z0-9'/_-]*")


@dataclass(frozen=True)
class Unmatched:
    """A text that mapped to no symptom, and the closest catalogue symptoms."""

    text: str
    nearest: tuple[str, ...]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w not in _STOPWORDS]


def _same_word(a: str, b: str) -> bool:
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    if len(short) >= 4 and long_.startswith(short[: max(4, len(short) - 1)]):
        return True  # login/logins, work/working, write/writing
    return len(short) >= 5 and SequenceMatcher(None, a, b).ratio() >= 0.85


def _match_at(phrase_words: list[str], clause_words: list[str]) -> tuple[int, int] | None:
    """First and last clause index of the matched words if every content word of the
    phrase is present; None otherwise."""
    wanted = _content(phrase_words) or phrase_words
    positions = []
    for w in wanted:
        hit = next((i for i, c in enumerate(clause_words) if _same_word(w, c)), None)
        if hit is None:
            return None
        positions.append(hit)
    return min(positions), max(positions)


def _score(phrase_words: list[str], clause_words: list[str]) -> float:
    wanted = _content(phrase_words) or phrase_words
    return sum(any(_same_word(w, c) for c in clause_words) for w in wanted) / len(wanted)


def _negated(clause_words: list[str], span: tuple[int, int], phrase_words: list[str]) -> bool:
    """A negator just before the matched words or between them ("uploads do not fail")."""
    if any(w in _NEGATORS for w in phrase_words):
        return False  # the phrase carries its own negation ("login does not work")
    first, last = span
    window = clause_words[max(0, first - 3) : last]
    return any(w in _NEGATORS and w not in _FAILURE_NEGATORS for w in window)


def _symptom_defs(kb: KnowledgeBase) -> list[FindingDef]:
    return [f for f in kb.findings.values() if f.is_symptom]


def _match_clause(clause: str, defs: list[FindingDef]) -> dict[str, FindingState]:
    words = _words(clause)
    found: dict[str, FindingState] = {}
    lowered = " ".join(words)
    for fdef in defs:
        for neg in fdef.negations:
            if " ".join(_words(neg)) in lowered or _match_at(_words(neg), words) is not None and _score(_words(neg), words) == 1.0 and any(w in _NEGATORS for w in words):
                found[fdef.id] = FindingState.ABSENT
                break
        if fdef.id in found:
            continue
        for phrase in fdef.phrases:
            pwords = _words(phrase)
            span = _match_at(pwords, words)
            if span is not None:
                negated = _negated(words, span, pwords)
                found[fdef.id] = FindingState.ABSENT if negated else FindingState.PRESENT
                break
    if _HTTP_5XX.search(clause) and "symptom.http_5xx" not in found:
        found["symptom.http_5xx"] = FindingState.PRESENT
    return found


def nearest(text: str, kb: KnowledgeBase, limit: int = 3) -> tuple[str, ...]:
    """The symptom ids whose phrases share most words with ``text``."""
    words = _words(text)
    scored = []
    for fdef in _symptom_defs(kb):
        best = max((_score(_words(p), words) for p in fdef.phrases), default=0.0)
        if best > 0:
            scored.append((-best, fdef.id))
    return tuple(fid for _s, fid in sorted(scored)[:limit])


def match_symptoms(texts: list[str], kb: KnowledgeBase) -> tuple[list[Finding], list[Unmatched]]:
    """Findings for every symptom the texts name, and the texts (or clauses) that named none."""
    defs = _symptom_defs(kb)
    states: dict[str, tuple[FindingState, str]] = {}
    unmatched: list[Unmatched] = []
    for text in texts:
        clauses = [c.strip() for c in _SPLIT.split(text) if c and c.strip()]
        matched_any = False
        leftovers = []
        for clause in clauses:
            found = _match_clause(clause, defs)
            if not found:
                leftovers.append(clause)
            for fid, state in found.items():
                matched_any = True
                states.setdefault(fid, (state, text))
        if not matched_any:
            unmatched.append(Unmatched(text, nearest(text, kb)))
        elif leftovers and any(len(_content(_words(c))) >= 3 for c in leftovers):
            for clause in leftovers:
                if len(_content(_words(clause))) >= 3:
                    unmatched.append(Unmatched(clause, nearest(clause, kb)))
    findings = [
        Finding(fid, state, f'reported: "{text}"', {"text": text}, probe="symptom")
        for fid, (state, text) in sorted(states.items())
    ]
    return findings, unmatched
