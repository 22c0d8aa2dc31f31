"""What changed on this host recently, and does the servers' config still pass their own test.

Reads (bounded, through the host layer):

- ``/var/log/dpkg.log`` (and ``dpkg.log.1`` when the window reaches past it), last 1 MiB:
  ``2026-11-27 03:12:45 upgrade php8.2-fpm:amd64 8.2.7-1~deb12u1 8.2.20-1~deb12u1``;
  ``/var/log/apt/history.log`` for the command that did it (``Commandline: apt-get upgrade``);
  ``/var/log/dnf.rpm.log`` on rpm hosts (``2024-05-14T03:12:45+0000 SUBDEBUG Upgrade: php-fpm-8.2.20-1.el9.x86_64``);
- stat of dependency lockfiles, installed-dependency manifests and folders (``vendor/composer/
  installed.json``, a virtualenv's ``site-packages``) and config files in the app folders
  (profile or discovery); in a release layout (``releases/N`` behind a ``current`` symlink) a
  new lockfile is compared with the previous release's, since every release copies it;
- a bounded walk of the app's own code in those folders (``code_suffixes``, outside
  ``not_own_code``: vendor/, node_modules/, var/, storage/ ...; at most ``_MAX_CODE_ENTRIES``
  entries), so a dependency update (lockfile and vendor/ new, own code old) reads apart from a
  deploy of new code;
- stat of config files under ``/etc`` (``kb/data/frameworks.yaml``: ``etc_config_dirs``; at
  most ``_MAX_ENTRIES`` entries, 3 levels deep);
- ``.git/logs/HEAD`` (last line: ``<old> <new> Name <mail> 1716000000 +0000<TAB>pull: Fast-forward``),
  ``ORIG_HEAD`` / ``FETCH_HEAD`` mtimes, and ``current -> releases/…`` symlinks in app folders;
- ``/proc/stat`` (``btime 1716000000``) for the boot time;
- the tails of the app's logs for code-level errors (``kb/data/signatures/changes.yaml``),
  dated against the changes;
- the servers' own config tests (``nginx -t -e /dev/null``, ``apachectl -t``) as given by
  ``kb/data/frameworks.yaml``: on a running server's config they change nothing (see the
  hazards noted there; ``php-fpm -t`` is left out because it writes to the live error log).

Every present finding carries ``events``: ``[{"ts", "when", "kind", "what"}]``, the timeline the
report prints. A source that does not exist here makes its finding ``unknown``, not absent.
"""

from __future__ import annotations

import os
import re
import stat as statmod
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext

#: Changes older than this are history, not the cause of today's outage.
RECENT_S = 48 * 3600
#: A boot within this counts as a recent reboot.
REBOOT_RECENT_S = 24 * 3600
#: Errors that begin within this after a change count as following it.
FOLLOW_S = 6 * 3600
_TAIL_BYTES = 1 << 20
_MAX_ENTRIES = 3000
_MAX_DEPTH = 3
_MAX_EVENTS = 40
_CODE_ERRORS = "change.errors_after_change"
_MAX_CODE_ENTRIES = 5000
_MAX_CODE_DEPTH = 8
_CODE_BUDGET_S = 0.5
#: Bytes of a lockfile compared with the previous release's copy.
_LOCK_COMPARE_BYTES = 4 << 20
#: A config file written this close to a dpkg/dnf action counts as written by the package.
_PACKAGE_SLACK_S = 120


def discovery(ctx: ProbeContext) -> Any:
    """The run's discovery result (computed once; ``diagnose`` may have seeded it)."""
    return ctx.discovery()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _event(ts: float, kind: str, what: str, **extra: Any) -> dict[str, Any]:
    return {"ts": round(ts, 3), "when": _iso(ts), "kind": kind, "what": what, **extra}


def _local_ts(text: str) -> float | None:
    """Seconds since the epoch of a log time; naive times are the host's local time."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_dpkg_log(text: str) -> list[dict[str, str]]:
    """Package installs, upgrades and removals in dpkg.log text, oldest first.

    >>> parse_dpkg_log('''2024-05-14 03:12:45 startup packages configure
    ... 2024-05-14 03:12:45 upgrade php8.2-fpm:amd64 8.2.7-1~deb12u1 8.2.20-1~deb12u1
    ... 2024-05-14 03:12:46 status half-configured php8.2-fpm:amd64 8.2.20-1~deb12u1
    ... 2024-05-14 03:12:47 install redis-server:amd64 <none> 5:7.0.15-1''')
    [{'when': '2024-05-14 03:12:45', 'action': 'upgrade', 'package': 'php8.2-fpm', 'old': '8.2.7-1~deb12u1', 'new': '8.2.20-1~deb12u1'}, {'when': '2024-05-14 03:12:47', 'action': 'install', 'package': 'redis-server', 'old': '', 'new': '5:7.0.15-1'}]
    """
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[2] in ("install", "upgrade", "remove", "purge"):
            old, new = (v if v != "<none>" else "" for v in parts[4:6])
            out.append({"when": f"{parts[0]} {parts[1]}", "action": parts[2], "package": parts[3].split(":")[0],
                        "old": old, "new": new})
    return out


def parse_apt_history(text: str) -> list[dict[str, str]]:
    """The commands of apt's history.log, with their start time, oldest first.

    >>> parse_apt_history('''Start-Date: 2024-05-14  03:12:40
    ... Commandline: apt-get upgrade -y
    ... Upgrade: php8.2-fpm:amd64 (8.2.7-1, 8.2.20-1)
    ... End-Date: 2024-05-14  03:12:50''')
    [{'when': '2024-05-14 03:12:40', 'commandline': 'apt-get upgrade -y'}]
    """
    out: list[dict[str, str]] = []
    start = ""
    for line in text.splitlines():
        if line.startswith("Start-Date:"):
            start = " ".join(line.split()[1:3])
        elif line.startswith("Commandline:") and start:
            out.append({"when": start, "commandline": line.split(":", 1)[1].strip()})
    return out


_RPM_NAME = re.compile(r"^(.+)-([^-]+-[^-]+?)(?:\.(?:noarch|x86_64|aarch64|i686|ppc64le|s390x))?$")


def parse_dnf_rpm_log(text: str) -> list[dict[str, str]]:
    """Package changes in dnf.rpm.log text (best effort), oldest first.

    >>> parse_dnf_rpm_log('''2024-05-14T03:12:45+0000 SUBDEBUG Upgrade: php-fpm-8.2.20-1.el9.x86_64
    ... 2024-05-14T03:12:45+0000 SUBDEBUG Upgraded: php-fpm-8.2.7-1.el9.x86_64''')
    [{'when': '2024-05-14T03:12:45+00:00', 'action': 'upgrade', 'package': 'php-fpm', 'old': '8.2.7-1.el9', 'new': '8.2.20-1.el9'}]
    """
    out: list[dict[str, str]] = []
    pending: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) \S+ (Upgrade|Upgraded|Install|Installed|Erase|Downgrade|Downgraded): (\S+)", line)
        if not m:
            continue
        when = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", m.group(1))
        name = _RPM_NAME.match(m.group(3))
        if not name:
            continue
        pkg, version = name.groups()
        verb = m.group(2)
        if verb in ("Upgraded", "Downgraded"):
            if pkg in pending:
                pending[pkg]["old"] = version
            continue
        action = {"Upgrade": "upgrade", "Install": "install", "Installed": "install", "Erase": "remove",
                  "Downgrade": "downgrade"}[verb]
        entry = {"when": when, "action": action, "package": pkg, "old": "", "new": version if action != "remove" else ""}
        if action == "remove":
            entry["old"] = version
        if verb == "Installed" and any(e["package"] == pkg and e["when"] == when for e in out):
            continue
        pending[pkg] = entry
        out.append(entry)
    return out


def parse_git_head_log(text: str) -> dict[str, Any] | None:
    """The last entry of ``.git/logs/HEAD``: time, commit and message; None if there is none.

    >>> parse_git_head_log("0000 1111 Dev <d@x> 1715650000 +0000\\tclone: from x\\n1111 2222 Dev <d@x> 1715656365 +0200\\tpull: Fast-forward\\n")
    {'ts': 1715656365, 'old': '1111', 'new': '2222', 'message': 'pull: Fast-forward', 'author': 'Dev'}
    """
    for line in reversed(text.splitlines()):
        head, _, message = line.partition("\t")
        m = re.match(r"^(\S+) (\S+) (.*?) <[^>]*> (\d+) [+-]\d{4}$", head)
        if m:
            return {"ts": int(m.group(4)), "old": m.group(1), "new": m.group(2), "message": message.strip(),
                    "author": m.group(3)}
    return None


def parse_btime(text: str) -> int | None:
    """The boot time (seconds since the epoch) from /proc/stat.

    >>> parse_btime("cpu  1 2 3\\nbtime 1716000000\\nprocesses 42\\n")
    1716000000
    """
    m = re.search(r"^btime (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def _versions(old: str, new: str) -> tuple[str, str]:
    """Two versions to read at a glance: no epoch, and no Debian revision unless only the
    revision differs.

    >>> _versions("8.2.7-1~deb12u1", "8.2.20-1~deb12u1")
    ('8.2.7', '8.2.20')
    >>> _versions("1:4.13+dfsg1-1+deb12u1", "1:4.13+dfsg1-1+deb12u2")
    ('4.13+dfsg1-1+deb12u1', '4.13+dfsg1-1+deb12u2')
    """
    a, b = old.split(":", 1)[-1], new.split(":", 1)[-1]
    ua, ub = a.rsplit("-", 1)[0], b.rsplit("-", 1)[0]
    return (ua, ub) if ua != ub else (a, b)


def app_roots(ctx: ProbeContext) -> list[str]:
    """The app's project folders: discovered ones, then those holding the profile's paths."""
    from prodx.discovery.frameworks import _project_root
    from prodx.discovery.stack import rules

    roots = [p for p, _ in discovery(ctx).app_roots]
    for path in [*ctx.target.writable, *ctx.target.logs]:
        if path.startswith(("/tmp", "/var/tmp", "/var/lib/php", "/var/log")) and path.count("/") <= 3:
            continue
        probe = os.path.dirname(path)
        for _ in range(3):
            root = _project_root(ctx.host, probe, rules())
            if root:
                if root not in roots:
                    roots.append(root)
                break
            probe = os.path.dirname(probe)
            if probe in ("/", ""):
                break
    return roots


class ChangesProbe(Probe):
    """Package updates, dependency and config edits, deploys, reboots in the last 48 h, and
    code errors that began after one of them."""

    name = "changes.history"
    findings = (
        "change.packages_recent",
        "change.app_dependencies_recent",
        "change.app_code_recent",
        "change.config_recent",
        "change.deploy_recent",
        "change.reboot_recent",
        _CODE_ERRORS,
    )
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        now = ctx.host.now()
        since = now - RECENT_S
        roots = app_roots(ctx)
        packages = self._packages(ctx, since)
        installs = sorted(e["ts"] for e in packages.evidence.get("all_ts", []))
        packages.evidence.pop("all_ts", None)
        results = [
            packages,
            self._dependencies(ctx, roots, since),
            self._app_code(ctx, roots, since),
            self._config(ctx, roots, since, installs),
            self._deploy(ctx, roots, since),
            self._reboot(ctx, now),
        ]
        yield from results
        yield self._errors_after(ctx, [f for f in results if f.present and f.id != "change.reboot_recent"])

    # ---- packages ------------------------------------------------------------------------

    def _packages(self, ctx: ProbeContext, since: float) -> Finding:
        fid = "change.packages_recent"
        events: list[dict[str, Any]] = []
        read: list[str] = []
        for path in ("/var/log/dpkg.log", "/var/log/dpkg.log.1"):
            try:
                text = ctx.host.read_tail(path, _TAIL_BYTES).decode("utf-8", "replace")
            except FileNotFoundError:
                continue
            except OSError as exc:
                return unknown(fid, f"cannot read {path}: {exc.strerror or exc}")
            read.append(path)
            entries = parse_dpkg_log(text)
            events += [self._package_event(e, "apt") for e in entries]
            first = _local_ts(text[:19]) if text[:4].isdigit() else None
            if first is not None and first <= since:
                break  # this file already reaches past the window
        try:
            text = ctx.host.read_tail("/var/log/dnf.rpm.log", _TAIL_BYTES).decode("utf-8", "replace")
            read.append("/var/log/dnf.rpm.log")
            events += [self._package_event(e, "dnf") for e in parse_dnf_rpm_log(text)]
        except FileNotFoundError:
            pass
        except OSError as exc:
            return unknown(fid, f"cannot read /var/log/dnf.rpm.log: {exc.strerror or exc}")
        if not read:
            return unknown(fid, "no package log here (/var/log/dpkg.log, /var/log/dnf.rpm.log): updates cannot be dated")
        recent = sorted((e for e in events if e["ts"] is not None and e["ts"] >= since), key=lambda e: e["ts"])
        if not recent:
            return absent(fid, f"no package installed, upgraded or removed in the last {RECENT_S // 3600} h", logs=read)
        commands = []
        try:
            history = ctx.host.read_tail("/var/log/apt/history.log", _TAIL_BYTES).decode("utf-8", "replace")
            commands = [c | {"ts": _local_ts(c["when"])} for c in parse_apt_history(history)]
            commands = [c for c in commands if c["ts"] and c["ts"] >= since]
        except OSError:
            pass
        upgrades = [e for e in recent if e["action"] in ("upgrade", "downgrade")]
        latest = (upgrades or recent)[-1]
        return present(
            fid,
            f"{len(recent)} package change(s) in the last {RECENT_S // 3600} h, latest {latest['when'][:16]} "
            f"{latest['what']}" + (f" ({len(upgrades)} upgrade(s))" if upgrades else ""),
            events=recent[-_MAX_EVENTS:], count=len(recent), commands=commands[-10:], logs=read,
            all_ts=[{"ts": e["ts"]} for e in recent],
        )

    @staticmethod
    def _package_event(e: dict[str, str], tool: str) -> dict[str, Any]:
        ts = _local_ts(e["when"])
        if e["action"] in ("upgrade", "downgrade") and e["old"]:
            old, new = _versions(e["old"], e["new"])
            what = f"{tool} {e['action']}d {e['package']} {old} → {new}"
        elif e["action"] == "install":
            what = f"{tool} installed {e['package']} {_versions(e['new'], e['new'])[1]}"
        else:
            what = f"{tool} removed {e['package']}"
        return {"ts": ts, "when": _iso(ts) if ts else e["when"], "kind": "package", "what": what,
                "package": e["package"], "old": e["old"], "new": e["new"], "action": e["action"]}

    # ---- files in the app and under /etc --------------------------------------------------

    @staticmethod
    def _mtime(ctx: ProbeContext, path: str, dirs: bool = False) -> float | None:
        """mtime of a regular file (or a folder, with ``dirs``); None when there is none."""
        try:
            st = ctx.host.stat(path)
        except OSError:
            return None
        return st.st_mtime if statmod.S_ISREG(st.st_mode) or (dirs and statmod.S_ISDIR(st.st_mode)) else None

    def _dependencies(self, ctx: ProbeContext, roots: list[str], since: float) -> Finding:
        from prodx.discovery.stack import rules

        fid = "change.app_dependencies_recent"
        if not roots:
            return unknown(fid, "no app folder known: give the app's paths in a profile, or run prodx where its "
                                "web server or workers run so discovery finds them")
        found, checked, same = [], [], []
        for root in roots:
            previous = _previous_release(ctx, root)
            paths = [os.path.join(root, name) for name in rules().get("lockfiles", [])]
            for pattern in rules().get("installed_dependencies", []):
                paths += ctx.host.glob(os.path.join(root, pattern))[:5]
            for path in paths:
                mtime = self._mtime(ctx, path, dirs=True)
                if mtime is None:
                    continue
                checked.append(path)
                if mtime < since:
                    continue
                if previous and _same_content(ctx, path, os.path.join(previous, os.path.relpath(path, root))):
                    same.append(path)  # the release copied it unchanged
                    continue
                found.append(_event(mtime, "dependencies", f"{path} modified", path=path))
        if found:
            found.sort(key=lambda e: e["ts"])
            return present(fid, "; ".join(f"{e['path']} modified {e['when'][:16]}" for e in found[-5:]),
                           events=found, roots=roots)
        if not checked:
            return unknown(fid, f"no dependency lockfile in the app folders ({', '.join(roots)})")
        extra = f"; {len(same)} copied unchanged from the previous release" if same else ""
        return absent(fid, f"no lockfile changed in the last {RECENT_S // 3600} h ({len(checked)} checked{extra})",
                      checked=checked, same_as_previous_release=same)

    def _app_code(self, ctx: ProbeContext, roots: list[str], since: float) -> Finding:
        """The newest of the app's own code files (not its dependencies, not what it writes)."""
        fid = "change.app_code_recent"
        if not roots:
            return unknown(fid, "no app folder known: give the app's paths in a profile, or run prodx where its "
                                "web server or workers run so discovery finds them")
        end = time.monotonic() + _CODE_BUDGET_S
        recent: list[dict[str, Any]] = []
        newest: tuple[float, str] = (0.0, "")
        files = entries = 0
        partial = False
        for root in roots:
            walk = _OwnCode(ctx, root, end, _MAX_CODE_ENTRIES - entries)
            for path, mtime in walk:
                files += 1
                newest = max(newest, (mtime, path))
                if mtime >= since:
                    recent.append(_event(mtime, "code", f"{path} modified", path=path))
            entries += walk.entries
            partial = partial or walk.partial
        if recent:
            recent.sort(key=lambda e: e["ts"])
            return present(fid, f"{len(recent)} of the app's own code file(s) changed in the last {RECENT_S // 3600} h, "
                                f"latest {recent[-1]['path']} at {recent[-1]['when'][:16]}",
                           events=recent[-5:], count=len(recent), partial=partial, roots=roots)
        if partial:
            return unknown(fid, f"the walk of the app's code ran out of its budget after {entries} entries, "
                                "with no recent change among them")
        if not files:
            return unknown(fid, f"no code file of the app's own found in {', '.join(roots)}")
        return absent(fid, f"none of the app's {files} own code file(s) changed in the last {RECENT_S // 3600} h "
                           f"(newest {newest[1]}, {_iso(newest[0])[:16]})", files=files, roots=roots)

    def _config(self, ctx: ProbeContext, roots: list[str], since: float, installs: list[float]) -> Finding:
        from prodx.discovery.stack import rules

        fid = "change.config_recent"
        end = time.monotonic() + 0.6
        entries = 0
        recent: list[dict[str, Any]] = []
        looked: list[str] = []
        by_packages: list[str] = []
        partial = False

        def note(path: str, mtime: float) -> None:
            if mtime < since or path in (e["path"] for e in recent) or path in by_packages:
                return
            # Package scripts (ucf, postinst) rewrite conffiles while dpkg runs: that change is
            # change.packages_recent's, not a person's edit.
            if any(-_PACKAGE_SLACK_S <= mtime - ts <= _PACKAGE_SLACK_S for ts in installs):
                by_packages.append(path)
                return
            recent.append(_event(mtime, "config", f"{path} edited", path=path))

        for top in rules().get("etc_config_dirs", []):
            stack = [(top, 0)]
            while stack:
                if entries >= _MAX_ENTRIES or time.monotonic() > end:
                    partial = True
                    break
                path, depth = stack.pop()
                try:
                    st = ctx.host.stat(path)
                except OSError:
                    continue
                entries += 1
                if depth == 0:
                    looked.append(path)
                if statmod.S_ISREG(st.st_mode):
                    note(path, st.st_mtime)
                elif statmod.S_ISDIR(st.st_mode) and depth < _MAX_DEPTH:
                    try:
                        names = ctx.host.listdir(path)
                    except OSError:
                        continue
                    stack += [(os.path.join(path, n), depth + 1) for n in reversed(names)]
        for svc in discovery(ctx).services:
            if svc.config and not svc.config.startswith("/etc/"):
                mtime = self._mtime(ctx, svc.config)
                if mtime is not None:
                    looked.append(svc.config)
                    note(svc.config, mtime)
        for root in roots:
            for pattern in rules().get("app_config", []):
                for path in ctx.host.glob(os.path.join(root, pattern))[:50]:
                    mtime = self._mtime(ctx, path)
                    if mtime is not None:
                        looked.append(path)
                        note(path, mtime)
        if recent:
            recent.sort(key=lambda e: e["ts"])
            return present(fid, f"{len(recent)} config file(s) edited in the last {RECENT_S // 3600} h, latest "
                                f"{recent[-1]['path']} at {recent[-1]['when'][:16]}",
                           events=recent[-_MAX_EVENTS:], count=len(recent), partial=partial,
                           by_packages=by_packages[:20])
        if not looked:
            return unknown(fid, "no config folder or app config file found to date (/etc/nginx, /etc/php, ... or "
                                "the app's folders)")
        if partial:
            return unknown(fid, f"the config walk ran out of its budget after {entries} entries")
        extra = f"; {len(by_packages)} rewritten by package installs" if by_packages else ""
        return absent(fid, f"no config file edited in the last {RECENT_S // 3600} h ({entries} entries under "
                           f"{len(looked)} places{extra})", looked=looked[:20], by_packages=by_packages[:20])

    def _deploy(self, ctx: ProbeContext, roots: list[str], since: float) -> Finding:
        fid = "change.deploy_recent"
        if not roots:
            return unknown(fid, "no app folder known: give the app's paths in a profile, or run prodx where its "
                                "web server or workers run so discovery finds them")
        events: list[dict[str, Any]] = []
        traced = []
        for root in roots:
            for base in dict.fromkeys([root, os.path.dirname(root)]):
                try:
                    head = ctx.host.read_tail(os.path.join(base, ".git/logs/HEAD"), 64 * 1024).decode("utf-8", "replace")
                except OSError:
                    head = ""
                last = parse_git_head_log(head) if head else None
                if last:
                    traced.append(f"{base}/.git")
                    if last["ts"] >= since:
                        events.append(_event(last["ts"], "deploy", f"git HEAD of {base} moved: {last['message']}",
                                             path=base, commit=last["new"][:12], author=last["author"]))
                for ref in ("ORIG_HEAD", "FETCH_HEAD"):
                    mtime = self._mtime(ctx, os.path.join(base, ".git", ref))
                    if mtime is not None:
                        traced.append(f"{base}/.git/{ref}")
                        if mtime >= since:
                            events.append(_event(mtime, "deploy", f"git {ref} of {base} written", path=base))
            for link in dict.fromkeys([root, os.path.join(os.path.dirname(root), "current"), os.path.join(root, "current")]):
                try:
                    lst = ctx.host.lstat(link)
                except OSError:
                    continue
                if not statmod.S_ISLNK(lst.st_mode):
                    continue
                try:
                    target = ctx.host.readlink(link)
                except OSError:
                    target = "?"
                traced.append(link)
                if lst.st_mtime >= since:
                    events.append(_event(lst.st_mtime, "deploy", f"{link} switched to {target}", path=link, target=target))
        if events:
            events.sort(key=lambda e: e["ts"])
            dedup = list({(e["what"], e["ts"]): e for e in events}.values())
            return present(fid, f"{dedup[-1]['what']} at {dedup[-1]['when'][:16]}", events=dedup, roots=roots)
        if not traced:
            return unknown(fid, f"no git checkout or release symlink in the app folders ({', '.join(roots)}): "
                                "a deploy by copying files leaves nothing prodx can date")
        return absent(fid, f"no deploy in the last {RECENT_S // 3600} h ({', '.join(traced[:4])})", traced=traced)

    def _reboot(self, ctx: ProbeContext, now: float) -> Finding:
        fid = "change.reboot_recent"
        try:
            btime = parse_btime(ctx.host.read_text("/proc/stat", 1 << 16))
        except OSError as exc:
            return unknown(fid, f"cannot read /proc/stat: {exc.strerror or exc}")
        if btime is None:
            return unknown(fid, "/proc/stat has no btime line")
        up_s = now - btime
        if up_s < REBOOT_RECENT_S:
            return present(fid, f"the host booted {up_s / 3600:.1f} h ago ({_iso(btime)[:16]})",
                           events=[_event(btime, "reboot", "host booted")], uptime_s=round(up_s))
        return absent(fid, f"up {up_s / 86400:.1f} days", uptime_s=round(up_s))

    # ---- errors that follow a change -------------------------------------------------------

    def _errors_after(self, ctx: ProbeContext, changes: list[Finding]) -> Finding:
        from prodx.probes.logs import app_logs
        from prodx.scanners.logscan import scan_tail

        logs = [p for p in app_logs(ctx) if ctx.host.exists(p)]
        if not logs:
            return unknown(_CODE_ERRORS, "no app logs known or open (give them in the profile)")
        m = _code_error_matcher(ctx)
        if m is None:
            return unknown(_CODE_ERRORS, "the knowledge base has no code-error signatures (signatures/changes.yaml)")
        errors: list[dict[str, Any]] = []
        for path in logs:
            fs = scan_tail(ctx.host.real_path(path), m, tail_bytes=_TAIL_BYTES)
            for h in fs.sorted_hits():
                if h.finding == _CODE_ERRORS:
                    errors.append(h.to_json() | {"file": path})
        if not errors:
            return absent(_CODE_ERRORS, f"no code-level error in the last {_TAIL_BYTES >> 20} MiB of {len(logs)} app log(s)",
                          logs=logs)
        dated = [(t, e) for e in errors if e["first_ts"] and (t := _local_ts(e["first_ts"])) is not None]
        if not dated:
            return unknown(_CODE_ERRORS, "code-level errors found but their lines carry no time to set against the changes")
        first_ts, first = min(dated, key=lambda x: x[0])
        events = [e for f in changes for e in f.evidence.get("events", [])]
        # Log lines carry whole seconds; an mtime can be up to a second past the line it caused.
        before = [e for e in events if e["ts"] is not None and e["ts"] <= first_ts + 2 and first_ts - e["ts"] <= FOLLOW_S]
        if not events:
            return absent(_CODE_ERRORS, f"code-level errors since {first['first_ts']}, but no recent change to follow",
                          first_error=first)
        if not before:
            return absent(_CODE_ERRORS, f"code-level errors began {first['first_ts']}, not within "
                                        f"{FOLLOW_S // 3600} h after a change", first_error=first)
        cause = max(before, key=lambda e: e["ts"])
        gap = first_ts - cause["ts"]
        return present(
            _CODE_ERRORS,
            f"{first['count']} code error(s) from {first['first_ts']} in {first['file']}, {gap / 60:.0f} min after "
            f"{cause['what']}: {first['example']}",
            first_error=first, change=cause, gap_s=round(gap),
            events=[{"ts": round(first_ts, 3), "when": _iso(first_ts), "kind": "error",
                     "what": f"first {first['signature']} error: {first['example'][:120]}"}],
        )


class _OwnCode:
    """Iterator of (path, mtime) over the app's own code files under ``root``, breadth first,
    skipping ``not_own_code`` folders; ``partial`` once the budget or entry cap cut it short."""

    def __init__(self, ctx: ProbeContext, root: str, end: float, max_entries: int) -> None:
        from prodx.discovery.stack import rules

        self.ctx, self.root, self.end, self.max_entries = ctx, root, end, max_entries
        self.skip = {os.path.join(root, d) for d in rules().get("not_own_code", [])}
        self.suffixes = tuple(rules().get("code_suffixes", []))
        self.entries = 0
        self.partial = False

    def __iter__(self) -> Iterator[tuple[str, float]]:
        queue = [(self.root, 0)]
        while queue:
            path, depth = queue.pop(0)
            try:
                names = self.ctx.host.listdir(path)
            except OSError:
                continue
            for name in names:
                if self.entries >= self.max_entries or time.monotonic() > self.end:
                    self.partial = True
                    return
                child = os.path.join(path, name)
                if child in self.skip or name.startswith("."):
                    continue
                self.entries += 1
                try:
                    st = self.ctx.host.lstat(child)
                except OSError:
                    continue
                if statmod.S_ISDIR(st.st_mode):
                    if depth < _MAX_CODE_DEPTH:
                        queue.append((child, depth + 1))
                elif statmod.S_ISREG(st.st_mode) and name.endswith(self.suffixes):
                    yield child, st.st_mtime



def _natural(name: str) -> tuple[Any, ...]:
    """Sort key for release names: numbers by value (9 before 10), timestamps as they read."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _previous_release(ctx: ProbeContext, root: str) -> str | None:
    """In a release layout (``base/releases/NAME``, often behind ``base/current``), the release
    deployed before the one ``root`` is or points to; None otherwise."""
    path = root
    try:
        if statmod.S_ISLNK(ctx.host.lstat(path).st_mode):
            path = os.path.normpath(os.path.join(os.path.dirname(path), ctx.host.readlink(path)))
    except OSError:
        return None
    parent, name = os.path.split(path)
    if os.path.basename(parent) != "releases":
        return None
    try:
        names = sorted((n for n in ctx.host.listdir(parent) if not n.startswith(".")), key=_natural)
    except OSError:
        return None
    older = [n for n in names if _natural(n) < _natural(name)]
    return os.path.join(parent, older[-1]) if older else None


def _same_content(ctx: ProbeContext, path: str, other: str) -> bool:
    """Whether two regular files hold the same bytes (the first _LOCK_COMPARE_BYTES)."""
    try:
        a, b = ctx.host.stat(path), ctx.host.stat(other)
        if not (statmod.S_ISREG(a.st_mode) and statmod.S_ISREG(b.st_mode)) or a.st_size != b.st_size:
            return False
        return ctx.host.read_bytes(path, _LOCK_COMPARE_BYTES) == ctx.host.read_bytes(other, _LOCK_COMPARE_BYTES)
    except OSError:
        return False


def _code_error_matcher(ctx: ProbeContext) -> Any:
    """A matcher of the code-error signatures alone. Hazard: not the logs probe's shared one:
    a Hyperscan scratch space serves one scan at a time (ScratchInUseError), and both probes
    scan at once."""
    from prodx.scanners.logscan import Matcher, Signature

    def compute() -> Any:
        sigs = [
            Signature(id=s["id"], finding=s["finding"], pattern=s["pattern"], description=s["description"],
                      ignore_case=bool(s.get("ignore_case", False)), examples=tuple(s.get("examples", ())))
            for s in ctx.kb.signatures if s["finding"] == _CODE_ERRORS
        ]
        return Matcher(sigs) if sigs else None

    return ctx.fact("changes.code_error_matcher", compute)


class ConfigTestProbe(Probe):
    """Each running web server's own config test (nginx -t, apachectl -t).

    Hazard: a config test opens every log, temp folder and pid file its config names and
    creates the missing ones. A running server already has them all, so only running
    servers are tested; a stopped one (whose restart may have failed on a broken config) is
    left untested rather than risk writing on the patient.
    """

    name = "changes.config_test"
    findings = ("change.config_invalid",)
    cost = 1.0
    deadline_s = 2.5

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        fid = "change.config_invalid"
        services = [s for s in discovery(ctx).services if s.config_test]
        if not services:
            yield unknown(fid, "no running server whose config prodx can test (nginx, Apache)")
            return
        failed, passed, undecided = [], [], []
        for svc in services:
            r = ctx.host.run(svc.config_test, 1.5)
            text = (r.stderr + r.stdout).strip()
            if r.returncode is None:
                undecided.append(f"{' '.join(svc.config_test)}: {r.error or 'no answer'}")
            elif r.returncode == 0:
                passed.append(svc.config or svc.name)
            elif _lacks_privilege(text) and not ctx.host.is_root:
                undecided.append(f"{svc.name} config test needs root ({_first_error(text)})")
            else:
                failed.append({"service": svc.name, "pid": svc.pid, "config": svc.config,
                               "argv": svc.config_test, "error": _first_error(text)})
        if failed:
            yield present(fid, "; ".join(f"{f['service']} config test fails: {f['error']}" for f in failed),
                          failed=failed, passed=passed)
        elif undecided:
            yield unknown(fid, "; ".join(undecided))
        else:
            yield absent(fid, f"config tests pass: {', '.join(passed)}", passed=passed)


def parse_config_error(text: str) -> str:
    """The line of a config test's output that names the problem.

    >>> parse_config_error('nginx: [emerg] unexpected "}" in /etc/nginx/nginx.conf:12\\nnginx: configuration file /etc/nginx/nginx.conf test failed')
    'nginx: [emerg] unexpected "}" in /etc/nginx/nginx.conf:12'
    >>> parse_config_error("[14-May-2024 03:12:45] ERROR: [/etc/php/8.2/fpm/pool.d/www.conf:3] unknown entry 'usr'\\n[14-May-2024 03:12:45] ERROR: FPM initialization failed")
    "[14-May-2024 03:12:45] ERROR: [/etc/php/8.2/fpm/pool.d/www.conf:3] unknown entry 'usr'"
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for marker in ("[emerg]", "ERROR:", "AH00", "Syntax error", "[alert]", "[crit]", "error"):
        for line in lines:
            if marker in line:
                return line[:300]
    return lines[0][:300] if lines else "failed with no message"


_first_error = parse_config_error


def _lacks_privilege(text: str) -> bool:
    return "Permission denied" in text or "(13:" in text or "Operation not permitted" in text
