"""Mandatory access control: AppArmor or SELinux refusing what the file permissions allow.

Reads, through the host:

- whether a policy is enforced: ``/sys/kernel/security/apparmor/profiles`` (``/usr/sbin/mysqld
  (enforce)``, ``/usr/sbin/cupsd (complain)``), ``/sys/module/apparmor/parameters/enabled``
  (``Y``), ``/sys/fs/selinux/enforce`` (``1`` enforcing, ``0`` permissive), else ``getenforce``;
- denials in the kernel log (``dmesg``, else kern.log), the tail of ``/var/log/audit/audit.log``
  and of ``/var/log/syslog`` / ``/var/log/messages`` (one record counts once, by its audit
  serial)::

      audit: type=1400 audit(1712345678.123:456): apparmor="DENIED" operation="open"
        profile="/usr/sbin/mysqld" name="/mnt/vol1/tmp/" pid=1234 comm="mysqld" requested_mask="r"
      type=AVC msg=audit(1712345678.123:457): avc:  denied  { write } for  pid=1234 comm="httpd"
        name="uploads" scontext=system_u:system_r:httpd_t:s0 tcontext=...:user_home_t:s0 tclass=dir permissive=0

AppArmor's complain mode (``apparmor="ALLOWED"``) and SELinux's permissive mode
(``permissive=1``) refuse nothing and are not counted. No readable log leaves the denial
findings unknown; no LSM active makes them absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext

TAIL_BYTES = 1 << 20
#: Denials older than this are history, not the current failure.
RECENT_S = 24 * 3600
_AUDIT_LOGS = ("/var/log/audit/audit.log",)
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
_AUDIT_STAMP = re.compile(r"audit\(((\d+)(?:\.\d+)?:\d+)\)")
_SELINUX_PERMS = re.compile(r"avc:\s+denied\s+\{([^}]*)\}")


def kernel_lines(ctx: ProbeContext) -> tuple[list[str] | None, str]:
    """Recent kernel log lines and where they came from, read once per run (see logs.kernel)."""
    from prodx.probes.logs import KernelLogProbe

    return ctx.fact("kernel.lines", lambda: KernelLogProbe._kernel_lines(ctx))


def parse_denial(line: str) -> dict[str, Any] | None:
    """The fields of one AppArmor or SELinux denial; None for any other line, for AppArmor's
    complain mode (ALLOWED) and for SELinux's permissive mode (``permissive=1``).

    >>> d = parse_denial('[ 9.1] audit: type=1400 audit(1712345678.123:456): apparmor="DENIED" operation="open" '
    ...                  'class="file" profile="/usr/sbin/mysqld" name="/mnt/vol1/tmp/" pid=1234 comm="mysqld" '
    ...                  'requested_mask="r" denied_mask="r" fsuid=113 ouid=0')
    >>> (d["lsm"], d["subject"], d["operation"], d["name"], d["comm"], d["time"], d["serial"])
    ('apparmor', '/usr/sbin/mysqld', 'open', '/mnt/vol1/tmp/', 'mysqld', 1712345678, '1712345678.123:456')
    >>> d = parse_denial('type=AVC msg=audit(1712345679.5:457): avc:  denied  { write } for  pid=99 comm="httpd" '
    ...                  'name="uploads" dev="sda1" ino=5 scontext=system_u:system_r:httpd_t:s0 '
    ...                  'tcontext=unconfined_u:object_r:user_home_t:s0 tclass=dir permissive=0')
    >>> (d["lsm"], d["subject"], d["operation"], d["name"], d["comm"], d["target"])
    ('selinux', 'system_u:system_r:httpd_t:s0', 'write', 'uploads', 'httpd', 'unconfined_u:object_r:user_home_t:s0')
    >>> parse_denial('audit: type=1400 apparmor="ALLOWED" operation="open" profile="x"') is None
    True
    >>> parse_denial('type=AVC msg=audit(1.0:1): avc:  denied  { read } for comm="x" permissive=1') is None
    True
    """
    if 'apparmor="DENIED"' in line:
        lsm = "apparmor"
    elif "avc:" in line and _SELINUX_PERMS.search(line):
        lsm = "selinux"
    else:
        return None
    fields = {k: v[1:-1] if v.startswith('"') else v for k, v in _PAIR.findall(line)}
    if lsm == "selinux" and fields.get("permissive") == "1":
        return None
    stamp = _AUDIT_STAMP.search(line)
    perms = _SELINUX_PERMS.search(line)
    return {
        "lsm": lsm,
        "subject": fields.get("profile", "") if lsm == "apparmor" else fields.get("scontext", ""),
        "operation": fields.get("operation", "") if lsm == "apparmor" else (perms.group(1).strip() if perms else ""),
        "name": fields.get("name", "") or fields.get("path", ""),
        "comm": fields.get("comm", ""),
        "pid": fields.get("pid", ""),
        "target": fields.get("tcontext", "") or fields.get("requested_mask", ""),
        "time": int(stamp.group(2)) if stamp else None,
        "serial": stamp.group(1) if stamp else "",
    }


def parse_apparmor_profiles(text: str) -> dict[str, int]:
    """{mode: number of profiles} from ``/sys/kernel/security/apparmor/profiles``.

    >>> parse_apparmor_profiles("/usr/sbin/mysqld (enforce)\\nnvidia_modprobe (enforce)\\n/usr/sbin/cupsd (complain)\\n")
    {'enforce': 2, 'complain': 1}
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.endswith(")") and "(" in line:
            mode = line.rsplit("(", 1)[1][:-1]
            out[mode] = out.get(mode, 0) + 1
    return out


def enforcement(ctx: ProbeContext) -> tuple[bool | None, str, dict[str, Any]]:
    """(enforcing?, how we know, evidence). None when an LSM is active but its mode unreadable."""
    evidence: dict[str, Any] = {}
    notes, unreadable = [], []
    enforcing = False
    try:
        modes = parse_apparmor_profiles(ctx.host.read_text("/sys/kernel/security/apparmor/profiles", 4 << 20))
        evidence["apparmor_profiles"] = modes
        notes.append(f"AppArmor: {modes.get('enforce', 0)} profile(s) enforced, {modes.get('complain', 0)} in complain mode")
        enforcing |= modes.get("enforce", 0) > 0
    except PermissionError:
        unreadable.append("AppArmor is loaded but /sys/kernel/security/apparmor/profiles is unreadable (run as root)")
    except OSError:
        try:
            if ctx.host.read_text("/sys/module/apparmor/parameters/enabled", 16).strip() == "Y":
                unreadable.append("AppArmor is enabled but securityfs is not mounted at /sys/kernel/security")
        except OSError:
            pass
    try:
        selinux = ctx.host.read_text("/sys/fs/selinux/enforce", 16).strip()
        evidence["selinux_enforce"] = selinux
        notes.append("SELinux enforcing" if selinux == "1" else "SELinux permissive")
        enforcing |= selinux == "1"
    except PermissionError:
        unreadable.append("/sys/fs/selinux/enforce is unreadable")
    except OSError:
        r = ctx.host.run(["getenforce"], 1.0)
        if r.ok and r.stdout.strip() in ("Enforcing", "Permissive"):
            evidence["getenforce"] = r.stdout.strip()
            notes.append(f"SELinux {r.stdout.strip().lower()} (getenforce)")
            enforcing |= r.stdout.strip() == "Enforcing"
    if enforcing:
        return True, "; ".join(notes), evidence
    if unreadable:
        return None, "; ".join(unreadable), evidence
    return False, "; ".join(notes) or ("neither AppArmor (/sys/kernel/security/apparmor) nor SELinux "
                                       "(/sys/fs/selinux) is active"), evidence


def _log_lines(ctx: ProbeContext) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(source, line) of every line that may hold a denial; sources read; problems."""
    out: list[tuple[str, str]] = []
    read, problems = [], []
    lines, source = kernel_lines(ctx)
    if lines is not None:
        read.append(source)
        out += [(source, line) for line in lines if "DENIED" in line or "avc:" in line]
    paths = list(_AUDIT_LOGS)
    for pattern in ctx.kb.locations["system_logs"]:
        paths += [p for p in ctx.host.glob(pattern) if p not in paths and p != source]
    for path in paths:
        try:
            tail = ctx.host.read_tail(path, TAIL_BYTES)
        except FileNotFoundError:
            continue
        except PermissionError:
            problems.append(f"{path}: permission denied (run as root)")
            continue
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        read.append(path)
        text = tail.decode("utf-8", "replace")
        out += [(path, line) for line in text.splitlines() if "DENIED" in line or "avc:" in line]
    return out, read, problems


def _matches_app(d: dict[str, Any], ctx: ProbeContext) -> bool:
    from prodx.probes.processes import service_key

    services = {service_key(s)[:15] for s in ctx.target.services} | {s[:15] for s in ctx.target.services}
    if d["comm"] and d["comm"] in services:
        return True
    name = d["name"]
    return bool(name.startswith("/") and any(name.rstrip("/") == p.rstrip("/") or name.startswith(p.rstrip("/") + "/")
                                             for p in ctx.target.writable + ctx.target.logs))


class MacDenialsProbe(Probe):
    """Does AppArmor or SELinux enforce a policy, and has it denied accesses recently?"""

    name = "mac.denials"
    findings = ("mac.enforcing", "mac.denied_recent", "mac.denied_app")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        from prodx.redact import redact

        enforcing, how, evidence = enforcement(ctx)
        if enforcing:
            yield present("mac.enforcing", how, **evidence)
        elif enforcing is None:
            yield unknown("mac.enforcing", how, **evidence)
        else:
            yield absent("mac.enforcing", how, **evidence)
        lines, read, problems = _log_lines(ctx)
        if not read:
            reason = "no kernel, audit or system log could be read: " + ("; ".join(problems) or "none exists")
            yield unknown("mac.denied_recent", reason)
            yield unknown("mac.denied_app", reason)
            return
        now = ctx.host.now()
        seen: set[str] = set()
        denials: list[dict[str, Any]] = []
        for source, line in lines:
            d = parse_denial(line)
            if d is None or (d["time"] is not None and now - d["time"] > RECENT_S):
                continue
            key = d["serial"] or line
            if key in seen:
                continue
            seen.add(key)
            denials.append(d | {"source": source, "line": redact(line.strip())[:400]})
        if not denials:
            note = f"no AppArmor DENIED or SELinux avc denied line in the last {RECENT_S // 3600} h of {', '.join(read)}"
            yield absent("mac.denied_recent", note, sources=read, unreadable=problems)
            if ctx.target.services or ctx.target.writable or ctx.target.logs:
                yield absent("mac.denied_app", note, sources=read)
            else:
                yield unknown("mac.denied_app", "no app known to match denials against (give services and "
                                                "writable paths in the profile)")
            return
        groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
        for d in denials:
            groups.setdefault((d["lsm"], d["subject"], d["comm"], d["operation"]), []).append(d)
        summary = []
        for (lsm, subject, comm, op), items in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:3]:
            label = "AppArmor profile" if lsm == "apparmor" else "SELinux domain"
            summary.append(f"{len(items)}× {label} {subject} denied {comm or '?'} {op} {items[-1]['name'] or ''}".rstrip())
        listed = [{k: v for k, v in d.items()} for d in denials[-10:]]
        yield present("mac.denied_recent", "; ".join(summary), count=len(denials), denials=listed)
        mine = [d for d in denials if _matches_app(d, ctx)]
        if mine:
            last = mine[-1]
            yield present("mac.denied_app", f"{len(mine)} denial(s) of the app's processes or paths, last: "
                                            f"{last['comm']} {last['operation']} {last['name']} ({last['subject']})",
                          count=len(mine), denials=mine[-10:])
        elif ctx.target.services or ctx.target.writable or ctx.target.logs:
            yield absent("mac.denied_app", "the denials concern neither the app's services nor its paths",
                         services=ctx.target.services)
        else:
            yield unknown("mac.denied_app", "no app known to match the denials against (give services and writable "
                                            "paths in the profile)")
