"""Words to the things they mean: the vocabulary behind symptom understanding.

An operator says the same thing many ways: "DNS resolution fails", "the errors were DNS
resolution failures", "lookups of the API host time out". Two words name the same thing when
their *keys* are equal. A word's key is its Snowball (Porter2) stem after British spellings
are made American ("synchronised" as "synchronized"), mapped through the KB's lexicon
(``kb/data/lexicon.yaml``): groups of synonyms, derivations and irregular forms ("failure" is
"fail", "hung" is "hang", "RAM" is "memory"). Before words are cut, the lexicon's *terms* turn
phrases that are one thing ("out of memory", "not responding", "Temporary failure in name
resolution") into one word. Deterministic, offline, no model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

_STEMMER = snowballstemmer.stemmer("english")
_WORD = re.compile(r"@?[a-z0-9][a-z0-9'/_.+=-]*[a-z0-9']|@?[a-z0-9]")
# "synchronise", "utilisation", "analyse": one spelling, so one stem.
#: "RedisException", "ConnectionError": a thing and what went wrong with it.
_COMPOUND_ERROR = re.compile(r"\b([a-z]{3,}?)(exception|error)\b")
#: "didn't", "isn't": the verb and its "not", so a phrase written either way matches.
_CONTRACTION = re.compile(r"\b(do|does|did|is|are|was|were|has|have|had|would|should|could|need)n[’']t\b")
_BRITISH = re.compile(r"^([a-z]{3,}?)(is|ys)(e|es|ed|ing|ation|ations|er|ers)$")
#: "blog.example-site.com": a host name is one thing; its parts would spread the words around
#: it apart ("the certificate for blog.example-site.com is invalid"). File names keep their parts.
_HOST_NAME = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)+\.(?!(?:sock|socket|log|conf|service|php|ini|ya?ml|json|gz|pid|sh|py|js|d)$)[a-z]{2,6}$")


@lru_cache(maxsize=100_000)
def stem(word: str) -> str:
    """The Snowball stem of one lower-case word, spelled the American way.

    >>> [stem(w) for w in ("failing", "failed", "synchronised", "synchronized", "processes")]
    ['fail', 'fail', 'synchron', 'synchron', 'process']
    """
    if not word[:1].isalpha():
        return word
    word = _BRITISH.sub(lambda m: m.group(1) + ("iz" if m.group(2) == "is" else "yz") + m.group(3), word)
    return _STEMMER.stemWord(word)


@dataclass(frozen=True)
class Lexicon:
    """The KB's vocabulary: ``terms`` (regex → one word, in order), ``synonyms`` (groups
    whose words share the first one's key) and ``classes`` (a name for words that fill the
    same slot of a phrase without being synonyms: ``@write`` is upload, save, create...).
    Empty means plain stemming."""

    terms: tuple[tuple[str, str], ...] = ()
    synonyms: tuple[tuple[str, ...], ...] = ()
    classes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_data(cls, terms: Mapping[str, str], synonyms: Sequence[Sequence[str]],
                  classes: Mapping[str, Sequence[str]] | None = None) -> Lexicon:
        return cls(tuple((k, v) for k, v in terms.items()), tuple(tuple(g) for g in synonyms),
                   tuple((name, tuple(words)) for name, words in (classes or {}).items()))

    def merged(self, other: Lexicon) -> Lexicon:
        """This lexicon followed by ``other`` (a site's words extend, never replace; a class
        named again gains the other's words)."""
        classes = dict(self.classes)
        for name, words in other.classes:
            classes[name] = classes.get(name, ()) + words
        return Lexicon(self.terms + other.terms, self.synonyms + other.synonyms, tuple(classes.items()))


class Vocabulary:
    """Cuts texts into words and gives each word its key under one lexicon."""

    def __init__(self, lexicon: Lexicon) -> None:
        # "@cert" names a class: a term ("certs?") must not rewrite it.
        self._terms = [(re.compile(rf"(?<![\w@-])(?:{pattern})(?![\w-])", re.IGNORECASE), word) for pattern, word in lexicon.terms]
        self._by_stem: dict[str, str] = {}
        for group in lexicon.synonyms:
            head = stem(group[0])
            for word in group:
                self._by_stem.setdefault(stem(word), head)
        self._keys: dict[str, str] = {}
        #: "@write" → the keys of its words.
        self.classes: dict[str, frozenset[str]] = {
            f"@{name}": frozenset(self.key(w) for w in words) for name, words in lexicon.classes
        }

    def rewrite(self, text: str) -> str:
        """``text`` in lower case with every lexicon term made one word.

        >>> Vocabulary(Lexicon((("out of memory", "oom"),))).rewrite("PHP ran Out of Memory")
        'php ran oom'
        """
        text = _CONTRACTION.sub(r"\1 not", text.lower().replace("won't", "will not"))
        for pattern, word in self._terms:
            text = pattern.sub(word, text)
        return text

    def words(self, text: str) -> list[str]:
        """Lower-cased words after the terms; hyphenated, slashed and dotted words (file and
        unit names) also give their parts, and an exception's class name its two words.

        >>> Vocabulary(Lexicon()).words("Per-user limit: 512 processes; I/O error")
        ['per-user', 'per', 'user', 'limit', '512', 'processes', 'i/o', 'i', 'o', 'error']
        >>> Vocabulary(Lexicon()).words("nginx.service failed; RedisException in access.log")
        ['nginx.service', 'nginx', 'service', 'failed', 'redis', 'exception', 'in', 'access.log', 'access', 'log']
        >>> Vocabulary(Lexicon()).words("the cert of blog.example-site.com")
        ['the', 'cert', 'of', 'blog.example-site.com']
        """
        out: list[str] = []
        for w in _WORD.findall(self.rewrite(_COMPOUND_ERROR.sub(r"\1 \2", text.lower()))):
            out.append(w)
            if _HOST_NAME.match(w):
                continue
            parts = [p for p in re.split(r"[-/]|\.(?=[a-z])", w) if p]
            if len(parts) > 1:
                out.extend(parts)
        return out

    def knows(self, word: str) -> bool:
        """Whether the word is one of the synonym groups' words (so it is spelled right).

        >>> v = Vocabulary(Lexicon(synonyms=(("fail", "failure"),)))
        >>> v.knows("failing"), v.knows("filling")
        (True, False)
        """
        return stem(word.lower()) in self._by_stem

    def key(self, word: str) -> str:
        """What a word means: its stem, through the synonym groups.

        >>> v = Vocabulary(Lexicon(synonyms=(("fail", "failure"), ("memory", "ram"))))
        >>> [v.key(w) for w in ("failures", "failing", "RAM", "memory", "disk", "@write")]
        ['fail', 'fail', 'memori', 'memori', 'disk', '@write']
        """
        key = self._keys.get(word)
        if key is None:
            s = stem(word.lower())
            key = self._keys[word] = self._by_stem.get(s, s)
        return key
