"""Checks the whole knowledge base beyond its schema.

Finds: finding ids a condition, signature, hog rule or evidence group names that the
catalogue lacks; refinement targets that do not exist or form a cycle; findings no probe or
question can observe; probes asserting findings the catalogue lacks; condition pairs no
finding can tell apart; signature regexes that do not compile; evidence-group members whose
leak the group's chance exhausts or that no condition lists. An empty list means the KB is
clean.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from prodx.kb.loader import KnowledgeBase

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
    for fid, fdef in sorted(known.items()):
        if fdef.observed_by == "probe":
            if fdef.probe not in probe_findings:
                issues.append(LintIssue(f"finding {fid}", f"observed by probe {fdef.probe!r}, which does not exist"))
            elif fid not in probe_findings[fdef.probe]:
                issues.append(LintIssue(f"finding {fid}", f"probe {fdef.probe} does not declare it"))
        if fdef.is_symptom and not fdef.phrases:
            issues.append(LintIssue(f"finding {fid}", "a symptom needs phrases to be recognised in text"))
    for name, ids in sorted(probe_findings.items()):
        for fid in ids:
            if fid not in known:
                issues.append(LintIssue(f"probe {name}", f"declares {fid}, which the finding catalogue lacks"))
    for cid, cond in sorted(kb.conditions.items()):
        where = f"condition {cid} ({cond.source})"
        for fid, p in cond.findings.items():
            if fid not in known:
                issues.append(LintIssue(where, f"findings: unknown finding id {fid}"))
        for fid in cond.explains:
            if fid not in known:
                issues.append(LintIssue(where, f"explains: unknown finding id {fid}"))
        for test in (*cond.confirm, *cond.rule_out):
            if test.finding not in known:
                issues.append(LintIssue(where, f"confirm/rule_out: unknown finding id {test.finding}"))
        if cond.refines:
            if cond.refines not in kb.conditions:
                issues.append(LintIssue(where, f"refines unknown condition {cond.refines}"))
            elif cid in kb.chain(cond.refines):
                issues.append(LintIssue(where, f"refinement cycle through {cond.refines}"))
        if not any(p > known[f].leak for f, p in cond.findings.items() if f in known and not f.startswith("symptom.")):
            issues.append(LintIssue(where, "no probe finding is more likely under it than by chance: probes cannot confirm it"))
    for a, b in itertools.combinations(sorted(kb.conditions), 2):
        ca, cb = kb.conditions[a], kb.conditions[b]
        ids = set(ca.findings) | set(cb.findings)
        leak = {f: known[f].leak if f in known else 0.01 for f in ids}
        if all(abs(ca.findings.get(f, leak[f]) - cb.findings.get(f, leak[f])) < _DISTINCT for f in ids):
            issues.append(LintIssue(f"conditions {a} and {b}", "no finding tells them apart"))
    issues += _lint_groups(kb)
    for i, sig in enumerate(kb.signatures):
        where = f"signature {sig.get('id', i)}"
        if sig["finding"] not in known:
            issues.append(LintIssue(where, f"unknown finding id {sig['finding']}"))
        elif sig["finding"] not in declared:
            issues.append(LintIssue(where, f"finding {sig['finding']} is declared by no probe"))
        try:
            re.compile(sig["pattern"])
        except re.error as exc:
            issues.append(LintIssue(where, f"pattern does not compile: {exc}"))
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
