"""Log scanner: every known failure signature in a log file, counted, dated and redacted.

Reads a log file (plain, or a ``.gz``/``.bz2``/``.xz`` rotation recognised by its magic
bytes) in fixed 1 MiB chunks and matches the signature catalogue
(``kb/data/signatures/*.yaml``) against each line. For example, a file holding::

    2024/03/02 10:41:07 [crit] 1234#0: *88 pwrite() "/var/lib/nginx/body/0000000012" failed (28: No space left on device)

gives ``FileScan.hits["enospc"]`` with ``count == 1``, ``first_ts == "2024-03-02T10:41:07"``.

How it stays fast and bounded:

* Hyperscan backend: all patterns in one block-mode database, run over whole chunks; only
  matches cost Python time. The ``re`` fallback looks for each signature's required literal
  with ``bytes.find`` first. Both backends only *propose* (line, signature) pairs; one
  confirmation step (Python ``re`` on that line) decides, so the two give identical results.
* A line is matched on its first ``LINE_CAP_BYTES``; the rest of a longer line is counted
  but not kept, so a 10 GB line with no newline uses the same memory as a short one.
* I/O errors never raise: they end up in ``FileScan.error`` with what was scanned so far.
"""

from __future__ import annotations

import bz2
import enum
import errno
import gzip
import lzma
import os
import re
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from re import _constants as sre_constants  # private, but stable since 3.11; only for literals
from re import _parser as sre_parse
from typing import Any, BinaryIO

import yaml

from prodx.redact import redact
from prodx.scanners.timestamps import parse_ts

CHUNK_BYTES = 1 << 20
LINE_CAP_BYTES = 64 << 10
EXAMPLE_CHARS = 300
_BINARY_SAMPLE_BYTES = 8192
_COMPRESSED_READ_BYTES = 256 << 10
# Bytes of a matched line kept for the example: enough context for redaction to see a
# key before its value, small enough that a hit on a huge line costs nothing.
_EXAMPLE_KEEP_BYTES = 2048

DEFAULT_SIGNATURES = Path(__file__).resolve().parent.parent / "kb" / "data" / "signatures"

_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_FINDING_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_FIELDS = {"id": str, "finding": str, "pattern": str, "description": str,
           "ignore_case": bool, "examples": list, "service": str}
_REQUIRED = ("id", "finding", "pattern", "description")


class Backend(str, enum.Enum):
    """Which regex engine proposes candidate matches."""

    HYPERSCAN = "hyperscan"
    RE = "re"


class Compression(str, enum.Enum):
    """How a log file is stored, from its magic bytes."""

    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"


_MAGIC = ((b"\x1f\x8b", Compression.GZIP), (b"BZh", Compression.BZIP2),
          (b"\xfd7zXZ\x00", Compression.XZ))


@dataclass(frozen=True)
class Signature:
    """One catalogue entry: a line pattern that supports one finding.

    Attributes:
        id: unique snake_case id.
        finding: the finding id the signature supports (``log.enospc``).
        pattern: regex in the common subset of Python ``re``, Hyperscan and POSIX ERE.
        description: one sentence for a person.
        ignore_case: match ASCII case-insensitively.
        examples: lines that must match (checked by the tests).
        source_line: line of the entry in its YAML file (for error messages).
    """

    id: str
    finding: str
    pattern: str
    description: str
    ignore_case: bool = False
    examples: tuple[str, ...] = ()
    source_line: int = 0


@dataclass
class SignatureHits:
    """How often one signature matched in one file, when, and an example.

    Attributes:
        signature: the signature id.
        finding: the finding it supports.
        count: matching lines.
        first_ts: ISO-8601 time of the first matching line that carries one, else None.
        last_ts: ISO-8601 time of the last matching line that carries one, else None.
            Both look only at the first and last matching line of each 1 MiB chunk, so a
            timestamp-less line in between is skipped over cheaply.
        first_line_no: 1-based line number of the first match (from the scan start).
        last_line_no: line number of the last match.
        example: the last matching line, redacted and clipped to ~300 characters.
    """

    signature: str
    finding: str
    count: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    first_line_no: int = 0
    last_line_no: int = 0
    example: str = ""
    _example_raw: bytes = field(default=b"", repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"signature": self.signature, "finding": self.finding, "count": self.count,
                "first_ts": self.first_ts, "last_ts": self.last_ts,
                "first_line_no": self.first_line_no, "last_line_no": self.last_line_no,
                "example": self.example}


@dataclass
class FileScan:
    """The result of scanning one file. Never raised from: problems land in ``error``.

    Attributes:
        path: the file as given.
        size_bytes: size on disk (compressed size for a rotation).
        mtime: modification time, seconds since the epoch (0 when unknown).
        compression: how the file is stored.
        offset_bytes: where the scan started (non-zero for a tail scan).
        bytes_read: bytes scanned (decompressed bytes for a rotation).
        lines: lines scanned (a last line without newline counts).
        hits: by signature id; empty means no known signature matched.
        truncated_tail: the file is non-empty and does not end in a newline (a writer died
            mid-line, typically because the disk filled).
        last_line: the last line, redacted and clipped.
        long_lines: lines longer than ``LINE_CAP_BYTES`` (matched on their head only).
        binary: NUL bytes in the first 8 KiB; not matched.
        error: "" or why the file could not be (fully) read, errno name first.
        partial: the scan stopped early (deadline), see ``partial_reason``.
        partial_reason: why the scan is partial.
    """

    path: str
    size_bytes: int = 0
    mtime: float = 0.0
    compression: Compression = Compression.NONE
    offset_bytes: int = 0
    bytes_read: int = 0
    lines: int = 0
    hits: dict[str, SignatureHits] = field(default_factory=dict)
    truncated_tail: bool = False
    last_line: str = ""
    long_lines: int = 0
    binary: bool = False
    error: str = ""
    partial: bool = False
    partial_reason: str = ""

    def sorted_hits(self) -> list[SignatureHits]:
        """Hits by count, descending, then by signature id."""
        return sorted(self.hits.values(), key=lambda h: (-h.count, h.signature))

    def to_json(self) -> dict[str, Any]:
        mtime = (datetime.fromtimestamp(self.mtime).astimezone().isoformat(timespec="seconds")
                 if self.mtime else None)
        return {"path": self.path, "size_bytes": self.size_bytes, "mtime": mtime,
                "compression": self.compression.value, "offset_bytes": self.offset_bytes,
                "bytes_read": self.bytes_read, "lines": self.lines,
                "truncated_tail": self.truncated_tail, "last_line": self.last_line,
                "long_lines": self.long_lines, "binary": self.binary, "error": self.error,
                "partial": self.partial, "partial_reason": self.partial_reason,
                "hits": [h.to_json() for h in self.sorted_hits()]}


# --- catalogue ------------------------------------------------------------------------


def load_signatures(path: str | os.PathLike[str] | None = None) -> list[Signature]:
    """Load and validate a signature catalogue.

    Args:
        path: a YAML file, or a directory of them; None means the packaged
            ``kb/data/signatures/``.

    Returns:
        The signatures in file order; an empty file gives an empty list.

    Raises:
        ValueError: a malformed entry; the message names the file, the entry index and its
            line, and the field.
    """
    path = Path(path) if path is not None else DEFAULT_SIGNATURES
    if path.is_dir():
        return [sig for file in sorted(path.glob("*.yaml")) for sig in load_signatures(file)]
    text = path.read_text(encoding="utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)
        root = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return []
    if not isinstance(data, list) or root is None:
        raise ValueError(f"{path}: the catalogue must be a YAML list of signatures")
    sigs: list[Signature] = []
    seen: set[str] = set()
    for index, (entry, node) in enumerate(zip(data, root.value)):
        line = node.start_mark.line + 1

        def fail(field_name: str, message: str, _i: int = index, _l: int = line) -> ValueError:
            return ValueError(f"{path}:{_l}: entry {_i}: {field_name}: {message}")

        if not isinstance(entry, dict):
            raise fail("(entry)", "must be a mapping")
        for key, value in entry.items():
            if key not in _FIELDS:
                raise fail(str(key), "unknown field")
            if not isinstance(value, _FIELDS[key]):
                raise fail(key, f"must be {_FIELDS[key].__name__}")
        for key in _REQUIRED:
            if not entry.get(key):
                raise fail(key, "missing")
        if not _ID_RE.match(entry["id"]):
            raise fail("id", f"{entry['id']!r} is not snake_case")
        if entry["id"] in seen:
            raise fail("id", f"duplicate id {entry['id']!r}")
        seen.add(entry["id"])
        if not _FINDING_RE.match(entry["finding"]):
            raise fail("finding", f"{entry['finding']!r} is not a dotted finding id")
        examples = entry.get("examples", [])
        if not all(isinstance(e, str) for e in examples):
            raise fail("examples", "must be a list of strings")
        problem = pattern_problem(entry["pattern"])
        if problem:
            raise fail("pattern", problem)
        sigs.append(Signature(entry["id"], entry["finding"], entry["pattern"],
                              entry["description"], bool(entry.get("ignore_case", False)),
                              tuple(examples), line))
    return sigs


# --- required literals (prefilter for the re backend) ----------------------------------


def _score(alternatives: list[bytes]) -> tuple[int, int]:
    return (min(len(a) for a in alternatives), -len(alternatives))


def _required_literals(items: Iterable[tuple[Any, Any]]) -> list[bytes] | None:
    """Literals one of which every match of this parsed sequence must contain."""
    best: list[bytes] | None = None
    run: list[str] = []

    def consider(alts: list[bytes] | None) -> None:
        nonlocal best
        if alts and all(alts) and (best is None or _score(alts) > _score(best)):
            best = alts

    for op, av in items:
        if op is sre_constants.LITERAL:
            run.append(chr(av))
            continue
        if run:
            consider(["".join(run).encode()])
            run = []
        if op is sre_constants.SUBPATTERN:
            consider(_required_literals(av[-1]))
        elif op is sre_constants.BRANCH:
            alts = [_required_literals(branch) for branch in av[1]]
            if all(alts):
                consider([lit for alt in alts for lit in alt])  # type: ignore[union-attr]
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and av[0] >= 1:
            consider(_required_literals(av[2]))
    if run:
        consider(["".join(run).encode()])
    return best


def pattern_problem(pattern: str) -> str:
    """What makes ``pattern`` unfit as a signature ("" when nothing): it does not compile as
    the scanner compiles it, or it nests unbounded repeats (``nested_repeat``).

    >>> pattern_problem("No space left"), pattern_problem("(a+)+b")[:34], pattern_problem("(x")[:17]
    ('', 'nests an unbounded repetition insi', 'not a valid regex')
    """
    try:
        re.compile(pattern.encode())
    except re.error as exc:
        return f"not a valid regex: {exc}"
    if nested_repeat(pattern):
        return ("nests an unbounded repetition inside another ((a+)+): it can take exponential time on one line; "
                "write it without the nesting")
    return ""


def nested_repeat(pattern: str) -> bool:
    """Whether ``pattern`` repeats, without bound, something that itself repeats without bound
    (``(a+)+``, ``(\\w+\\s?)*``): Python's ``re`` can take exponential time on one line, and it
    holds the GIL, so no deadline stops it.

    >>> nested_repeat(r"(a+)+b"), nested_repeat(r"(?:\\w+\\s?)*$"), nested_repeat(r"foo.*bar(\\d+)")
    (True, True, False)
    """

    def walk(items: Any, inside: bool) -> bool:
        for op, av in items:
            if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
                _lo, hi, sub = av
                unbounded = hi == sre_constants.MAXREPEAT or hi > 100
                if (inside and unbounded) or walk(sub, inside or unbounded):
                    return True
            elif op == sre_constants.SUBPATTERN and walk(av[-1], inside):
                return True
            elif op == sre_constants.BRANCH and any(walk(branch, inside) for branch in av[1]):
                return True
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT) and walk(av[1], inside):
                return True
        return False

    return walk(sre_parse.parse(pattern), False)


def required_literals(sig: Signature) -> list[bytes]:
    """Literals one of which every line matching ``sig`` contains (lowercased when
    ``ignore_case``); empty when none can be derived (then every line is a candidate)."""
    lits = _required_literals(sre_parse.parse(sig.pattern)) or []
    return [lit.lower() for lit in lits] if sig.ignore_case else lits


# --- matcher --------------------------------------------------------------------------


def _hyperscan_module() -> Any:
    try:
        import hyperscan
    except ImportError:
        return None
    return hyperscan


def engine_name() -> str:
    """Which engine ``prodx logs`` and the log probes use here, for people to read."""
    hs = _hyperscan_module()
    if hs is None:
        return "re (Python's own regex; install hyperscan for the fast path)"
    return f"hyperscan {getattr(hs, '__version__', '')}".strip()


class Matcher:
    """The compiled catalogue: proposes candidate lines, confirms them with ``re``.

    Args:
        signatures: the catalogue, usually ``load_signatures()``.
        backend: force ``Backend.RE`` or ``Backend.HYPERSCAN``; None picks Hyperscan when
            importable.

    Raises:
        ValueError: a pattern Hyperscan cannot compile (names the signature).
    """

    def __init__(self, signatures: Sequence[Signature], backend: Backend | str | None = None):
        self.signatures: tuple[Signature, ...] = tuple(signatures)
        hs = _hyperscan_module()
        if backend is None:
            backend = Backend.HYPERSCAN if hs is not None else Backend.RE
        self.backend = Backend(backend)
        if self.backend is Backend.HYPERSCAN and hs is None:
            raise ValueError("backend 'hyperscan' requested but the hyperscan module is missing")
        self._regexes = [re.compile(s.pattern.encode(), re.IGNORECASE if s.ignore_case else 0)
                         for s in self.signatures]
        self._literals = [required_literals(s) for s in self.signatures]
        self._any_ignore_case = any(s.ignore_case for s in self.signatures)
        self._db = None
        # Hazard: a Hyperscan scratch serves one scan at a time (ScratchInUseError), and
        # probes share one Matcher across threads: each thread gets its own scratch.
        self._scratch = threading.local()
        if self.backend is Backend.HYPERSCAN and self.signatures:
            self._db = self._compile_hyperscan(hs)

    def _compile_hyperscan(self, hs: Any) -> Any:
        db = hs.Database(mode=hs.HS_MODE_BLOCK)
        flags = [hs.HS_FLAG_CASELESS if s.ignore_case else 0 for s in self.signatures]
        try:
            db.compile(expressions=[s.pattern.encode() for s in self.signatures],
                       ids=list(range(len(self.signatures))), elements=len(self.signatures),
                       flags=flags)
        except hs.error as exc:
            # Hyperscan names only the expression index; find the culprit for the message.
            for s, f in zip(self.signatures, flags):
                try:
                    hs.Database(mode=hs.HS_MODE_BLOCK).compile(expressions=[s.pattern.encode()],
                                                               flags=[f])
                except hs.error as one:
                    raise ValueError(f"signature {s.id!r}: hyperscan rejects pattern: {one}") from exc
            raise ValueError(f"hyperscan rejects the catalogue: {exc}") from exc
        return db

    def _candidates_hyperscan(self, buf: bytearray, start: int, end: int) -> set[tuple[int, int]]:
        ends: list[tuple[int, int]] = []
        append = ends.append

        def on_match(sig_index: int, _from: int, to: int, _flags: int, _ctx: Any) -> None:
            append((to, sig_index))

        scratch = getattr(self._scratch, "value", None)
        if scratch is None:
            scratch = self._scratch.value = _hyperscan_module().Scratch(self._db)
        self._db.scan(memoryview(buf)[start:end], match_event_handler=on_match, scratch=scratch)
        found: set[tuple[int, int]] = set()
        rfind = buf.rfind
        for to, sig_index in ends:
            last = start + to - 1 if to else start
            found.add((rfind(b"\n", start, last) + 1 or start, sig_index))
        return found

    def _candidates_re(self, buf: bytearray, start: int, end: int) -> set[tuple[int, int]]:
        found: set[tuple[int, int]] = set()
        lowered: bytes | None = None
        for sig_index, (sig, lits) in enumerate(zip(self.signatures, self._literals)):
            if not lits:
                pos = start
                while pos < end:
                    found.add((pos, sig_index))
                    nl = buf.find(b"\n", pos, end)
                    pos = end if nl < 0 else nl + 1
                continue
            if sig.ignore_case:
                if lowered is None:
                    lowered = bytes(buf[start:end]).lower()
                hay, base = lowered, start
            else:
                hay, base = buf, 0
            for lit in lits:
                pos = hay.find(lit, start - base, end - base)
                while pos >= 0:
                    abs_pos = pos + base
                    line_start = buf.rfind(b"\n", start, abs_pos) + 1 or start
                    found.add((line_start, sig_index))
                    nl = buf.find(b"\n", abs_pos, end)
                    if nl < 0:
                        break
                    pos = hay.find(lit, nl + 1 - base, end - base)
        return found

    def match_lines(self, buf: bytearray, start: int, end: int) -> list[tuple[int, int, int]]:
        """Confirmed matches in ``buf[start:end]``, a run of whole lines.

        Args:
            buf: the buffer.
            start: offset of the first line.
            end: offset just past the last line (its newline, or the data end).

        Returns:
            ``(line_start, line_end, signature_index)`` sorted by offset then signature;
            ``line_end`` excludes the newline. Empty when nothing matches.
        """
        if end <= start or not self.signatures:
            return []
        if self.backend is Backend.HYPERSCAN:
            candidates = self._candidates_hyperscan(buf, start, end)
        else:
            candidates = self._candidates_re(buf, start, end)
        confirmed = []
        regexes = self._regexes
        for line_start, sig_index in sorted(candidates):
            line_end = buf.find(b"\n", line_start, end)
            if line_end < 0:
                line_end = end
            if regexes[sig_index].search(buf, line_start,
                                         min(line_end, line_start + LINE_CAP_BYTES)):
                confirmed.append((line_start, line_end, sig_index))
        return confirmed


# --- scanning -------------------------------------------------------------------------


def _errno_reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "EIO" if exc.errno else "")
    text = exc.strerror or str(exc)
    if exc.errno == errno.ENOENT:
        return f"ENOENT: vanished ({text})"
    return f"{name}: {text}" if name else text


def _compression(magic: bytes) -> Compression:
    for prefix, kind in _MAGIC:
        if magic.startswith(prefix):
            return kind
    return Compression.NONE


def _clip_text(raw: bytes) -> str:
    text = raw[:_EXAMPLE_KEEP_BYTES].decode("utf-8", errors="replace").rstrip("\r")
    text = redact(text)
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS - 1] + "…"


class _Scan:
    """One pass over one stream: chunking, the line cap, line numbers and hit records."""

    def __init__(self, fs: FileScan, matcher: Matcher, t_end: float | None,
                 progress: Callable[[int], None] | None) -> None:
        self.fs, self.matcher, self.t_end, self.progress = fs, matcher, t_end, progress
        when = datetime.fromtimestamp(fs.mtime) if fs.mtime else datetime.now()
        self.year_hint, self.month_hint = when.year, when.month
        self.last_line_raw = b""

    def _record(self, buf: bytearray, matches: list[tuple[int, int, int]], start: int,
                line_no: int) -> None:
        """Fold confirmed matches into hits; ``line_no`` counts lines before ``start``.

        A log full of one error has a hit on every line, so per hit this only counts;
        timestamps are parsed and the example copied once per signature per segment
        (its first and last matching line there).
        """
        sigs, hits = self.matcher.signatures, self.fs.hits
        pos = start
        last_in_segment: dict[int, tuple[int, int]] = {}
        for line_start, line_end, sig_index in matches:
            line_no += buf.count(b"\n", pos, line_start)
            pos = line_start
            h = hits.get(sigs[sig_index].id)
            if h is None:
                sig = sigs[sig_index]
                h = hits[sig.id] = SignatureHits(sig.id, sig.finding, first_line_no=line_no + 1)
            if sig_index not in last_in_segment and h.first_ts is None:
                h.first_ts = self._ts(buf, line_start, line_end)
            h.count += 1
            h.last_line_no = line_no + 1
            last_in_segment[sig_index] = (line_start, line_end)
        for sig_index, (line_start, line_end) in last_in_segment.items():
            h = hits[sigs[sig_index].id]
            h._example_raw = bytes(buf[line_start:min(line_end, line_start + _EXAMPLE_KEEP_BYTES)])
            ts = parse_ts(h._example_raw, year_hint=self.year_hint, month_hint=self.month_hint)
            if ts is not None:
                h.last_ts = ts

    def _ts(self, buf: bytearray, line_start: int, line_end: int) -> str | None:
        head = bytes(buf[line_start:min(line_end, line_start + 128)])
        return parse_ts(head, year_hint=self.year_hint, month_hint=self.month_hint)

    def _segment(self, buf: bytearray, start: int, end: int, line_no: int) -> None:
        self._record(buf, self.matcher.match_lines(buf, start, end), start, line_no)
        last_end = end - 1 if buf[end - 1] == 0x0A else end
        last_start = buf.rfind(b"\n", start, last_end) + 1 or start
        self.last_line_raw = bytes(buf[last_start:min(last_end, last_start + _EXAMPLE_KEEP_BYTES)])

    def run(self, stream: BinaryIO, *, max_bytes: int | None, skip_first_line: bool,
            read_bytes: int | None = None) -> None:
        """Scan ``stream`` to EOF (or ``max_bytes``); I/O errors propagate to the caller.

        ``read_bytes`` (at most, and by default, ``CHUNK_BYTES``) is the size of one read.
        """
        read_bytes = min(read_bytes or CHUNK_BYTES, CHUNK_BYTES)
        fs, cap = self.fs, LINE_CAP_BYTES
        buf = bytearray(cap + CHUNK_BYTES)
        view = memoryview(buf)
        carry = 0                       # an incomplete line waits at buf[0:carry]
        skipping = skip_first_line      # dropping the rest of a line up to its newline
        count_skipped = not skip_first_line
        line_no = 0                     # complete lines before the current segment
        remaining = max_bytes
        last_byte = -1
        first = True
        while remaining is None or remaining > 0:
            want = read_bytes if remaining is None else min(read_bytes, remaining)
            got = stream.readinto(view[carry:carry + want])
            if not got:
                break
            fs.bytes_read += got
            if remaining is not None:
                remaining -= got
            n = carry + got
            last_byte = buf[n - 1]
            if first:
                first = False
                if buf.find(b"\x00", carry, carry + min(got, _BINARY_SAMPLE_BYTES)) >= 0:
                    fs.binary = True
                    return
            start = 0
            if skipping:
                nl = buf.find(b"\n", 0, n)
                if nl < 0:
                    carry = 0
                    if self._out_of_time():
                        return
                    continue
                start, skipping = nl + 1, False
                if count_skipped:
                    line_no += 1
                count_skipped = True
            end = buf.rfind(b"\n", start, n) + 1
            if end > start:
                self._segment(buf, start, end, line_no)
                line_no += buf.count(b"\n", start, end)
            else:
                end = start
            tail = n - end
            if tail > cap:
                # A line longer than the cap: match its head now, drop the rest.
                self._segment(buf, end, end + cap, line_no)
                fs.long_lines += 1
                skipping, carry = True, 0
            else:
                if end:
                    buf[0:tail] = buf[end:n]
                carry = tail
            if self._out_of_time():
                return
        if carry:
            self._segment(buf, 0, carry, line_no)
            line_no += 1
        elif skipping and count_skipped and last_byte != 0x0A and last_byte >= 0:
            line_no += 1
        fs.lines = line_no
        fs.truncated_tail = last_byte not in (-1, 0x0A)

    def _out_of_time(self) -> bool:
        if self.progress is not None:
            self.progress(self.fs.bytes_read)
        if self.t_end is not None and time.monotonic() > self.t_end:
            self.fs.partial = True
            self.fs.partial_reason = f"deadline reached after {self.fs.bytes_read} bytes"
            return True
        return False

    def finish(self) -> None:
        for h in self.fs.hits.values():
            h.example = _clip_text(h._example_raw)
        if self.last_line_raw:
            self.fs.last_line = _clip_text(self.last_line_raw)


def _open_stream(raw: BinaryIO, kind: Compression) -> BinaryIO:
    if kind is Compression.GZIP:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind is Compression.BZIP2:
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    if kind is Compression.XZ:
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[return-value]
    return raw


def _scan(path: str | os.PathLike[str], matcher: Matcher, *, deadline_s: float | None,
          tail_bytes: int | None, progress: Callable[[int], None] | None) -> FileScan:
    t_end = time.monotonic() + deadline_s if deadline_s is not None else None
    fs = FileScan(path=os.fspath(path))
    try:
        # O_NONBLOCK: opening a FIFO named like a log must not hang the scan.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        fs.error = _errno_reason(exc)
        return fs
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        fs.error = _errno_reason(exc)
        return fs
    fs.size_bytes, fs.mtime = st.st_size, st.st_mtime
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        fs.error = "EISDIR: is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        return fs
    with open(fd, "rb", buffering=0, closefd=True) as raw:
        scan = _Scan(fs, matcher, t_end, progress)
        try:
            fs.compression = _compression(os.pread(fd, 6, 0))
            if tail_bytes is not None:
                if fs.compression is not Compression.NONE:
                    fs.partial = True
                    fs.partial_reason = "compressed rotation: a tail scan does not read it"
                    return fs
                fs.offset_bytes = max(0, st.st_size - tail_bytes)
                skip_first = fs.offset_bytes > 0 and os.pread(fd, 1, fs.offset_bytes - 1) != b"\n"
                os.lseek(fd, fs.offset_bytes, os.SEEK_SET)
                scan.run(raw, max_bytes=st.st_size - fs.offset_bytes, skip_first_line=skip_first)
            else:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                # A decompressor that hits a corrupt or cut-off stream raises and loses what
                # it decoded in that read call: smaller reads keep more of a damaged rotation.
                read_bytes = None if fs.compression is Compression.NONE else _COMPRESSED_READ_BYTES
                with _open_stream(raw, fs.compression) as stream:
                    scan.run(stream, max_bytes=None, skip_first_line=False, read_bytes=read_bytes)
        except OSError as exc:
            if exc.errno is None:   # gzip.BadGzipFile and bz2 "Invalid data stream"
                fs.error = f"corrupt {fs.compression.value} data: {exc}"
            else:
                fs.error = _errno_reason(exc)
        except (EOFError, lzma.LZMAError, zlib.error) as exc:
            fs.error = f"corrupt {fs.compression.value} data: {exc}"
        finally:
            scan.finish()
    return fs


def scan_file(path: str | os.PathLike[str], matcher: Matcher, *, deadline_s: float | None = None,
              progress: Callable[[int], None] | None = None) -> FileScan:
    """Scan a whole file, decompressing a ``.gz``/``.bz2``/``.xz`` rotation on the fly.

    Args:
        path: the log file.
        matcher: the compiled catalogue.
        deadline_s: time budget in seconds; when spent, the result is ``partial``.
        progress: called with bytes read so far after every chunk.

    Returns:
        The scan; ``hits`` empty means no known signature matched. Errors (EACCES, vanished,
        corrupt archive) are in ``error``, never raised.
    """
    return _scan(path, matcher, deadline_s=deadline_s, tail_bytes=None, progress=progress)


def scan_tail(path: str | os.PathLike[str], matcher: Matcher, *,
              tail_bytes: int = 1 << 20) -> FileScan:
    """Scan only the last ``tail_bytes`` of a file (never reads the rest).

    The partial first line of the tail is skipped; line numbers count from the tail start
    (``offset_bytes``). A compressed rotation is not read and comes back ``partial``.

    Returns:
        The scan, as for ``scan_file``.
    """
    return _scan(path, matcher, deadline_s=None, tail_bytes=tail_bytes, progress=None)


def scan_paths(paths: Sequence[str | os.PathLike[str]], matcher: Matcher, *,
               deadline_s: float | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> list[FileScan]:
    """Scan several whole files sharing one time budget.

    Args:
        paths: log files, scanned in the given order.
        matcher: the compiled catalogue.
        deadline_s: total budget; files reached after it is spent come back ``partial``
            with nothing read.
        progress: called as ``(path, bytes_read, size_bytes)`` after every chunk.

    Returns:
        One ``FileScan`` per path, in order.
    """
    t_end = time.monotonic() + deadline_s if deadline_s is not None else None
    scans = []
    for path in paths:
        left = None if t_end is None else t_end - time.monotonic()
        if left is not None and left <= 0:
            scans.append(FileScan(path=os.fspath(path), partial=True,
                                  partial_reason="deadline reached before this file"))
            continue
        report = None
        if progress is not None:
            size = _size_or_zero(path)
            report = (lambda done, _p=os.fspath(path), _s=size: progress(_p, done, _s))
        scans.append(scan_file(path, matcher, deadline_s=left, progress=report))
    return scans


def _size_or_zero(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
