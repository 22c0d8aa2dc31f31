"""Checks the whole knowledge base beyond its schema.

Finds: finding ids a condition, signature, hog rule or evidence group names that the
catalogue lacks; refinement targets that do not exist or form a cycle; findings no probe or
question can observe; probes asserting findings the catalogue lacks; condition pairs no
finding can tell apart; phrases naming a word class the lexicon lacks or listed twice;
signature regexes that do not compile; evidence-group members whose leak the group's chance
exhausts or that no condition lists; counts of how incidents are told (``reports.yaml``) that
name a condition the KB lacks or a finding that is no symptom, or more statements than
incidents. An empty list means the KB is clean.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prodx.engine.words import Vocabulary
from prodx.kb.loader import DATA_DIR, ConditionDef, KnowledgeBase, load_reports, load_yaml

_RISK_ORDER = {"safe": 0, "downtime": 1, "data-loss": 2}
#: A comment that says a value is below the leak ("below the leak", "below its leak",
#: "below their leaks", "below utilization's leak").
_BELOW_LEAK = re.compile(r"\bbelow\s+(?:the\s+|its\s+|their\s+|[\w.-]+'s\s+)?leaks?\b", re.IGNORECASE)
_FINDING_LINE = re.compile(r"^\s+([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\s*:\s*[-+0-9.eE]+\s*(?:#(.*))?$")
#: An absolute path in free text: after a space, quote, `=`, `(` or `:` (rsync's host:/path),
#: not inside a URL (``https://host/path``).
_PATH = re.compile(r"(?:^|(?<=[\s'\"`=(:,<>;|&]))(?<!//)(/[\w.@%+*~-][\w.@%+*~/-]*)")

#: Two conditions whose P(f|c) differ by less than this on every finding are indistinguishable.
_DISTINCT = 0.15


@dataclass(frozen=True)
class LintIssue:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def lint(kb: KnowledgeBase, probe_findings: dict[str, tuple[str, ...]]) -> list[LintIssue]:
    """Every problem found. ``probe_findings`` maps each probe name to the ids it declares."""
    issues: list[LintIssue] = []
    known = kb.findings
    declared = {fid for ids in probe_findings.values() for fid in ids}
    vocabulary = Vocabulary(kb.lexicon)
    for fid, fdef in sorted(known.items()):
        if fdef.observed_by == "probe":
            if fdef.probe not in probe_findings:
                issues.append(LintIssue(f"finding {fid}", f"observed by probe {fdef.probe!r}, which does not exist"))
            elif fid not in probe_findings[fdef.probe]:
                issues.append(LintIssue(f"finding {fid}", f"probe {fdef.probe} does not declare it"))
        if fdef.is_symptom and not fdef.phrases:
            issues.append(LintIssue(f"finding {fid}", "a symptom needs phrases to be recognised in text"))
        for text in (*fdef.phrases, *fdef.negations):
            for word in vocabulary.words(text):
                if word.startswith("@") and word not in vocabulary.classes:
                    issues.append(LintIssue(f"finding {fid}", f"phrase {text!r}: {word} is no word class of the lexicon"))
        for key, texts in (("phrases", fdef.phrases), ("negations", fdef.negations)):
            for text, count in Counter(t.lower() for t in texts).items():
                if count > 1:
                    issues.append(LintIssue(f"finding {fid}", f"{key}: {text!r} is listed {count} times"))
        if fdef.unlisted is not None and fdef.unlisted >= fdef.leak:
            issues.append(LintIssue(f"finding {fid}", f"unlisted {fdef.unlisted} is not below its leak {fdef.leak}: "
                                    "it would make the finding point to the catalogue, not away from it"))
    for name, ids in sorted(probe_findings.items()):
        for fid in ids:
            if fid not in known:
                issues.append(LintIssue(f"probe {name}", f"declares {fid}, which the finding catalogue lacks"))
    for cid, cond in sorted(kb.conditions.items()):
        where = f"condition {cid} ({cond.source})"
        for fid, p in cond.findings.items():
            if fid not in known:
                issues.append(LintIssue(where, f"findings: unknown finding id {fid}"))
        if not any(p > known[f].leak for f, p in cond.findings.items() if f in known and not f.startswith("symptom.")):
            issues.append(LintIssue(where, "no probe finding is more likely under it than by chance: probes cannot confirm it"))
    for a, b in itertools.combinations(sorted(kb.conditions), 2):
        ca, cb = kb.conditions[a], kb.conditions[b]
        ids = set(ca.findings) | set(cb.findings)
        if all(abs(kb.written_likelihood(ca, f) - kb.written_likelihood(cb, f)) < _DISTINCT for f in ids):
            issues.append(LintIssue(f"conditions {a} and {b}", "no finding tells them apart"))
    issues += _lint_groups(kb)
    issues += lint_reports(kb, DATA_DIR / "reports.yaml")
    rules = lint_rules(kb)
    for cid, cond in sorted(kb.conditions.items()):
        issues += _lint_leak_comments(kb, cond)
        issues += _lint_explains(kb, cond)
        issues += _lint_remedy(cond, rules)
    for i, sig in enumerate(kb.signatures):
        where = f"signature {sig.get('id', i)}"
        if sig["finding"] not in known:
            issues.append(LintIssue(where, f"unknown finding id {sig['finding']}"))
        elif sig["finding"] not in declared:
            issues.append(LintIssue(where, f"finding {sig['finding']} is declared by no probe"))
    for i, rule in enumerate(kb.hogs):
        if rule["finding"] not in known:
            issues.append(LintIssue(f"hog rule {i}", f"unknown finding id {rule['finding']}"))
        for pattern in (*rule.get("files", ()), *rule.get("dirs", ())):
            try:
                re.compile(pattern)
            except re.error as exc:
                issues.append(LintIssue(f"hog rule {i}", f"pattern {pattern!r} does not compile: {exc}"))
    return issues


def _lint_groups(kb: KnowledgeBase) -> list[LintIssue]:
    """Evidence groups: members the catalogue lacks, members whose leak leaves no false
    positive once the group's chance is accounted for, and members no condition makes more
    likely than chance (they would only add correlation to "none of the known")."""
    issues = []
    for gid, group in sorted(kb.groups.items()):
        where = f"group {gid} ({group.source})"
        for m in group.members:
            fdef = kb.findings.get(m.finding)
            if fdef is None:
                issues.append(LintIssue(where, f"members: unknown finding id {m.finding}"))
                continue
            if group.chance * m.sensitivity >= fdef.leak:
                issues.append(LintIssue(where, f"{m.finding}: chance {group.chance} × sensitivity {m.sensitivity} "
                                               f"reaches its leak {fdef.leak}: nothing is left for false positives; lower the chance"))
            if not any(c.findings.get(m.finding, 0.0) > fdef.leak for c in kb.conditions.values()):
                issues.append(LintIssue(where, f"{m.finding}: no condition lists it above its leak {fdef.leak}; "
                                               "as a member it would only make chance explain the others"))
    return issues


def lint_reports(kb: KnowledgeBase, path: Path) -> list[LintIssue]:
    """How incidents are told: counts under a condition the KB lacks (they would be dropped),
    of a finding that is unknown or no symptom, or above the condition's incidents."""
    issues = []
    for cid, (incidents, stated) in load_reports(path)[1].items():
        where = f"reports {cid} ({path})"
        if cid not in kb.conditions:
            issues.append(LintIssue(where, f"unknown condition id {cid}: regenerate with bench/learn_reports.py"))
        for fid, k in sorted(stated.items()):
            if fid not in kb.findings or not kb.findings[fid].is_symptom:
                issues.append(LintIssue(where, f"stated: {fid} is no symptom finding of the catalogue"))
            if k > incidents:
                issues.append(LintIssue(where, f"stated: {fid} in {k} of {incidents} incidents"))
    return issues


def lint_rules(kb: KnowledgeBase) -> dict[str, Any]:
    """The remedy rules (``lint.yaml``) of the shipped KB and of each --kb DIR, merged."""
    rules: dict[str, Any] = {"risky_commands": [], "generic_paths": [], "placeholder_segment": ""}
    for directory in kb.sources:
        path = Path(directory) / "lint.yaml"
        if not path.exists():
            continue
        data = load_yaml(path, "lint") or {}
        rules["risky_commands"] += [{**r, "regex": re.compile(r["pattern"])} for r in data.get("risky_commands", ())]
        rules["generic_paths"] += list(data.get("generic_paths", ()))
        rules["placeholder_segment"] = data.get("placeholder_segment", rules["placeholder_segment"])
    return rules


def finding_comments(text: str) -> dict[str, tuple[int, str]]:
    """The line of each entry of a condition file's ``findings:`` map and the comment that
    speaks for it: its own trailing comment plus the comment block that heads its paragraph
    (a comment block covers the entries below it up to the next comment or blank line).

    >>> text = "findings:\\n  # Below the leak: fast.\\n  a.b: 0.1\\n  a.c: 0.2  # why\\n\\n  a.d: 0.3\\n"
    >>> finding_comments(text)
    {'a.b': (3, 'Below the leak: fast.'), 'a.c': (4, 'Below the leak: fast. why'), 'a.d': (6, '')}
    """
    out: dict[str, tuple[int, str]] = {}
    in_findings, block, after_entry = False, [], False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped and not line[0].isspace() and not stripped.startswith("#"):
            in_findings, block, after_entry = stripped.startswith("findings:"), [], False
            continue
        if not in_findings:
            continue
        if not stripped:
            block, after_entry = [], False
        elif stripped.startswith("#"):
            if after_entry:
                block, after_entry = [], False
            block.append(stripped.lstrip("#").strip())
        elif m := _FINDING_LINE.match(line):
            own = [m.group(2).strip()] if m.group(2) else []
            out[m.group(1)] = (number, " ".join(block + own))
            after_entry = True
    return out


def _lint_leak_comments(kb: KnowledgeBase, cond: ConditionDef) -> list[LintIssue]:
    """A value its comment calls below the leak must be below the finding's leak."""
    try:
        text = Path(cond.source).read_text(encoding="utf-8")
    except OSError:
        return []
    issues = []
    for fid, (line, comment) in sorted(finding_comments(text).items()):
        p, fdef = cond.findings.get(fid), kb.findings.get(fid)
        if p is None or fdef is None or not _BELOW_LEAK.search(comment):
            continue
        if p >= fdef.leak:
            issues.append(LintIssue(f"condition {cond.id} ({cond.source}:{line})",
                                    f"findings.{fid}: {p} is not below its leak {fdef.leak}, "
                                    f"yet its comment says so: \"{comment[:90]}\""))
    return issues


def _lint_explains(kb: KnowledgeBase, cond: ConditionDef) -> list[LintIssue]:
    """A symptom the condition makes more likely than chance needs an ``explains`` entry: the
    report tells the person why this failure produces what they saw. Probe findings need
    none: a probe finding above its leak is the condition's own evidence, described by the
    finding's catalogue entry (what is measured, where) and the comment beside the value."""
    issues = []
    for fid, p in sorted(cond.findings.items()):
        fdef = kb.findings.get(fid)
        if fdef is not None and fdef.is_symptom and p > fdef.leak and fid not in cond.explains:
            issues.append(LintIssue(f"condition {cond.id} ({cond.source})",
                                    f"findings.{fid}: {p} is above its leak {fdef.leak} without an explains entry "
                                    "saying why this failure produces it"))
    return issues


def _lint_remedy(cond: ConditionDef, rules: dict[str, Any]) -> list[LintIssue]:
    """Remedy steps whose command is riskier than their mark, and remedy or avoid texts that
    carry a path that is not generic (a path from an incident write-up)."""
    issues = []
    where = f"condition {cond.id} ({cond.source})"
    for i, step in enumerate(cond.remedy):
        for rule in rules["risky_commands"]:
            if _RISK_ORDER[step.risk] < _RISK_ORDER[rule["risk"]] and rule["regex"].search(step.command):
                issues.append(LintIssue(where, f"remedy[{i}] is marked {step.risk} but its command {rule['why']}: "
                                               f"mark it {rule['risk']} ({step.command[:70]!r})"))
                break
    texts = [(f"remedy[{i}]", t) for i, r in enumerate(cond.remedy) for t in (r.step, r.command)]
    texts += [(f"avoid[{i}]", t) for i, t in enumerate(cond.avoid)]
    for field, text in texts:
        for path in concrete_paths(text, rules):
            issues.append(LintIssue(where, f"{field}: {path!r} is not a generic path (kb/data/lint.yaml "
                                           "generic_paths): use a placeholder such as /var/www/app or /mnt/DATA"))
    return issues


def concrete_paths(text: str, rules: dict[str, Any]) -> list[str]:
    """The absolute paths in ``text`` that no generic pattern allows and that hold no
    placeholder segment (PID, FD, DATA).

    >>> rules = {"generic_paths": ["/var/log/*", "/etc/*"], "placeholder_segment": "^[A-Z][A-Z0-9_]+$"}
    >>> concrete_paths("tail /var/log/app.log; ls /mnt/vol1/tmp/ /proc/PID/fd https://x.example/a/b.", rules)
    ['/mnt/vol1/tmp/']
    """
    placeholder = re.compile(rules["placeholder_segment"]) if rules["placeholder_segment"] else None
    out = []
    for path in _PATH.findall(text):
        path = path.rstrip(".,;:")
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in rules["generic_paths"]):
            continue
        if placeholder and any(placeholder.match(seg) for seg in path.split("/")):
            continue
        out.append(path)
    return out
