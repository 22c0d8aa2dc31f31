"""Loads the knowledge base: findings, log signatures and conditions, validated by schema.

Reads ``data/findings/*.yaml`` (or one ``findings.yaml``), ``data/signatures/*.yaml`` (or one
``signatures.yaml``), ``hogs.yaml``, ``locations.yaml``, ``lexicon.yaml`` (the operators'
words), ``groups.yaml`` (evidence groups), ``follow.yaml`` (what the second pass follows) and
``data/conditions/*.yaml`` from the package, then the same layout from each ``--kb DIR`` (a
site's condition or group replaces a shipped one of the same id; a site's new group may not
take a finding another group holds), and last the package's ``reports.yaml`` (how incidents
are told, blended into P(symptom | condition)). Any error names the file, the line and the
field.
"""

from __future__ import annotations

import json
import math
import re
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from prodx.engine.words import Lexicon, stem

if TYPE_CHECKING:
    from prodx.engine.alike import AlikeModel

DATA_DIR = Path(__file__).parent / "data"
SCHEMA_DIR = Path(__file__).parent / "schema"
#: P(finding | anything) of a finding the catalogue lacks (a site KB naming an unknown id).
_UNKNOWN_LEAK = 0.01
#: A blended P(symptom | condition) stays below certainty: one person's silence is no proof.
_MAX_TOLD = 0.99


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML that refuses a key given twice in one mapping: YAML keeps the last silently,
    so a second ``negations:`` of a finding would drop the first one's phrases."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


class KBError(ValueError):
    """A knowledge-base file is malformed; the message names file, line and field."""

    def __init__(self, path: Path | str, line: int | None, field_path: str, message: str) -> None:
        self.path, self.line, self.field_path = str(path), line, field_path
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {field_path or '(top)'}: {message}")


@dataclass(frozen=True)
class FindingDef:
    """One entry of the finding catalogue."""

    id: str
    description: str
    observed_by: str
    cost: float
    leak: float
    probe: str = ""
    question: str = ""
    phrases: tuple[str, ...] = ()
    negations: tuple[str, ...] = ()
    #: P(finding | a known condition that does not list it), when it is below the leak: a
    #: finding that points outside the catalogue (a hardware fault, an intrusion) is what
    #: "none of the known conditions" explains best. None: the leak, as for chance.
    unlisted: float | None = None

    @property
    def is_symptom(self) -> bool:
        return self.id.startswith("symptom.")

    @property
    def unlisted_p(self) -> float:
        """What a condition that does not list this finding gives it."""
        return self.leak if self.unlisted is None else self.unlisted


@dataclass(frozen=True)
class RemedyStep:
    step: str
    risk: str
    command: str = ""


@dataclass(frozen=True)
class Test:
    finding: str
    how: str


@dataclass(frozen=True)
class ConditionDef:
    """One condition: what it is, what it produces, how to tell it, how to treat it."""

    id: str
    name: str
    summary: str
    prior: float
    findings: dict[str, float]
    explains: dict[str, str]
    confirm: tuple[Test, ...]
    rule_out: tuple[Test, ...]
    remedy: tuple[RemedyStep, ...]
    avoid: tuple[str, ...]
    references: tuple[str, ...] = ()
    refines: str = ""
    source: str = ""


@dataclass(frozen=True)
class GroupMember:
    """One way of seeing a group's event: P(finding | event)."""

    finding: str
    sensitivity: float


@dataclass(frozen=True)
class EvidenceGroup:
    """Findings that are one event or one fact seen several ways (``groups.yaml``)."""

    id: str
    event: str
    #: P(event | none of the known conditions): the group's own leak.
    chance: float
    members: tuple[GroupMember, ...]
    source: str = ""

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(m.finding for m in self.members)


@dataclass
class KnowledgeBase:
    findings: dict[str, FindingDef] = field(default_factory=dict)
    conditions: dict[str, ConditionDef] = field(default_factory=dict)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    hogs: list[dict[str, Any]] = field(default_factory=list)
    #: What the second pass follows (``follow.yaml``): ``rules`` and ``ports``.
    follow: dict[str, Any] = field(default_factory=lambda: {"rules": [], "ports": {}})
    locations: dict[str, list[str]] = field(default_factory=lambda: {"service_logs": [], "system_logs": [], "kernel_logs": []})
    sources: list[str] = field(default_factory=list)
    #: The operators' words that mean one thing (symptom understanding).
    lexicon: Lexicon = field(default_factory=Lexicon)
    groups: dict[str, EvidenceGroup] = field(default_factory=dict)
    #: finding id → the id of the evidence group that holds it.
    group_of: dict[str, str] = field(default_factory=dict)
    #: How incidents are told (``reports.yaml``): (condition id, symptom finding id) →
    #: P(symptom | condition) with the incidents' counts blended in. Empty: the files' values.
    told: dict[tuple[str, str], float] = field(default_factory=dict)
    #: What incidents read like (``alike.json``, prodx.engine.alike); None: not learned.
    alike: AlikeModel | None = None

    def likelihood(self, cond: ConditionDef | None, fid: str) -> float:
        """P(finding | condition): for a symptom, the value blended with how incidents of the
        condition were told, when they were counted; else the condition's listed value, else
        the finding's ``unlisted_p``; for None ("none of the known conditions") the finding's
        leak, always as written (the evidence groups' chance rates are set against it). A
        finding the catalogue lacks counts at 0.01."""
        told = self.told.get((cond.id, fid)) if cond is not None else None
        return told if told is not None else self.written_likelihood(cond, fid)

    def written_likelihood(self, cond: ConditionDef | None, fid: str) -> float:
        """P(finding | condition) as the KB's files give it, before any blend with counts."""
        if cond is not None and fid in cond.findings:
            return cond.findings[fid]
        fdef = self.findings.get(fid)
        if fdef is None:
            return _UNKNOWN_LEAK
        return fdef.leak if cond is None else fdef.unlisted_p

    def chain(self, condition_id: str) -> list[str]:
        """The refinement chain from ``condition_id`` up to its most general ancestor."""
        out = [condition_id]
        while (parent := self.conditions[out[-1]].refines) and parent not in out:
            out.append(parent)
        return out


@lru_cache(maxsize=None)
def _validator(name: str) -> Any:
    import jsonschema  # slow import (~70 ms): only when a KB is loaded

    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def _line_of(text: str, path_parts: list[Any]) -> int | None:
    """The 1-based line of the YAML node at ``path_parts`` (the deepest one that exists)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in path_parts:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == part]
            key_node = [k for k, _v in node.value if k.value == part]
            if not match:
                break
            line, node = key_node[0].start_mark.line + 1, match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _field_path(parts: list[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


#: The largest KB file read (the shipped ones are under 100 KB).
MAX_KB_FILE_BYTES = 8 << 20


def load_yaml(path: Path, schema: str) -> Any:
    """Parse and validate one KB file (a regular file of at most MAX_KB_FILE_BYTES: a FIFO
    would block the read); raise KBError naming file, line and field."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise KBError(path, None, "", "not a regular file: a KB file is YAML")
        if info.st_size > MAX_KB_FILE_BYTES:
            raise KBError(path, None, "", f"{info.st_size:,} bytes: a KB file is at most {MAX_KB_FILE_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KBError(path, None, "", f"cannot read: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        # The construct that is left open (context) is where a person must look; the
        # problem mark is often the end of the file.
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        raise KBError(path, mark.line + 1 if mark else None, "", f"invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    problem = _data_problem(data)
    if problem is not None:
        # JSON Schema bounds do not hold NaN (every comparison with it is false).
        raise KBError(path, _line_of(text, problem[0]), _field_path(problem[0]), problem[1])
    errors = sorted(_validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        parts = list(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            parts, message = parts + extra[:1], f"unknown field (allowed: {', '.join(sorted(err.schema.get('properties', {})))})"
        elif err.validator == "required":
            message = err.message
        else:
            message = err.message
        raise KBError(path, _line_of(text, parts), _field_path(parts), message)
    return data


def _data_problem(data: Any) -> tuple[list[Any], str] | None:
    """(path, problem) of the first value in parsed YAML that a KB file must not hold, or
    None: a NaN or infinity, or a list or table reached twice (a YAML alias: an "alias bomb"
    of nested aliases is small to parse and exponential to walk). Walks each value once."""
    seen: set[int] = set()
    stack: list[tuple[Any, list[Any]]] = [(data, [])]
    while stack:
        value, at = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return at, "not a finite number (.nan and .inf are not allowed)"
        if isinstance(value, dict | list):
            if id(value) in seen:
                return at, "a YAML alias (*name) of a list or table: KB files may not use anchors and aliases"
            seen.add(id(value))
            items = list(value.items() if isinstance(value, dict) else enumerate(value))
            stack += [(v, [*at, k]) for k, v in reversed(items)]
    return None


def _check_references(kb: KnowledgeBase) -> None:
    """What one file names in another: a condition's ``refines`` names another condition and
    makes no cycle, its ``explains``, ``confirm`` and ``rule_out`` name findings the KB has.
    Checked once every directory is loaded (a site's condition may use a site's finding)."""
    for cond in kb.conditions.values():
        path = Path(cond.source)

        def error(key: str, message: str, path: Path = path) -> KBError:
            return KBError(path, _line_of(path.read_text(encoding="utf-8"), [key]), key, message)

        named = [("explains", fid) for fid in cond.explains]
        named += [(kind, t.finding) for kind in ("confirm", "rule_out") for t in getattr(cond, kind)]
        for kind, fid in named:
            if fid not in kb.findings:
                raise error(kind, f"names no finding of the KB: {fid!r}")
        seen = [cond.id]
        parent = cond.refines
        while parent:
            if parent not in kb.conditions:
                raise error("refines", f"names no condition of the KB: {parent!r}")
            if parent in seen:
                raise error("refines", f"refinement cycle: {' -> '.join([*seen, parent])}")
            seen.append(parent)
            parent = kb.conditions[parent].refines


def _check_signatures(path: Path, signatures: list[dict[str, Any]]) -> None:
    """Every signature's pattern compiles (as the log scanner compiles it) and nests no
    unbounded repetition (exponential on one line, with no deadline able to stop it)."""
    from prodx.scanners.logscan import pattern_problem

    for i, sig in enumerate(signatures):
        problem = pattern_problem(sig["pattern"])
        if problem:
            raise KBError(path, _line_of(path.read_text(encoding="utf-8"), [i, "pattern"]), f"[{i}].pattern", problem)


def _finding_def(entry: dict[str, Any]) -> FindingDef:
    return FindingDef(
        id=entry["id"],
        description=entry["description"],
        observed_by=entry["observed_by"],
        cost=float(entry["cost"]),
        leak=float(entry["leak"]),
        probe=entry.get("probe", ""),
        question=entry.get("question", ""),
        phrases=tuple(entry.get("phrases", ())),
        negations=tuple(entry.get("negations", ())),
        unlisted=float(entry["unlisted"]) if "unlisted" in entry else None,
    )


def _condition_def(entry: dict[str, Any], source: Path) -> ConditionDef:
    return ConditionDef(
        id=entry["id"],
        name=entry["name"],
        summary=" ".join(entry["summary"].split()),
        prior=float(entry["prior"]),
        findings={k: float(v) for k, v in entry["findings"].items()},
        explains={k: " ".join(v.split()) for k, v in entry["explains"].items()},
        confirm=tuple(Test(**t) for t in entry["confirm"]),
        rule_out=tuple(Test(**t) for t in entry["rule_out"]),
        remedy=tuple(RemedyStep(**r) for r in entry["remedy"]),
        avoid=tuple(entry["avoid"]),
        references=tuple(entry.get("references", ())),
        refines=entry.get("refines", ""),
        source=str(source),
    )


def _lexicon(path: Path, before: Lexicon) -> Lexicon:
    """One lexicon file, checked: every term compiles, no word sits in two synonym groups."""
    data = load_yaml(path, "lexicon") or {}
    text = path.read_text(encoding="utf-8")
    for pattern in data.get("terms", {}):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise KBError(path, _line_of(text, ["terms", pattern]), f"terms.{pattern}", f"not a valid regex: {exc}") from exc
    owner = {stem(w): (-1, g[0]) for g in before.synonyms for w in g}
    for i, group in enumerate(data.get("synonyms", [])):
        for word in group:
            seen = owner.setdefault(stem(word), (i, group[0]))
            if seen[1] != group[0]:
                raise KBError(path, _line_of(text, ["synonyms", i]), f"synonyms[{i}]",
                              f"{word!r} is already a synonym of {seen[1]!r}: a word can mean one thing only")
    return Lexicon.from_data(data.get("terms", {}), data.get("synonyms", []), data.get("classes", {}))
def _load_groups(kb: KnowledgeBase, path: Path) -> None:
    """Add the groups of one ``groups.yaml``; a group of a known id replaces the earlier one."""
    text = path.read_text(encoding="utf-8")
    seen_here: set[str] = set()
    for i, entry in enumerate(load_yaml(path, "groups")):
        gid = entry["id"]
        if gid in seen_here:
            raise KBError(path, _line_of(text, [i, "id"]), f"[{i}].id", f"duplicate group id {gid}")
        seen_here.add(gid)
        if gid in kb.groups:
            for fid in kb.groups[gid].findings:
                kb.group_of.pop(fid, None)
        members = []
        for j, m in enumerate(entry["members"]):
            fid, where = m["finding"], [i, "members", j]
            if kb.group_of.get(fid, gid) != gid or fid in [x.finding for x in members]:
                other = kb.group_of.get(fid, gid)
                raise KBError(path, _line_of(text, [*where, "finding"]), f"[{i}].members[{j}].finding",
                              f"{fid} is already in group {other}: a finding belongs to one group at most")
            members.append(GroupMember(fid, float(m["sensitivity"])))
            kb.group_of[fid] = gid
        kb.groups[gid] = EvidenceGroup(gid, " ".join(entry["event"].split()), float(entry["chance"]), tuple(members), str(path))


def _data_files(directory: Path, name: str) -> list[Path]:
    """``NAME.yaml`` and every ``NAME/*.yaml`` in ``directory``, in name order."""
    single = directory / f"{name}.yaml"
    return ([single] if single.exists() else []) + sorted((directory / name).glob("*.yaml"))


def _load_dir(kb: KnowledgeBase, directory: Path, *, shipped: bool) -> None:
    kb.sources.append(str(directory))
    for findings_file in _data_files(directory, "findings"):
        for i, entry in enumerate(load_yaml(findings_file, "findings")):
            if entry["id"] in kb.findings and shipped:
                raise KBError(findings_file, _line_of(findings_file.read_text(), [i]), f"[{i}].id", f"duplicate finding id {entry['id']}")
            kb.findings[entry["id"]] = _finding_def(entry)
    for signatures_file in _data_files(directory, "signatures"):
        signatures = load_yaml(signatures_file, "signatures")
        _check_signatures(signatures_file, signatures)
        kb.signatures.extend(signatures)
    locations_file = directory / "locations.yaml"
    if locations_file.exists():
        for key, paths in load_yaml(locations_file, "locations").items():
            kb.locations[key] += [p for p in paths if p not in kb.locations[key]]
    lexicon_file = directory / "lexicon.yaml"
    if lexicon_file.exists():
        kb.lexicon = kb.lexicon.merged(_lexicon(lexicon_file, kb.lexicon))
    follow_file = directory / "follow.yaml"
    if follow_file.exists():
        follow = load_yaml(follow_file, "follow")
        kb.follow["rules"] += follow.get("rules", [])
        kb.follow["ports"].update({int(k): v for k, v in follow.get("ports", {}).items()})
    hogs_file = directory / "hogs.yaml"
    if hogs_file.exists():
        kb.hogs.extend(load_yaml(hogs_file, "hogs"))
    groups_file = directory / "groups.yaml"
    if groups_file.exists():
        _load_groups(kb, groups_file)
    seen_here: set[str] = set()
    for path in sorted((directory / "conditions").glob("*.yaml")):
        entry = load_yaml(path, "condition")
        if entry["id"] in seen_here:
            raise KBError(path, 1, "id", f"duplicate condition id {entry['id']}")
        if path.stem != entry["id"]:
            raise KBError(path, _line_of(path.read_text(), ["id"]), "id", f"id {entry['id']!r} does not match the file name {path.name!r}")
        seen_here.add(entry["id"])
        kb.conditions[entry["id"]] = _condition_def(entry, path)


def load_reports(path: Path) -> tuple[float, dict[str, tuple[int, dict[str, int]]]]:
    """(strength, condition id → (incidents, symptom finding id → incidents that stated it))
    of a ``reports.yaml``; no file means no counts."""
    if not path.exists():
        return 0.0, {}
    data = load_yaml(path, "reports")
    return float(data["strength"]), {cid: (int(entry["incidents"]), dict(entry.get("stated") or {}))
                                     for cid, entry in data["conditions"].items()}


def blend_reports(kb: KnowledgeBase, path: Path) -> None:
    """Fill ``kb.told`` from a ``reports.yaml`` (README, "How incidents are told").

    A person states a true symptom only some of the time, and that share depends mostly on the
    symptom: f's propensity m_f is how many counted incidents stated it over how many the
    files' values expect to show it (Σ_c stated / Σ_c incidents·P_file(f | c)). The incidents
    of c that stated f are a Poisson count with mean incidents·m_f·P(f | c); with a Gamma
    prior of mean P_file(f | c) worth ``strength`` exposures, the posterior mean is

        P(f | c) = (stated + strength·P_file(f | c)) / (incidents·m_f + strength)

    on the files' scale: the counts move each symptom between the conditions, and a symptom
    people rarely mention (small m_f) moves little. Symptoms no counted incident stated keep
    the files' values, as do conditions without counts (a site's own), the ``unlisted`` values
    of findings that point outside the catalogue, and the leaks; counts naming a condition the
    KB lacks are left out (kb lint reports them)."""
    strength, counts = load_reports(path)
    counted = {cid: c for cid, c in counts.items() if c[0] > 0 and cid in kb.conditions}
    for fid, fdef in kb.findings.items():
        if not fdef.is_symptom:
            continue
        stated = {cid: by_finding.get(fid, 0) for cid, (_n, by_finding) in counted.items()}
        if not any(stated.values()):
            continue
        written = {cid: kb.written_likelihood(kb.conditions[cid], fid) for cid in counted}
        propensity = sum(stated.values()) / sum(n * written[cid] for cid, (n, _s) in counted.items())
        for cid, (incidents, _s) in counted.items():
            if fdef.unlisted is not None and fid not in kb.conditions[cid].findings:
                continue
            kb.told[(cid, fid)] = min(_MAX_TOLD, (stated[cid] + strength * written[cid])
                                      / (incidents * propensity + strength))


def load_kb(extra_dirs: tuple[str, ...] = (), *, told: bool = True) -> KnowledgeBase:
    """The shipped KB plus each extra directory, in order, with how incidents are told blended
    in (``told=False``: the files' values alone). Raises KBError on any bad file."""
    kb = KnowledgeBase()
    _load_dir(kb, DATA_DIR, shipped=True)
    for extra in extra_dirs:
        directory = Path(extra)
        if not directory.is_dir():
            raise KBError(directory, None, "", "not a directory")
        _load_dir(kb, directory, shipped=False)
    _check_references(kb)
    if told:
        blend_reports(kb, DATA_DIR / "reports.yaml")
        from prodx.engine.alike import load_alike  # the reader imports this module

        kb.alike = load_alike(DATA_DIR / "alike.json")
    return kb
