"""Whether a user may traverse and write a path, judged from owners and mode bits.

Pure functions of ``stat`` results. POSIX ACLs, SELinux/AppArmor and capabilities are not
considered: a "may write" here can still be refused by them (the write test tells).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from prodx.host.base import Host, UserInfo


@dataclass(frozen=True)
class Denial:
    """The first path component that stops ``user``, and why."""

    path: str
    owner: str
    group: str
    mode: str  # e.g. "drwxr-xr-x"
    missing: str  # "search (x)" or "write (w)"

    def describe(self, user: str) -> str:
        return f"{self.path} is {self.mode} {self.owner}:{self.group}, so {user} lacks {self.missing}"


def allows(st: os.stat_result, user: UserInfo, want: int) -> bool:
    """Whether mode bits grant ``want`` (a mask of 4=r, 2=w, 1=x) to ``user``.

    >>> import os
    >>> st = os.stat_result((0o40755, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    >>> allows(st, UserInfo("www-data", 33, 33, (33,)), 2)
    False
    """
    if user.uid == 0:
        return True
    mode = st.st_mode
    if st.st_uid == user.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in user.groups or st.st_gid == user.gid:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def first_denial(host: Host, directory: str, user: UserInfo) -> Denial | None:
    """Walk from / to ``directory``: the first component ``user`` cannot search, or the
    directory itself if they cannot write it. None when mode bits allow the write or a
    component cannot be stat-ed (it vanished)."""
    parts = os.path.normpath(directory).split("/")
    path = ""
    for i, part in enumerate(parts):
        path = "/" if i == 0 else (path.rstrip("/") + "/" + part)
        try:
            st = host.stat(path)
        except OSError:
            return None
        last = i == len(parts) - 1
        lacking = [name for bit, name in ((2, "write (w)"), (1, "search (x)")) if (last or bit == 1) and not allows(st, user, bit)]
        if lacking:
            return Denial(
                path, host.user_name(st.st_uid), host.group_name(st.st_gid), stat.filemode(st.st_mode), " and ".join(lacking)
            )
    return None
