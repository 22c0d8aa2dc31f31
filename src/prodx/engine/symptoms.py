"""Plain words to ``symptom.*`` findings, through the phrases in the finding catalogue.

A text is cut into sentences (";", ". ", a new line) and each sentence into clauses
(", ", "and", "but", "then", "while"). A sentence maps to a symptom when one of the
catalogue's phrases appears in it word by word, in order and close together; a clause maps
when every content word of a phrase appears in it in any order, allowing inflections
("logins" for "login", "rebooting" for "reboot") and small typos. Quoted messages
(``"..."``, ``'...'``) are also matched whole, so a phrase with a comma in it still matches.

Before matching, the matcher rewrites what a phrase list cannot say into the plain words the
catalogue uses, and matches those too:

- errno numbers and names (``errno 28``, ``Errcode: 13``, ``(111: Connection refused)``,
  ``[Errno 13]``, ``EADDRNOTAVAIL``) become the kernel's strerror text;
- HTTP status codes (``HTTP 502``, ``returns 503``) become ``http 502`` and ``http 5xx``,
  unless a unit follows the number ("512 processes", "500,000");
- quantities become what they mean: ``load average 22.6`` is "high load", ``100% CPU`` is
  "high cpu" and ``CPU under 10%`` is "low cpu", ``I/O wait 93.6%`` is "high iowait",
  ``RAM at only 50%`` or ``20 GB of 32 GB RAM`` is "memory not full", ``0 bytes free`` is
  "disk full", inodes at 100 % are "out of inodes";
- time words (``since the deploy``, ``ever since upgrading``, ``following the config
  change``) become ``after ...``, so one catalogue phrase ("after deploy") covers them.

A negation phrase of the catalogue ("no errors in the log"), or a negator just before or
inside a match ("not", "no", "never"), makes the symptom absent. When one text says a
symptom both ways ("DDoS attempts before, but no burst this time"), the later clause wins.
Text that maps to nothing is returned with the nearest known symptoms, never dropped.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import weakref
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache

from prodx.engine.words import Lexicon, Vocabulary
from prodx.kb.loader import FindingDef, KnowledgeBase
from prodx.model import Finding, FindingState

# "some", "all", "again" and "still" are kept: "some clients fail" is not "clients fail".
_STOPWORDS = frozenset(
    "a an the is are was were be been it its this that to of in on at for from by with and or "
    "but our my we i us our they them their any just also very".split()
)
_NEGATORS = frozenset(
    "no not never nothing nothing's nobody none zero without neither nor cannot "
    "isn't doesn't didn't don't won't wasn't aren't weren't haven't hasn't hadn't "
    "isnt doesnt didnt dont wont wasnt arent werent havent hasnt hadnt 0 0%".split()
)
#: Words that deny a message quoted right after them ("no 'Cannot assign requested address'").
_MESSAGE_DENIALS = frozenset({"no", "never", "without"})
#: A count of nothing denies only what it counts, right after it ("0% packet loss", "0 errors").
_ZERO = frozenset({"0", "0%"})
# "can't"/"cannot" usually describe the failure itself ("can't log in"), not its absence.
_FAILURE_NEGATORS = frozenset({"cannot", "can't", "couldn't", "unable"})
#: A negator before one of these words is the failure's own wording ("certificate is not
#: valid (host name mismatch)", "file not found"), not a denial of the symptom.
_FAILURE_ADJECTIVES = frozenset(
    "valid trusted secure private found available allowed permitted writable writeable readable known "
    "reachable accessible supported responding recognized recognised authorized authorised".split()
)
#: Said after a symptom, these deny it ("swapping makes no sense", "DNS is not the problem").
_POST_NEGATIONS = ("makes no sense", "not the problem", "not the cause", "not the issue", "ruled out", "is fine", "looks fine",
                   "looks normal", "is normal", "are normal", "are fine", "look fine", "look normal", "is ok", "are ok",
                   "looks good", "look good", "is low", "are low", "is flat", "is stable", "stays stable", "near zero",
                   "at zero", "is healthy", "are healthy", "is clean", "are clean", "works fine", "work fine",
                   "is never reached", "never reached", "never hit", "never exceeded", "nowhere near", "is zero",
                   "are zero", "stored fine", "flowing fine", "works normally", "work normally",
                   "returns nothing", "return nothing", "shows nothing", "show nothing", "prints nothing",
                   "lower than usual", "lower than normal", "is operational", "are operational", "was operational",
                   "said operational", "says operational", "shows operational", "showed operational",
                   "all systems operational", "is green", "was green", "all green",
                   # a change that was long before the trouble did not start it
                   "was a month ago", "was months ago", "was weeks ago", "was a year ago", "was years ago",
                   "was last month", "was last year", "were months ago", "were weeks ago")
_SENTENCE = re.compile(r"[;\n]|\.\s+|\.$|(?<=[a-z])\.(?=[A-Z])")
_CLAUSE = re.compile(r",\s+|\s+(?:and|but|then|while|although|though|whereas)\s+")
_PLAIN = Vocabulary(Lexicon())
_QUOTED = re.compile(r"\"([^\"]{4,})\"|(?:^|(?<=[\s:(\[]))'([^']{4,}?)'(?=[\s.,;:)\]]|$)")
#: Words that may sit among a phrase's words, in order or not ("the error came from the
#: server" is "server error"; "the server printed a complaint about a bus error" is not): one
#: per content word beyond the first, at most three, so two common words must stand close.
_MAX_SLACK = 3


def _slack(content_words: int) -> int:
    return min(_MAX_SLACK, max(1, content_words - 1))


#: Words that do not count towards a span's length: they carry no meaning of their own.
_FILLERS = _STOPWORDS | _NEGATORS | frozenset(
    "do does did has have had will would can could should may might "
    "look looks looked seem seems seemed appear appears appeared became become becomes got gets "
    "constantly always completely totally fully really quite almost nearly still just even "
    "extremely suddenly again longer anymore".split()
)


def _spread(words: tuple[str, ...], span: tuple[int, int]) -> int:
    """How many meaningful words a span holds ("uploads do not fail" holds two); a dotted,
    slashed or hyphenated word and the parts the vocabulary adds after it are one word."""
    count, compound = 0, ""
    for w in words[span[0] : span[1] + 1]:
        if compound and w in compound:
            continue
        compound = w if len(w) > 2 and any(c in w for c in "./-") else ""
        count += w not in _FILLERS
    return count

_ERRNO_NUMBER = re.compile(
    r"\b(?:errno|errcode|error code|os error|error)\s*[:=#]?\s*-?(\d{1,3})\b(?![.,]\d)"
    r"|\((\d{1,3}):\s"
    r"|\[errno (\d{1,3})\]"
    # "Can't connect to MySQL server on 'db' (13)": an errno in parentheses after a failure
    r"|(?:fail|failed|error|denied|can't|cannot|could not|couldn't|unable)\b[^()]{0,80}?\((\d{1,3})\)",
    re.IGNORECASE,
)
_ERRNO_NAME = re.compile(r"\bE[A-Z0-9]{2,14}\b")
_CONNECT = re.compile(r"\bconnect(?:s|ing|ion|ions|ed)?\b|\bname_connect\b", re.IGNORECASE)
#: "status 200", "200 OK", "answers 200": a request that succeeded.
_HTTP_OK = re.compile(
    r"\b(?:status(?: code)?|code|http|returns?|returned|answers?|answered|with|gets?|got)\s+200\b|\b200 ok\b",
    re.IGNORECASE,
)
_HTTP_CODE = re.compile(r"(?<![\d.,:/-])\b([45]\d\d)s?\b(?![.,:/]\d)(?!\s*%)(?!\s*-\s*\d)")
#: A number followed by one of these is a quantity, not an HTTP status.
_UNITS = frozenset(
    "processes process threads users clients connections requests ms s sec seconds minutes "
    "hours days mb gb kb tb mib gib kib bytes files inodes hits rps req lines rows items "
    "packages jobs workers servers sockets ports errors times products orders people customers visitors "
    "messages emails records entries posts tickets members sites domains ips hosts pages items".split()
)
_LOAD = re.compile(r"\bload(?:\s+average)?s?\b(?![\s-]*(?:balanc|test))([^;]{0,60})", re.IGNORECASE)
#: "an 8-core machine", "on 4 CPUs": how many CPUs a load figure is measured against.
_CORES = re.compile(r"(\d+)[\s-]*(?:v?cores?|v?cpus?|processors?)\b")
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.]*[:/])")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_OF_TOTAL = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt])i?b?\s+(?:of|out of|/)\s+(\d+(?:\.\d+)?)\s*([kmgt])i?b?\b", re.IGNORECASE)
_ZERO_FREE = re.compile(r"(?<![\d.])0(?:\.0+)?\s*(?:[kmgt]i?b?|bytes?|b|%)?\s+(?:free|available|avail|left)\b", re.IGNORECASE)
_TIME_ANCHOR = re.compile(
    r"\b(?:ever since|right after|soon after|shortly after|just after|since|after|following)\s+"
    r"((?:[\w'./-]+\s+){0,5}[\w'./-]+)",
    re.IGNORECASE,
)
#: What a percentage or an amount measures, by the words near it.
_SUBJECTS = {
    "cpu": "cpu", "us": "cpu", "user": "cpu", "sy": "cpu",
    "iowait": "io", "wait": "io", "wa": "io",
    "memory": "mem", "ram": "mem", "mem": "mem",
    "swap": "swap",
    "inode": "inode", "inodes": "inode", "iuse": "inode", "-i": "inode", "-ih": "inode",
    "disk": "disk", "used": "disk", "full": "disk", "filesystem": "disk", "partition": "disk", "df": "disk",
    "st": "steal", "steal": "steal", "%steal": "steal",
    "idle": "idle", "id": "idle", "%idle": "idle",
    "util": "io", "%util": "io", "iuse": "inode", "iuse%": "inode",
}
#: top's header puts the number before its column: "%Cpu(s): 92.3 us, 1.2 id, 28.4 st".
_TOP_FIELDS = re.compile(r"(\d+(?:\.\d+)?)\s+(us|id|wa|st)\b")
_TOP_SUBJECT = {"us": "cpu", "id": "idle", "wa": "io", "st": "steal"}
#: "every 15 min", "every 2 hours": a rhythm.
_EVERY = re.compile(r"\bevery\s+\d+\s*(?:s|sec|secs|seconds|m|min|mins|minutes|h|hours?)\b", re.IGNORECASE)
#: "var/cache takes 60% of the disk": a share of a filesystem and what takes it.
_SHARE_OF_DISK = re.compile(r"(\d{2,3})\s*%\s+of\s+(?:the\s+)?(?:disk|space|filesystem|partition|volume)", re.IGNORECASE)
#: "du -xsh / -> 18G" beside df's "49G used": what du counts against what df says is used.
_DU_TOTAL = re.compile(r"\bdu\b[^\n]{0,40}?(\d+(?:\.\d+)?)\s*([gtm])\b", re.IGNORECASE)
#: "st around 25-30", "the wa column is 40+", "%steal averaging 22": a vmstat/top/sar column
#: named, then its value, without a percent sign.
_COLUMN = re.compile(r"(?<![\w%])(%?steal|st|wa|%iowait|iowait|%idle|idle|%util|iuse%?)\b(?:\s+column)?[^\d%\n]{0,25}?(\d+(?:\.\d+)?)(?!\s*%)(?![\d.])", re.IGNORECASE)
#: A CPU share above 100 % is one process using several cores ("mysqld at 390%").
_PROCESS_SHARE = re.compile(r"(\d{3,4}(?:\.\d+)?)\s*%")
#: "wc -l gives 350", "| wc -l: 2.3 million": a count someone took.
_WC_COUNT = re.compile(r"wc -l\b[^\d\n]{0,30}?(\d[\d,.]*)\s*(million|m|k|thousand)?\b", re.IGNORECASE)
#: "200G available", "20 GB free": space someone saw left.
_FREE_AMOUNT = re.compile(r"(\d+(?:\.\d+)?)\s*([mgt])i?b?\s+(?:still\s+)?(?:of\s+)?(?:available|avail|free|left)\b", re.IGNORECASE)
#: "70% of the disk free": the share is what is left, not what is used.
_FREE_WORDS = frozenset({"free", "available", "avail", "left", "unused"})
#: A row of df: "tmpfs 99M 99M 0 100% /run", "/dev/sda1 20G 12G 7.0G 63% /".
_DF_ROW = re.compile(r"(?:^|[\s:;])(?:/dev/\S+|tmpfs|overlay|udev|none|\S+:/\S*)\s+[\d.,]+[kmgtp]?i?b?\s+[\d.,]+[kmgtp]?i?b?"
                     r"\s+[\d.,]+[kmgtp]?i?b?\s+(\d{1,3})%", re.IGNORECASE)
#: Subject words that start compound metric names (CloudWatch's CPUUtilization, MemoryUsage).
_COMPOUND_SUBJECTS = ("cpu", "memory", "mem", "swap", "disk", "inode", "iowait")
#: Words that make a sentence's numbers a course over time ("then", "later", "climbs to").
_TIME_COURSE = re.compile(r"\b(?:then|later|afterwards|after (?:a|an|one|two|three|a few|several|\d+) \w+|"
                          r"climb\w*|rises|rose|grows|grew|creeps?|crept|approach\w*|increas\w*|now at)\b")
#: "the memory used by the Sidekiq worker climbs over several days": memory named, then,
#: within a few words, a verb of growth.
_MEMORY_COURSE = re.compile(r"\b(?:memory|ram|rss|heap)\b(?:[^\w.;]+[\w'-]+){0,8}?[^\w.;]+(?:keeps? |kept )?"
                            r"(?:grow(?:s|ing)?|grew|climb(?:s|ed|ing)?|creep(?:s|ing)?|crept|increas(?:es|ed|ing)"
                            r"|balloon(?:s|ed|ing)?)\b")
#: How far a run of readings must climb to say it grows, and what it then says.
_RUN_RISE = {"mem": 15.0, "disk": 10.0}
_RUN_LABEL = {"mem": "memory grows", "disk": "disk usage rising"}
#: "from 60% to 95%", "rps jumped from 50 to 2000": a measure that rose.
_RISE = re.compile(r"\bfrom\s+~?(\d+(?:\.\d+)?)\s*(%?)\s*(?:/s)?\s*to\s+~?(\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)
_TRAFFIC_WORDS = re.compile(r"\b(?:rps|qps|req/s|requests?|traffic|visitors|users online|guests|hits|connections)\b", re.IGNORECASE)
#: "up 3:12", "up 7 min": uptime of a freshly booted host.
_UPTIME = re.compile(r"\bup\s+(?:(\d{1,2}):\d\d\b|(\d+)\s*min)", re.IGNORECASE)
#: "Loss% 12.0", "12% packet loss".
_LOSS = re.compile(r"\bloss%?\s*[:=]?\s*(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*%\s*packet loss", re.IGNORECASE)
#: "less than 300 MB available", "only 120M free": little memory left.
_LITTLE_LEFT = re.compile(r"(\d+(?:\.\d+)?)\s*([km])i?b?\s+(?:of memory\s+|of ram\s+)?(?:available|free|left)\b", re.IGNORECASE)
_WORD_NUMBERS = {"a few": 3, "few": 3, "several": 5, "two": 2, "three": 3, "four": 4, "five": 5, "ten": 10,
                 "fifteen": 15, "twenty": 20, "thirty": 30, "sixty": 60}
#: "takes 10-20 seconds to return", "up to five minutes to load": a wait a person measured.
_DURATION = re.compile(
    r"\b(\d+(?:\.\d+)?|a few|few|several|two|three|four|five|ten|fifteen|twenty|thirty|sixty)"
    r"(?:\s*(?:-|to)\s*\d+(?:\.\d+)?)?\s*(s|secs?|seconds?|mins?|minutes?)\b",
    re.IGNORECASE,
)
_WAIT_WORDS = re.compile(r"\b(?:load|loads|loading|respond|responds|response|return|returns|answer|answers|take|takes|took|"
                         r"wait|waits|waiting|latency|render|open|opens|serve|served|slow)\b", re.IGNORECASE)
#: A duration near these is a clock's offset ("the clock is 15 minutes slow"), not a wait.
_CLOCK_WORDS = re.compile(r"\b(?:clock|clocks|ntp|skew|skewed|drift|drifted|behind|ahead|time ?zone)\b", re.IGNORECASE)
#: "the JSON log is 119 GB", "backups had taken over 100 GB": a size big enough to fill a disk,
#: and the thing it is the size of.
_SIZE = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)?)\s*([gt])(?:i?b|igs?)?\b", re.IGNORECASE)
_SIZE_SUBJECTS = (
    (re.compile(r"\b(?:bin-?logs?|binary logs?|wal|pg_wal|pg_xlog|ibdata1?|database files?|mysql data)\b", re.I), "huge database files"),
    (re.compile(r"\b(?:backups?|dumps?|archives?|snapshots|\.sql|\.tar|\.tgz)\b", re.I), "huge backups"),
    (re.compile(r"\b(?:caches?|cache folder|cache directory|overlay2|docker images)\b", re.I), "huge cache"),
    (re.compile(r"\b(?:logs?|log files?|syslog|journal|\S+\.log(?:\.\d+)?|/var/log\S*|json-file|catalina\.out)\b", re.I), "huge log file"),
)
#: "millions of files", "more than 160k files": how many files a folder holds.
_FILE_COUNT = re.compile(r"(?:(\d[\d,.]*)\s*(k|m|million|thousand)?|(millions|hundreds of thousands))\s+(?:of\s+)?(?:small\s+|session\s+|cache\s+|tiny\s+)?files\b", re.I)
#: "went from 6.2 GiB to 11.0 GiB": memory that grew.
_FROM_TO = re.compile(r"\bfrom\s+(\d+(?:\.\d+)?)\s*([kmgt])i?b?(?:\s+[a-z]+){0,3}\s+to\s+(\d+(?:\.\d+)?)\s*([kmgt])i?b?\b", re.I)
#: "2,903 screen processes", "387 copies of the script": how many of one thing run.
_PROCESS_COUNT = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)\s+(?:[\w'\"./-]+\s+){0,2}?"
                            r"(?:processes|process copies|children|instances|copies)\b", re.IGNORECASE)
_UNIT_FACTOR = {"k": 1, "m": 2, "g": 3, "t": 4}


@dataclass(frozen=True)
class Unmatched:
    """A text that mapped to no symptom, and the closest catalogue symptoms."""

    text: str
    nearest: tuple[str, ...]


def _words(text: str) -> list[str]:
    """Plain lower-cased words (no lexicon terms): for the rewriting of numbers and times.

    >>> _words("Per-user limit: 512 processes; I/O error")
    ['per-user', 'per', 'user', 'limit', '512', 'processes', 'i/o', 'i', 'o', 'error']
    """
    return _PLAIN.words(text)


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w not in _STOPWORDS]


@dataclass(frozen=True)
class _Words:
    """A text cut into words, with each word's key (what it means) beside it."""

    words: tuple[str, ...]
    keys: tuple[str, ...]
    #: Indexes of the words that carry meaning (stopwords left out, unless nothing else).
    content: tuple[int, ...] = ()
    #: The keys, for a quick "could it be here at all" before a phrase is matched.
    keyset: frozenset[str] = frozenset()

    @classmethod
    def of(cls, words: tuple[str, ...], keys: tuple[str, ...]) -> _Words:
        content = tuple(i for i, w in enumerate(words) if w not in _STOPWORDS) or tuple(range(len(words)))
        return cls(words, keys, content, frozenset(keys))


class _Matcher:
    """Phrase matching under one vocabulary: two words match when they mean the same thing
    (same key: login/logins, failure/fails, RAM/memory) or one is a small typo of the other."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self._typo: dict[tuple[str, str], bool] = {}
        self._cut: dict[str, _Words] = {}

    def cut(self, text: str) -> _Words:
        hit = self._cut.get(text)
        if hit is None:
            words = tuple(self.vocabulary.words(text))
            hit = _Words.of(words, tuple(self.vocabulary.key(w) for w in words))
            if len(self._cut) < 50_000:
                self._cut[text] = hit
        return hit

    def words(self, text: str) -> list[str]:
        return list(self.cut(text).words)

    def _is_typo(self, a: str, b: str) -> bool:
        """A small typo of a long word ("synchronsied" for "synchronised")."""
        if a[0] != b[0] or min(len(a), len(b)) < 6 or abs(len(a) - len(b)) > 1 or not a[0].isalpha():
            return False
        # Two words the lexicon knows are two words, not a typo ("filling" is not "failing").
        if self.vocabulary.knows(a) and self.vocabulary.knows(b):
            return False
        hit = self._typo.get((a, b))
        if hit is None:
            hit = self._typo[(a, b)] = SequenceMatcher(None, a, b).ratio() >= 0.85
        return hit

    def same_word(self, a: str, b: str) -> bool:
        """Equal, the same key, or a small typo of a long word.

        >>> m = _Matcher(Vocabulary(Lexicon()))
        >>> m.same_word("killing", "killed"), m.same_word("time", "timeout"), m.same_word("nearly", "linearly")
        (True, False, False)
        """
        key = self.vocabulary.key
        return a == b or (len(a) >= 3 and len(b) >= 3 and key(a) == key(b)) or self._is_typo(a, b)

    def _hits(self, phrase: _Words, i: int, text: _Words, lo: int = 0, hi: int | None = None) -> int | None:
        """The first index in text[lo:hi] whose word means phrase word ``i``."""
        want_key, want = phrase.keys[i], phrase.words[i]
        stop = len(text.words) if hi is None else min(hi, len(text.words))
        members = self.vocabulary.classes.get(want)
        if members is not None:  # "@write": any word of the class
            return next((j for j in range(lo, stop) if text.keys[j] in members), None)
        short = len(want) < 3
        for j in range(lo, stop):
            w = text.words[j]
            if w == want or (not short and len(w) >= 3 and text.keys[j] == want_key) or self._is_typo(want, w):
                return j
        return None

    def _possible(self, phrase: _Words, text: _Words) -> bool:
        """Whether every content word of the phrase could be in the text (its key, a word of
        its class, or a long word that a typo could explain): most phrases fail here at once."""
        for i in phrase.content:
            want, key = phrase.words[i], phrase.keys[i]
            members = self.vocabulary.classes.get(want)
            if members is not None:
                if not members & text.keyset:
                    return False
            elif key not in text.keyset and want not in text.words and (
                    len(want) < 6 or not any(self._is_typo(want, w) for w in text.words)):
                return False
        return True

    def _positions(self, phrase: _Words, i: int, text: _Words) -> list[int]:
        """Every index of the text whose word means phrase word ``i``."""
        out, j = [], self._hits(phrase, i, text)
        while j is not None:
            out.append(j)
            j = self._hits(phrase, i, text, j + 1)
        return out

    @staticmethod
    def _reach(text: _Words, pos: int, slack: int) -> int:
        """The end (exclusive) of the window after ``pos`` that skips at most ``slack``
        meaningful words."""
        end, skipped = pos + 1, 0
        while end < len(text.words):
            if text.words[end] not in _FILLERS:
                if skipped == slack:
                    return end + 1
                skipped += 1
            end += 1
        return end

    def match_loose(self, phrase: _Words, text: _Words, *, sided: bool = True) -> tuple[int, int] | None:
        """The narrowest span holding every content word of the phrase, in any order, if it is
        at most ``_slack`` meaningful words longer than the phrase; None otherwise.

        >>> m = _Matcher(Vocabulary(Lexicon()))
        >>> m.match_loose(m.cut("server error"), m.cut("the error came from the server"))
        (1, 5)
        >>> m.match_loose(m.cut("uploads fail"), m.cut("uploads do not fail"))
        (0, 3)
        >>> m.match_loose(m.cut("server error"), m.cut("commands on the server print a complaint about access or a bus error")) is None
        True
        """
        wanted = phrase.content
        if not self._possible(phrase, text):
            return None
        choices = []
        for i in wanted:
            hits = self._positions(phrase, i, text)
            if not hits:
                return None
            choices.append(hits)
        # A symptom's negator keeps its words on their sides: "not loading at all" is not "load
        # isn't elevated at all", "host not found" is not "not found on this server". (A denial
        # reads either way: "log shows nothing".)
        negators = [k for k, i in enumerate(wanted) if phrase.words[i] in _NEGATORS] if sided else []
        bound = [(min(j, k), max(j, k)) for k in negators for j in range(len(wanted)) if j != k]
        best: tuple[int, int] | None = None
        for combo in itertools.islice(itertools.product(*choices), 4096):
            if len(set(combo)) < len(combo):  # one word of the text stands for one of the phrase
                continue
            if any(combo[a] > combo[b] for a, b in bound):
                continue
            span = (min(combo), max(combo))
            if best is None or span[1] - span[0] < best[1] - best[0]:
                best = span
        if best is None:
            return None
        # Fillers in the span are free, so a phrase's own fillers ("still uses the old") must
        # not add to the slack: only the words the span holds beyond the phrase's count.
        meaningful = sum(1 for i in wanted if phrase.words[i] not in _FILLERS)
        return best if _spread(text.words, best) <= meaningful + _slack(len(wanted)) else None

    def match_tight(self, phrase: _Words, text: _Words) -> tuple[int, int] | None:
        """The span where the phrase's content words appear in order with little in between.

        >>> m = _Matcher(Vocabulary(Lexicon()))
        >>> m.match_tight(m.cut("disk quota exceeded"), m.cut("write failed: disk quota was exceeded"))
        (2, 5)
        >>> m.match_tight(m.cut("disk full"), m.cut("the disk of the backup server was never full")) is None
        True
        """
        wanted = phrase.content
        if not self._possible(phrase, text):
            return None
        start = self._hits(phrase, wanted[0], text)
        while start is not None:
            pos, ok = start, True
            for i in wanted[1:]:
                hit = self._hits(phrase, i, text, pos + 1, self._reach(text, pos, _slack(len(wanted))))
                if hit is None:
                    ok = False
                    break
                pos = hit
            if ok:
                return start, pos
            start = self._hits(phrase, wanted[0], text, start + 1)
        return None

    def match(self, phrase: _Words, text: _Words, loose: bool, *, sided: bool = True) -> tuple[int, int] | None:
        return self.match_loose(phrase, text, sided=sided) if loose else self.match_tight(phrase, text)

    def score(self, phrase: _Words, text: _Words) -> float:
        wanted = phrase.content
        return sum(self._hits(phrase, i, text) is not None for i in wanted) / len(wanted)


def _negated(clause_words: list[str], span: tuple[int, int], phrase_words: list[str]) -> bool:
    """A negator just before the matched words or between them ("uploads do not fail")."""
    first, last = span
    if any(w in _NEGATORS for w in phrase_words):
        # The phrase carries its own negation ("login does not work"); only a message that
        # starts with one and is itself denied counts ("no 'cannot assign ...' errors").
        return (phrase_words[0] in _NEGATORS and first > 0
                and clause_words[first - 1] in _MESSAGE_DENIALS)
    start = max(0, first - 3)
    for k, w in enumerate(clause_words[start:last], start):
        if w in _NEGATORS and w not in _FAILURE_NEGATORS and (w not in _ZERO or k == first - 1):
            following = clause_words[k + 1] if k + 1 < len(clause_words) else ""
            if following not in _FAILURE_ADJECTIVES:
                return True
    return _says_verdict(clause_words[last + 1 : last + 7])


def _says_verdict(words: list[str]) -> bool:
    """Whether the words hold a healthy verdict ("is fine", "near zero"), as whole words."""
    joined = f" {' '.join(words)} "
    return any(f" {verdict} " in joined for verdict in _POST_NEGATIONS)


# --- rewriting what phrases cannot say ----------------------------------------------------------


def errno_texts(text: str) -> list[str]:
    """The strerror text (lower case) of every errno a text names by number or by name.

    >>> errno_texts("mysqld: Can't read dir of '/tmp/' (Errcode: 13 - Permission denied)")
    ['permission denied']
    >>> errno_texts("connect() to 127.0.0.1:9000 failed (111: Connection refused)")
    ['connection refused']
    >>> errno_texts("write failed: ENOSPC")
    ['no space left on device']
    >>> errno_texts("HTTP error 503")
    []
    >>> errno_texts("Can't connect to MySQL server on 'db.local' (13)")
    ['permission denied']
    >>> errno_texts("the job ran (24) times")
    []
    """
    out: list[str] = []
    for m in _ERRNO_NUMBER.finditer(text):
        num = int(next(g for g in m.groups() if g))
        if num in errno.errorcode and num > 0:
            out.append(os.strerror(num).lower())
    for m in _ERRNO_NAME.finditer(text):
        num = getattr(errno, m.group(0), None)
        if isinstance(num, int) and errno.errorcode.get(num) == m.group(0):
            out.append(os.strerror(num).lower())
    return list(dict.fromkeys(out))


def denied_connects(sentence: str) -> list[str]:
    """``connect permission denied`` when a sentence pairs a connection with EACCES: the app's
    outgoing connects are refused by a security policy, not by a file's mode.

    >>> denied_connects("Can't connect to MySQL server on 'db.local' (13)")
    ['connect permission denied']
    >>> denied_connects("open(/var/www/x): failed to open stream: Permission denied")
    []
    """
    denied = "permission denied" in errno_texts(sentence) or "permission denied" in sentence.lower()
    return ["connect permission denied"] if denied and _CONNECT.search(sentence) else []


#: "there's no clock problem here", "no session warnings in the log": a kind of trouble denied.
_DENIED_TROUBLE = re.compile(
    r"\b(?:no|not an?|never an?|without an?y?|nothing wrong with(?: the)?)\s+((?:[\w/-]+ ){0,2}?[\w/-]+)\s+"
    r"(?:problems?|issues?|errors?|warnings?|trouble|complaints?)\b",
    re.IGNORECASE,
)


def denied_troubles(sentence: str) -> list[str]:
    """``<thing> problem`` for each kind of trouble the sentence denies, to be read as denied.

    >>> denied_troubles("There's no clock problem here, and no session warnings in the log")
    ['clock problem', 'clock error', 'session problem', 'session error']
    """
    out: list[str] = []
    for m in _DENIED_TROUBLE.finditer(sentence):
        thing = m.group(1).lower()
        out += [f"{thing} problem", f"{thing} error"]
    return out


#: "CPU, memory and disk usage were all normal", "checked databases, CPU and memory: all
#: normal": one verdict given to a list of things.
_LISTED_VERDICT = re.compile(
    r"((?:[\w'/-]+ ){0,3}[\w'/-]+(?:, (?:[\w'/-]+ ){0,3}[\w'/-]+)*,? and (?:[\w'/-]+ ){0,3}[\w'/-]+)"
    r"(?:: | (?:were|are|looked|look|seemed|seem|all looked|all seemed|stayed|remained) )(?:all )?"
    r"(normal|fine|ok|okay|healthy|low)\b",
    re.IGNORECASE,
)


def listed_verdicts(sentence: str) -> list[str]:
    """``X is <verdict>`` for each thing of a list one verdict is given to.

    >>> listed_verdicts("The server's CPU, memory and disk usage were all normal.")
    ["the server's cpu is fine", 'memory is fine', 'disk usage is fine']
    >>> listed_verdicts("On-call checked databases, CPU and memory: all normal")
    ['on-call checked databases is fine', 'cpu is fine', 'memory is fine']
    """
    out: list[str] = []
    for m in _LISTED_VERDICT.finditer(sentence):
        items = re.split(r",\s*(?:and\s+)?|\s+and\s+", m.group(1).lower())
        verdict = "low" if m.group(2).lower() == "low" else "fine"
        out += [f"{item.strip()} is {verdict}" for item in items if item.strip()]
    return out


def http_codes(text: str) -> list[str]:
    """``http NNN`` and ``http 4xx``/``http 5xx`` for every HTTP status a text names; a
    negator just before the code gives ``no http NNN``.

    >>> http_codes("every client request gets HTTP 502")
    ['http 502', 'http 5xx']
    >>> http_codes("Per-user limit on the server: 512 processes, ulimit 500,000")
    []
    >>> http_codes("the monitor saw 502 errors; 500 errors an hour is normal here")
    ['http 502', 'http 5xx']
    >>> http_codes("The load balancer answers 200 for all health checks and pages")
    ['no http 5xx']
    >>> http_codes("no 504 since the fix")
    ['no http 504', 'no http 5xx']
    """
    out: list[str] = []
    if _HTTP_OK.search(text) and not _HTTP_CODE.search(text):
        return ["no http 5xx"]
    for m in _HTTP_CODE.finditer(text):
        after = _words(text[m.end() : m.end() + 16])
        counted = bool(after) and after[0] in _UNITS
        # "500 errors" may count them; "502 errors" names the status.
        names_status = bool(after) and after[0] in ("error", "errors") and not m.group(1).endswith("00")
        if counted and not names_status:
            continue
        before = _words(text[max(0, m.start() - 24) : m.start()])[-3:]
        neg = "no " if any(w in _NEGATORS and w not in _FAILURE_NEGATORS for w in before) else ""
        code = m.group(1)
        out += [f"{neg}http {code}", f"{neg}http {code[0]}xx"]
    return list(dict.fromkeys(out))


def _subject_of(word: str) -> str | None:
    """What one word measures: a subject word, or a compound that starts with one
    ("CPUUtilization", "MemoryUsage")."""
    word = word.rstrip("%:,")
    if word in _SUBJECTS:
        return _SUBJECTS[word]
    return next((_SUBJECTS[k] for k in _COMPOUND_SUBJECTS if word.startswith(k) and len(word) > len(k) + 2), None)


def _subject(words: list[str], at: int) -> str:
    """The measured thing nearest to word index ``at`` (the words before count first, but a
    label right after the number names it: top's "95% us, 0% idle")."""
    if at + 1 < len(words) and _subject_of(words[at + 1]):
        return _subject_of(words[at + 1])
    best: tuple[int, str] | None = None
    for i, w in enumerate(words):
        key = _subject_of(w)
        if key is None:
            continue
        dist = (at - i) if i <= at else (i - at) + 1
        if best is None or dist < best[0]:
            best = (dist, key)
    return best[1] if best and best[0] <= 8 else ""


def quantities(sentence: str) -> list[str]:
    """Plain words for the quantities a sentence states: load, CPU, iowait, memory, swap,
    disk and inode use.

    >>> quantities("top: load average 0.23 -> 22.59; user CPU under 10%; I/O wait 93.6%")
    ['high load', 'low cpu', 'high iowait']
    >>> quantities("Load average is 0.3 on an 8-core machine")
    ['load is normal']
    >>> quantities("load 14.2 on 4 cores")
    ['high load']
    >>> quantities("a process keeps 4 threads at 100% CPU")
    ['high cpu']
    >>> quantities("Only about 20 GB of 32 GB RAM is in use")
    ['memory not full']
    >>> quantities("df -ih: /dev/sda2 has 1.6M inodes, 1.6M used, 8 free (100%)")
    ['out of inodes']
    >>> quantities("/ has 0 bytes free")
    ['disk full']
    >>> quantities("df -h looks fine: / at 21%, /var at 54%")
    ['disk has space']
    >>> quantities("pages suddenly take 10-20 seconds to return")
    ['slow']
    >>> quantities("ps shows 2,903 screen processes and 387 copies of the script")
    ['many processes']
    >>> quantities("top showed 95% steal (st)")
    ['high steal']
    >>> quantities("df: tmpfs  99M  99M  0  100% /run; /dev/sda1 20G 12G 7.0G 63% /")
    ['disk full', 'disk has space']
    >>> quantities("The JSON log file backing the container is 119 GB")
    ['huge log file']
    >>> quantities("/var/lib/php5 contained millions of files; app/cache holds more than 160k files")
    ['huge number of files']
    >>> quantities("RAM at 40% after launch, 60% nine hours later, then it approaches 100%")
    ['memory grows', 'memory full']
    >>> quantities("virtual memory went from 6.2 GiB to 11.0 GiB and never came down")
    ['memory grows']
    >>> quantities("vmstat: st around 25-30; top shows 95% us, 0% idle")
    ['high cpu', 'high steal']
    >>> quantities("top sorted by %CPU: mysqld at 390%")
    ['high cpu', 'process at 100% cpu']
    >>> quantities("ps aux | grep celery | wc -l gives 350")
    ['many processes']
    >>> quantities('"No space left on device" while / shows 20G available')
    ['df shows free']
    >>> quantities("CloudWatch alarm: CPUUtilization > 95% for 15 minutes")
    ['high cpu']
    >>> quantities("Disk usage went from 60% to 95% in two hours")
    ['disk usage rising']
    >>> quantities("rps jumped from 50 to 2000 in like 5 min")
    ['traffic spike']
    >>> quantities('uptime says "up 3:12"; mtr shows Loss% 12.0 on the last hop')
    ['rebooted recently', 'packet loss']
    >>> quantities("the 16 GB instance has less than 300 MB of memory available")
    ['memory full']
    >>> quantities("top: %Cpu(s): 92.3 us,  6.1 sy,  1.2 id,  28.4 st")
    ['high cpu', 'high steal']
    >>> quantities("df: /dev/sda1 50G 49G 1G 98% /   but   du -xsh / -> 18G")
    ['disk full', 'du and df disagree']
    >>> quantities("var/cache and var/page_cache take 60% of the disk")
    ['huge cache']
    >>> quantities("The memory used by the Sidekiq worker climbs over the course of several days")
    ['memory grows']
    """
    out: list[str] = []
    lowered = re.sub(r"(\d)\s*(?:percent|pct)\b", r"\1%", re.sub(r"(\d)\s+%", r"\1%", sentence.lower()))
    cores_m = _CORES.search(lowered)
    cores = float(cores_m.group(1)) if cores_m else None
    for m in _LOAD.finditer(_CORES.sub(" ", lowered)):
        numbers = [float(n) for n in _NUMBER.findall(m.group(1).split("%")[0])]
        if not numbers:
            continue
        high, normal = (1.5 * cores, 0.7 * cores) if cores else (5.0, 1.0)
        if max(numbers) >= high:
            out.append("high load")
        elif max(numbers) <= normal:
            out.append("load is normal")
    df_rows = list(_DF_ROW.finditer(lowered))
    for m in df_rows:
        inodes = "inode" in lowered or "df -i" in lowered
        out += _judge("inode" if inodes else "disk", float(m.group(1)), "")
    if df_rows:
        lowered_rest = _DF_ROW.sub(" ", lowered)
    else:
        lowered_rest = lowered
    words = lowered_rest.replace("%", "% ").split()
    readings: list[tuple[str, float, str]] = []
    for i, w in enumerate(words):
        pm = _PERCENT.fullmatch(w.strip("(),;:~"))
        if not pm or (i and words[i - 1] == "from"):  # "from 60% to 95%": where it ended counts
            continue
        if words[i + 1 : i + 2] == ["of"]:  # "60% of the disk" is a share, not a use...
            if _FREE_WORDS.intersection(x.strip("(),;:.~") for x in words[i + 2 : i + 7]):
                readings.append(("disk", 100 - float(pm.group(1)), ""))  # ...unless it is free
            continue
        value = float(pm.group(1))
        stripped = [x.strip("(),;:~") for x in words]
        subject = _subject(stripped, i)
        if subject == "disk" and any(_SUBJECTS.get(x) == "inode" for x in stripped):
            subject = "inode"  # "1.6M inodes, 1.6M used, 8 free (100%)": df -i's use
        readings.append((subject, value, " ".join(words[max(0, i - 4) : i + 3])))
    out += _judge_readings(readings, _TIME_COURSE.search(lowered) is not None)
    for m in _OF_TOTAL.finditer(sentence):
        part = float(m.group(1)) * 1024 ** _UNIT_FACTOR[m.group(2).lower()]
        whole = float(m.group(3)) * 1024 ** _UNIT_FACTOR[m.group(4).lower()]
        if whole > 0:
            tail = lowered[m.start() : m.end() + 30].split()
            subject = _subject(tail + lowered[: m.start()].split()[-4:], 0)
            out += _judge(subject, 100 * part / whole, "")
    for m in _ZERO_FREE.finditer(sentence):
        near = lowered[max(0, m.start() - 60) : m.end() + 20].split()
        out.append("out of inodes" if any(_SUBJECTS.get(w.strip("(),:")) == "inode" for w in near) else "disk full")
    for m in _DURATION.finditer(lowered):
        amount = float(m.group(1)) if m.group(1)[0].isdigit() else _WORD_NUMBERS[m.group(1)]
        seconds = amount * (60 if m.group(2).startswith("m") else 1)
        window = lowered[max(0, m.start() - 40) : m.end() + 30]
        if seconds >= 5 and _WAIT_WORDS.search(window) and not _CLOCK_WORDS.search(window):
            out.append("slow")
    if any(int(m.group(1).replace(",", "")) >= 100 for m in _PROCESS_COUNT.finditer(lowered)):
        out.append("many processes")
    out += _sizes(lowered)
    if re.search(r"%cpu|\btop\b", lowered):
        for m in _TOP_FIELDS.finditer(lowered):
            value, field = float(m.group(1)), m.group(2)
            if field != "us" or value >= 90:  # user time alone says nothing when low (sy may be high)
                out += _judge(_TOP_SUBJECT[field], value, "")
    if _EVERY.search(lowered):
        out.append("every few minutes")
    for m in _SHARE_OF_DISK.finditer(lowered):
        if int(m.group(1)) >= 50:
            near = [(abs(h.start() - m.start()), label) for pattern, label in _SIZE_SUBJECTS
                    for h in pattern.finditer(lowered[max(0, m.start() - 80) : m.start()])]
            out += [min(near)[1]] if near else []
    du = _DU_TOTAL.search(lowered)
    if du and "df" in lowered:
        du_gb = float(du.group(1)) / (1024 if du.group(2).lower() == "m" else 1) * (1024 if du.group(2).lower() == "t" else 1)
        used = [float(m.group(1)) for m in re.finditer(r"(\d+(?:\.\d+)?)\s*g\s+(?:used\b)?", lowered[: du.start()])]
        if used and max(used) >= 1.5 * du_gb + 1:
            out.append("du and df disagree")
    for m in _RISE.finditer(lowered):
        low, high = float(m.group(1)), float(m.group(3))
        before = lowered[max(0, m.start() - 60) : m.start()].split()
        subject = _subject(before + ["x"], len(before))
        if m.group(2) or m.group(4):
            if subject == "disk" and high >= low + 10:
                out.append("disk usage rising")
            elif subject == "mem" and high >= low + 15:
                out.append("memory grows")
        elif low > 0 and high >= 3 * low and _TRAFFIC_WORDS.search(lowered[max(0, m.start() - 60) : m.end() + 20]):
            out.append("traffic spike")
    if any((m.group(1) and int(m.group(1)) < 24) or m.group(2) for m in _UPTIME.finditer(lowered)) and "uptime" in lowered:
        out.append("rebooted recently")
    for m in _LOSS.finditer(lowered):
        if float(m.group(1) or m.group(2)) >= 1:
            out.append("packet loss")
    for m in _LITTLE_LEFT.finditer(lowered):
        near = lowered[max(0, m.start() - 80) : m.end() + 30].split()
        if any(_subject_of(w) == "mem" for w in near) and (m.group(2).lower() == "k" or float(m.group(1)) < 1024):
            out.append("memory full")
    for m in _COLUMN.finditer(lowered):
        out += _judge(_SUBJECTS.get(m.group(1).lower(), "io"), float(m.group(2)), "")
    if re.search(r"%cpu|pcpu|\bcpu\b|\btop\b", lowered) and any(100 < float(m.group(1)) <= 6400 for m in _PROCESS_SHARE.finditer(lowered)):
        out.append("process at 100% cpu")
    for m in _WC_COUNT.finditer(lowered):
        count = float(m.group(1).replace(",", "")) * {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6}.get((m.group(2) or "").lower(), 1)
        if re.search(r"\bps\b|pgrep|processes", lowered):
            out += ["many processes"] if count >= 100 else []
        elif count >= 100_000:
            out.append("huge number of files")
    if re.search(r"no space left|enospc|disk (?:is )?full", lowered) and "disk has space" in out:
        out.append("df shows free")
    for m in _FREE_AMOUNT.finditer(lowered):
        if float(m.group(1)) >= (100 if m.group(2) == "m" else 1):
            out.append("df shows free" if re.search(r"no space left|enospc|disk (?:is )?full", lowered) else "disk has space")
    for m in _FILE_COUNT.finditer(lowered):
        if m.group(3):
            count = 1e6
        else:
            count = float(m.group(1).replace(",", "")) * {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6}.get((m.group(2) or "").lower(), 1)
        if count >= 100_000:
            out.append("huge number of files")
    for m in _FROM_TO.finditer(sentence):
        before = float(m.group(1)) * 1024 ** _UNIT_FACTOR[m.group(2).lower()]
        after = float(m.group(3)) * 1024 ** _UNIT_FACTOR[m.group(4).lower()]
        if _subject(lowered[: m.start()].split()[-6:] + ["x"], 5) == "mem" and after >= 1.5 * before:
            out.append("memory grows")
    for m in _MEMORY_COURSE.finditer(lowered):
        said = m.group(0).split()
        # "the heap size was increased": someone raised a setting
        if not _NEGATORS.intersection(said) and said[-2] not in ("was", "were", "been", "be", "is"):
            out.append("memory grows")
    return list(dict.fromkeys(out))


def _judge_readings(readings: list[tuple[str, float, str]], over_time: bool) -> list[str]:
    """What the percentages of one sentence mean. Told as a course over time ("40% RAM at
    launch, nine hours later 60%, then it approaches 100%"), they are one measure: a reading
    with no subject of its own continues the one before, only the last says where it stands,
    and a run that climbs says it grows."""
    if not over_time or len(readings) < 2:
        return [label for subject, value, context in readings for label in _judge(subject, value, context)]
    runs: dict[str, list[tuple[float, str]]] = {}
    subject = ""
    for own, value, context in readings:
        subject = own or subject
        runs.setdefault(subject, []).append((value, context))
    out = []
    for subject, run in runs.items():
        values = [v for v, _c in run]
        if len(values) >= 2 and values == sorted(values) and values[-1] - values[0] >= _RUN_RISE.get(subject, 1e9):
            out.append(_RUN_LABEL[subject])
        out += _judge(subject, *run[-1])
    return out


def _sizes(lowered: str) -> list[str]:
    """What a size of at least 1 GB is the size of: a log, backups, a cache, database files."""
    out = []
    for m in _SIZE.finditer(lowered):
        amount = float(m.group(1).replace(",", "")) * (1024 if m.group(2).lower() == "t" else 1)
        if amount < 1:
            continue
        start = max(0, m.start() - 80)
        window = lowered[start : m.end() + 60]
        # The thing named nearest to the size is what it measures ("laravel.log is 48G" in a
        # sentence that also mentions a cache).
        near = [(min(abs(start + h.start() - m.start()) for h in pattern.finditer(window)), label)
                for pattern, label in _SIZE_SUBJECTS if pattern.search(window)]
        out += [min(near)[1]] if near else []
    return out


def _judge(subject: str, pct: float, context: str) -> list[str]:
    """What a percentage of ``subject`` means; ``context`` holds the words around it."""
    low_words = any(w in context for w in ("under", "below", "only", "less than"))
    if subject == "cpu":
        return ["high cpu"] if pct >= 90 and not low_words else ["low cpu"] if pct <= 30 else []
    if subject == "io":
        return ["high iowait"] if pct >= 20 else ["low iowait"] if pct <= 5 else []
    if subject == "mem":
        if any(w in context for w in ("avail", "free")):  # "MemAvailable below 4%": what is left
            return ["memory full"] if pct <= 10 else ["memory not full"] if pct >= 30 else []
        return ["memory full"] if pct >= 90 else ["memory not full"] if pct <= 70 else []
    if subject == "swap":
        return ["heavy swapping"] if pct >= 50 else []
    if subject == "inode":
        return ["out of inodes"] if pct >= 98 else []
    if subject == "disk":
        return ["disk full"] if pct >= 98 else ["disk has space"] if pct <= 85 else []
    if subject == "steal":
        return ["high steal"] if pct >= 10 else ["low steal"] if pct <= 2 else []
    if subject == "idle":
        return ["high cpu"] if pct <= 10 else ["low cpu"] if pct >= 70 else []
    return []


def time_anchors(text: str) -> list[str]:
    """``after ...`` for every "since/after/following X" in a text, with X's content words.

    >>> time_anchors("Broken ever since we ran composer update on Friday")
    ['after ran composer update friday']
    >>> time_anchors("It started following the PHP upgrade")
    ['after php upgrade']
    """
    out = []
    for m in _TIME_ANCHOR.finditer(text):
        content = [w for w in _words(m.group(1)) if w not in _STOPWORDS and "-" not in w and "/" not in w]
        if content:
            out.append("after " + " ".join(content))
    return out


def quoted(text: str) -> list[str]:
    """Messages quoted in a text.

    >>> quoted('syslog shows "Cannot assign requested address, retrying" again')
    ['Cannot assign requested address, retrying']
    >>> quoted("It can't be the slave's dir")
    []
    """
    return [a or b for a, b in _QUOTED.findall(text)]


def _denied_before(text: str, start: int) -> bool:
    """Whether a negator stands among the three words before ``start``: a quoted message or a
    pasted log line said not to be there ('no "Too many open files"', "haven't seen ...").

    >>> _denied_before('No "Cannot assign requested address" errors in any log', 4)
    True
    >>> _denied_before('syslog shows "Cannot assign requested address"', 14)
    False
    """
    before = _words(text[max(0, start - 30) : start])[-3:]
    return any(w in _NEGATORS and w not in _FAILURE_NEGATORS for w in before)


# --- matching -----------------------------------------------------------------------------------


def _matchable_defs(kb: KnowledgeBase) -> list[FindingDef]:
    """Every finding a person's words can state: the symptoms, and the probe findings whose
    fact an operator may have measured himself ("df -i shows 100 %")."""
    return [f for f in kb.findings.values() if f.phrases or f.negations]


@lru_cache(maxsize=8)
def _matcher(lexicon: Lexicon) -> _Matcher:
    return _Matcher(Vocabulary(lexicon))


@dataclass(frozen=True)
class _Phrases:
    """A finding's phrases and negations, already cut into words."""

    fid: str
    phrases: tuple[_Words, ...]
    negations: tuple[_Words, ...]


def _compile(defs: list[FindingDef], m: _Matcher) -> list[_Phrases]:
    out = []
    for d in defs:
        phrases = tuple(w for w in map(m.cut, d.phrases) if w.words)
        negations = tuple(w for w in map(m.cut, d.negations) if w.words)
        out.append(_Phrases(d.id, phrases, negations))
    return out


def _negation_hit(neg: _Words, text: _Words, loose: bool, m: _Matcher) -> bool:
    span = m.match(neg, text, loose, sided=False)
    # An antonym must be said as it is: "logs are updating" is not "logs stopped updating".
    if span is None or _spread(text.words, span) > len(neg.content):
        return False
    # A "no" right after answers the phrase: "System clock synchronized: no".
    if span[1] + 1 < len(text.words) and text.words[span[1] + 1] in _NEGATORS:
        return False
    if any(w in _NEGATORS for w in neg.words):
        # A negation phrase that says "no"/"not" only counts where the text says it too.
        return any(w in _NEGATORS for w in text.words)
    # "the disk is not full" denies "disk is full", the phrase that denies a symptom.
    return not _negated(list(text.words), span, list(neg.words))


#: Words that, after "or", open a second alternative of one statement ("has expired or is not
#: yet valid").
_ALTERNATIVE_OPENERS = frozenset({"is", "are", "was", "were", "has", "have", "not", "be"})


def _disjunct(words: tuple[str, ...], span: tuple[int, int], phrase_words: tuple[str, ...]) -> bool:
    """Whether the match is the second alternative of an "A or is B" statement, which asserts
    neither; the first alternative still reads as said ("certificate has expired or is not yet
    valid" is an expired certificate, not a clock that is wrong).

    >>> _disjunct(("certificate", "has", "expired", "or", "is", "not", "yet", "valid"), (4, 7), ("is", "not", "valid", "yet"))
    True
    >>> _disjunct(("logins", "or", "uploads", "fail"), (2, 3), ("uploads", "fail"))
    False
    """
    if "or" in phrase_words:
        return False
    first, last = span
    return any(words[k] == "or" and words[k + 1] in _ALTERNATIVE_OPENERS
               for k in range(max(0, first - 2), min(last, len(words) - 1)))


def _match_words(text: _Words, compiled: list[_Phrases], loose: bool, m: _Matcher) -> dict[str, FindingState]:
    found: dict[str, FindingState] = {}
    for sym in compiled:
        if any(_negation_hit(neg, text, loose, m) for neg in sym.negations):
            found[sym.fid] = FindingState.ABSENT
            continue
        for phrase in sym.phrases:
            span = m.match(phrase, text, loose)
            if span is not None and _disjunct(text.words, span, phrase.words):
                continue
            if span is not None:
                negated = _negated(list(text.words), span, list(phrase.words))
                found[sym.fid] = FindingState.ABSENT if negated else FindingState.PRESENT
                break
    return found


#: A sentence about a plan, a wish, a guess or the documentation states nothing about the host
#: now.
_IRREALIS = re.compile(
    r"\b(?:plan(?:s|ned|ning)? to|(?:we|i|they|you)(?:'re|'m| are| am)? going to|we'll|we will|i'll|i will|would like|want(?:s|ed)? to|need(?:s)? to"
    r"|should we|next (?:week|month|quarter|sprint|year)|tomorrow|someday|some day|documentation|documented"
    r"|wiki|handbook|explain|in theory|hypothetically"
    # a guess is not a fact: "first guesses were bigger logfiles", "we suspected the database"
    r"|guess(?:es|ed)?|suspect(?:s|ed)?|suspicion|assum(?:e|ed|ing)|first thought|thought it was|believed"
    r"|wonder(?:s|ed)?|unsure|not sure|whether|maybe|perhaps|possibly|might be|could be"
    r"|(?:first )?instinct|speculat\w*|hypothes\w*"
    # someone's advice is not a reading: "the maintainer suggested a damaged filesystem"
    r"|suggest(?:s|ed|ing|ion)?|recommend(?:s|ed|ing)?|advis(?:ed|es|ing)|asked (?:\w+ )?to"
    # a requirement is not a reading: "needs at least 5 GB free"
    r"|needs? at least|requires? at least)\b",
    re.IGNORECASE,
)


#: URLs, host names and paths: their words ("wiki.example.org", "/srv/docs") are not the speaker's.
_NAMES = re.compile(r"\S+://\S+|\b[\w-]+(?:\.[\w-]+){2,}\b|(?<!\w)/[\w./-]+")


#: "nginx error log:", "/var/log/messages:", "dmesg:" before the line read there.
_SOURCE_LABEL = re.compile(
    r"^\s*(?:[\w./-]+\s+){0,3}?[\w./-]*?\b(?:log|logs|journal|journalctl|dmesg|messages)\s*:\s+(?=\S)", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    """The sentences of a text; a fragment of three words or fewer ("still broken") belongs
    to the sentence before it."""
    out: list[str] = []
    for piece in (s.strip() for s in _SENTENCE.split(text) if s and s.strip()):
        if out and len(piece.split()) <= 3:
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


#: The probes whose log signatures mean "a log holds this line": a person who pastes such a
#: line states the same finding. (A crash loop or errors-after-a-change need more than one
#: line, or a time, so their signatures are not statements.)
_LINE_PROBES = frozenset({"logs.signatures", "logs.kernel", "net.log_errors"})


@lru_cache(maxsize=8)
def _line_signatures(signatures: tuple[tuple[str, str], ...]) -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple((re.compile(pattern, re.IGNORECASE), fid) for pattern, fid in signatures)


def signature_hits(text: str, kb: KnowledgeBase) -> dict[str, FindingState]:
    """The log findings a text states by quoting a line the log probes would match (the KB's
    signatures); a negator just before the line ("no 'Too many open files' any more") denies it.

    >>> from prodx.kb.loader import load_kb
    >>> signature_hits("kernel: Out of memory: Killed process 1234 (mysqld)", load_kb())
    {'log.oom_kill': <FindingState.PRESENT: 'present'>}
    >>> signature_hits('no "Too many open files" errors since the fix', load_kb())
    {'log.too_many_open_files': <FindingState.ABSENT: 'absent'>}
    """
    pairs = tuple((sig["pattern"], sig["finding"]) for sig in kb.signatures
                  if kb.findings.get(sig["finding"]) and kb.findings[sig["finding"]].probe in _LINE_PROBES)
    found: dict[str, FindingState] = {}
    for pattern, fid in _line_signatures(pairs):
        hit = pattern.search(text)
        if hit is None or fid in found:
            continue
        found[fid] = FindingState.ABSENT if _denied_before(text, hit.start()) else FindingState.PRESENT
    return found


#: Words of the catalogue too common to tell findings apart by themselves.
_VAGUE = frozenset("app user server site service process file files host error errors log logs time".split())
#: Function words: rare in the catalogue's own text, so weighty by rarity, but they say nothing
#: of the host ("something broke between the two commits" is not a clock that is wrong).
_FUNCTION_WORDS = frozenset(
    "about above across against along already although among another anyone anything anyway anywhere "
    "around as because beside besides between beyond both during each either else elsewhere etc "
    "everyone everything everywhere except former further hence here however indeed instead into "
    "itself latter meanwhile moreover must myself namely neither nevertheless nobody nowhere onto "
    "others otherwise ourselves perhaps please rather same several she he him his her hers herself "
    "himself since so somehow someone something somewhere such than thence there thereby therefore "
    "these those thus together toward towards upon via what whatever whenever where whereas "
    "wherever whether which who whoever whom whose why within yet you your yours yourself "
    "go goes going went gone thing things only one two three first second".split()
)
#: Words that say nothing of a failure by themselves (prodx.engine.alike leaves them out).
CONTENTLESS = _FILLERS | _FUNCTION_WORDS


@dataclass(frozen=True)
class _Vocabularies:
    """Each finding's words (its description, question and phrases, as keys) weighted by how
    few findings share them (inverse document frequency)."""

    keys: dict[str, frozenset[str]]
    idf: dict[str, float]


def _vocabularies(kb: KnowledgeBase, m: _Matcher) -> _Vocabularies:
    import math

    keys: dict[str, frozenset[str]] = {}
    for f in kb.findings.values():
        text = " ".join([f.description, f.question, *f.phrases])
        cut = m.cut(text)
        keys[f.id] = frozenset(k for w, k in zip(cut.words, cut.keys)
                               if w not in _FILLERS and w not in _FUNCTION_WORDS and len(k) >= 3
                               and k[0].isalpha() and k not in _VAGUE and not k.startswith("@"))
    df: dict[str, int] = {}
    for ks in keys.values():
        for k in ks:
            df[k] = df.get(k, 0) + 1
    n = len(keys)
    return _Vocabularies(keys, {k: math.log(n / c) for k, c in df.items()})


#: A clause no phrase matched maps to the finding whose own words it shares most when they weigh
#: this much (the sum of their inverse document frequencies: two rare words, or three common
#: ones) and this many times more than the next finding's. Chosen on the paraphrase bench's
#: validation bank: recall up, false alarms not.
_RETRIEVE_MIN = 10.0
_RETRIEVE_MARGIN = 1.6


def _retrieve(clause: _Words, voc: _Vocabularies, min_score: float = _RETRIEVE_MIN,
              margin: float = _RETRIEVE_MARGIN) -> str | None:
    """The one finding whose own words (description, question, phrases) a clause shares most,
    two words at least weighed by rarity, if it stands clear of the next; None when none does."""
    present = {k for w, k in zip(clause.words, clause.keys) if w not in _FILLERS and w not in _FUNCTION_WORDS}
    scored = sorted(((sum(voc.idf[k] for k in present & ks), fid) for fid, ks in voc.keys.items()
                     if len(present & ks) >= 2), reverse=True)
    if not scored or scored[0][0] < min_score:
        return None
    if len(scored) > 1 and scored[0][0] < margin * scored[1][0]:
        return None
    return scored[0][1]


def _match_text(text: str, compiled: list[_Phrases], m: _Matcher, kb: KnowledgeBase,
                voc: _Vocabularies) -> tuple[dict[str, FindingState], list[str]]:
    """Every finding one text names (later clauses win), and its clauses that named none."""
    found: dict[str, FindingState] = signature_hits(text, kb)
    leftovers: list[str] = []
    for sentence in _sentences(text):
        # A plan or a guess in one clause says nothing, but the facts beside it still count.
        guesses = [c for c in _CLAUSE.split(sentence) if c and _IRREALIS.search(_NAMES.sub(" ", c))]
        leftovers += [c.strip() for c in guesses]
        for clause in guesses:
            sentence = sentence.replace(clause, " ")
        # "mysqld log: Disk is full ...": the label says where a line was read, not that the
        # log filled the disk.
        sentence = _SOURCE_LABEL.sub(" ", sentence)
        if not sentence.strip(" ,;"):
            continue
        sentence_hits = _match_words(m.cut(sentence), compiled, False, m)
        extra = [*errno_texts(sentence), *denied_connects(sentence), *http_codes(sentence),
                 *listed_verdicts(sentence), *quantities(sentence), *time_anchors(sentence)]
        for piece in extra:
            sentence_hits.update(_match_words(m.cut(piece), compiled, True, m))
        for piece in denied_troubles(sentence):
            sentence_hits.update(dict.fromkeys(_match_words(m.cut(piece), compiled, True, m), FindingState.ABSENT))
        for piece in quoted(sentence):
            hits = _match_words(m.cut(piece), compiled, True, m)
            if _denied_before(sentence, sentence.find(piece)):  # 'no "Cannot assign ..." errors'
                hits = dict.fromkeys(hits, FindingState.ABSENT)
            sentence_hits.update(hits)
        found.update(sentence_hits)
        clauses = [c.strip() for c in _CLAUSE.split(sentence) if c and c.strip()]
        for clause in clauses:
            cut = m.cut(clause)
            hits = _match_words(cut, compiled, True, m)
            if not hits and not sentence_hits:
                fid = _retrieve(cut, voc)
                if fid:
                    # The whole clause is the match: a verdict anywhere in it ("iowait is
                    # near zero") denies it.
                    negated = (_negated(list(cut.words), (0, len(cut.words) - 1), [])
                               or _says_verdict(list(cut.words)))
                    hits = {fid: FindingState.ABSENT if negated else FindingState.PRESENT}
            if not hits and not (len(clauses) == 1 and sentence_hits):
                leftovers.append(clause)
            found.update(hits)
    if len(_sentences(text)) > 1 and _TIME_COURSE.search(text.lower()):
        # A course told over several sentences ("40% RAM at launch; nine hours later 60%"):
        # its readings are judged together, and where it ended wins.
        for piece in quantities(_SENTENCE.sub(", ", text)):
            found.update(_match_words(m.cut(piece), compiled, True, m))
    return found, leftovers


def nearest(text: str, kb: KnowledgeBase, limit: int = 3) -> tuple[str, ...]:
    """The finding ids whose phrases share most words with ``text``."""
    m = _matcher(kb.lexicon)
    words = m.cut(text)
    scored = []
    for fdef in _matchable_defs(kb):
        best = max((m.score(m.cut(p), words) for p in fdef.phrases if m.cut(p).words), default=0.0)
        if best > 0:
            scored.append((-best, fdef.id))
    return tuple(fid for _s, fid in sorted(scored)[:limit])


_INDEXES: dict[int, tuple[weakref.ref[KnowledgeBase], tuple[_Matcher, list[_Phrases], _Vocabularies]]] = {}


def _index(kb: KnowledgeBase) -> tuple[_Matcher, list[_Phrases], _Vocabularies]:
    """The matcher, compiled phrases and finding vocabularies of one KB, built once per KB."""
    entry = _INDEXES.get(id(kb))
    if entry is None or entry[0]() is not kb:
        m = _matcher(kb.lexicon)
        entry = (weakref.ref(kb), (m, _compile(_matchable_defs(kb), m), _vocabularies(kb, m)))
        _INDEXES[id(kb)] = entry
    return entry[1]


def match_symptoms(texts: list[str], kb: KnowledgeBase) -> tuple[list[Finding], list[Unmatched]]:
    """Findings for everything the texts state, and the texts (or clauses) that stated nothing
    known.

    An empty list of findings means no text named a known symptom or fact; each such text is
    then in the unmatched list with its nearest findings.
    """
    if not texts:
        return [], []
    m, compiled, voc = _index(kb)
    states: dict[str, tuple[FindingState, str]] = {}
    unmatched: list[Unmatched] = []
    for text in texts:
        found, leftovers = _match_text(text, compiled, m, kb, voc)
        for fid, state in found.items():
            states[fid] = (state, text)
        if not found:
            unmatched.append(Unmatched(text, nearest(text, kb)))
        else:
            for clause in leftovers:
                if len(_content(_words(clause))) >= 3:
                    unmatched.append(Unmatched(clause, nearest(clause, kb)))
    findings = [
        Finding(fid, state, f'reported: "{text}"', {"text": text}, probe="symptom")
        for fid, (state, text) in sorted(states.items())
    ]
    return findings, unmatched
