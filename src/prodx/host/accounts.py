"""Users and groups from the host's own /etc/passwd and /etc/group, never the local NSS.

Reads ``/etc/passwd`` lines such as ``www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin``
and ``/etc/group`` lines such as ``adm:x:4:syslog,alice``. Accounts kept only in LDAP or
sssd are not seen; an unknown user gives None, not a guess.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prodx.host.base import Host, UserInfo


def parse_passwd(text: str) -> list[tuple[str, int, int]]:
    """(name, uid, gid) per well-formed line.

    >>> parse_passwd("root:x:0:0:root:/root:/bin/bash\\nbroken\\n")
    [('root', 0, 0)]
    """
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            out.append((parts[0], int(parts[2]), int(parts[3])))
    return out


def parse_group(text: str) -> list[tuple[str, int, tuple[str, ...]]]:
    """(name, gid, members) per well-formed line.

    >>> parse_group("adm:x:4:syslog,alice\\n")
    [('adm', 4, ('syslog', 'alice'))]
    """
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[2].isdigit():
            members = tuple(m for m in parts[3].split(",") if m)
            out.append((parts[0], int(parts[2]), members))
    return out


def _read(host: Host, path: str) -> str:
    try:
        return host.read_text(path)
    except OSError:
        return ""


def lookup_user(host: Host, name_or_uid: str | int) -> UserInfo | None:
    """The account named (or numbered) ``name_or_uid`` with its supplementary groups."""
    from prodx.host.base import UserInfo

    key = str(name_or_uid)
    for name, uid, gid in parse_passwd(_read(host, "/etc/passwd")):
        if key in (name, str(uid)):
            groups = {gid}
            for _gname, ggid, members in parse_group(_read(host, "/etc/group")):
                if name in members:
                    groups.add(ggid)
            return UserInfo(name, uid, gid, tuple(sorted(groups)))
    return None


def group_name(host: Host, gid: int) -> str:
    """The group's name, or the number as text when the host does not know it."""
    for name, ggid, _members in parse_group(_read(host, "/etc/group")):
        if ggid == gid:
            return name
    return str(gid)
