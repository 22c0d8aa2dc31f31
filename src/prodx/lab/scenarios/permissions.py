"""Access faults: a cache folder recreated by root, an app folder the app cannot write."""

from __future__ import annotations

import os

from prodx.lab.sandbox import Sandbox
from prodx.lab.scenarios.common import AppOnLoop, fill


class CacheOwnedByRoot(AppOnLoop):
    name = "cache-owned-by-root"
    condition = "ownership-changed"
    description = ("mnt/app/var/cache/prod is recreated by root (0755 root:root) with warmed-up files, "
                   "as `bin/console cache:clear` run as root does, while the app runs as its own user")
    symptoms = (
        "right after a deploy or cache clear, pages return 500",
        "the log says 'Permission denied' writing the cache",
        "clearing the cache again as root 'fixes' it for a while",
    )
    visible_without_profile = False

    def inject(self, sb: Sandbox) -> None:
        prod = sb.mkdirs(self.app / "var/cache/prod", mode=0o755)
        for sub in ("pools", "twig", "doctrine"):
            sb.mkdirs(prod / sub, mode=0o755)
        sb.write_text(prod / "App_KernelProdContainer.php", "<?php // container dumped by cache:warmup\n")
        self.injected.append(f"root recreated {prod} (0755 root:root) with pools/, twig/, doctrine/ and the "
                             f"container; {self.user.name} cannot write there")
        r = fill(sb, "appcache", prod, self.log, user=self.user)
        self.injected.append(f"the app's next request, as {self.user.name}, failed to write its cache with "
                             f"{r['errno']} and logged it to {self.log}")


class PermissionDenied(AppOnLoop):
    name = "permission-denied"
    condition = "permission-denied"
    description = "the app's session folder mnt/app/var/sessions gets mode 0555: its own user can no longer write it"
    symptoms = (
        "logins silently fail: the session is never saved",
        "the log says 'Permission denied' for the session folder",
    )
    visible_without_profile = False

    def inject(self, sb: Sandbox) -> None:
        sessions = sb.check(self.app / "var/sessions")
        os.chmod(sessions, 0o555)
        self.injected.append(f"chmod 0555 {sessions} (owner {self.user.name}): no one but root may create files there")
