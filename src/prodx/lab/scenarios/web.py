"""A real web stack (nginx + PHP-FPM) whose session store runs out of inodes."""

from __future__ import annotations

from prodx.lab.framework import LOOP_COMMANDS, Needs, profile_toml
from prodx.lab.sandbox import LabError, Sandbox
from prodx.lab.scenarios.common import AppOnLoop, fill
from prodx.lab.webstack import LoginResult, WebStack, webstack_unmet


class WebstackSessionsFull(AppOnLoop):
    name = "webstack-sessions-full"
    condition = "session-store-full"
    accept = ("inode-exhaustion",)
    description = ("nginx + PHP-FPM (own configs in the sandbox, as the app user) keep PHP sessions in "
                   "mnt/app/var/sessions on an ext4 with 2048 inodes; sess_* files pile up (Debian's PHP "
                   "session GC is off) until no inode is left")
    symptoms = (
        "logins silently fail: after 'Log in' the login form comes back, no error shown",
        "the PHP error log says 'Failed to read/write session data' and 'No space left on device'",
        "df -h shows the disk mostly free",
    )
    mkfs_args = ("-N", "2048")
    needs = Needs(commands=LOOP_COMMANDS, check=webstack_unmet)

    def setup(self, sb: Sandbox) -> None:
        super().setup(sb)
        self.web = WebStack(sb, self.user, self.app / "public", self.app / "var/sessions")
        self.web.start()
        healthy = self.web.login("alice")
        if not healthy.logged_in:
            raise LabError(f"the healthy web stack does not keep a login: {healthy}; see {self.web.logs}")
        self.injected.append(f"nginx on http://127.0.0.1:{self.web.port}/login.php and PHP-FPM as "
                             f"{self.user.name}; a login worked before the fault")

    def inject(self, sb: Sandbox) -> None:
        sessions = self.app / "var/sessions"
        r = fill(sb, "files", sessions, "sess_", user=self.user)
        self.injected.append(f"{self.user.name} created {r['files']} session files in {sessions} until {r['errno']}")
        seen = self.verify_symptom()
        self.injected.append(f"after the fault a login shows {'logged in' if seen.logged_in else 'the login form again'} "
                             f"(POST {seen.login_status}, account page {seen.account_status})")

    def verify_symptom(self) -> LoginResult:
        """Log in through nginx like a browser; the session should be lost now."""
        return self.web.login("bob")

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user=self.user.name,
                            writable=[str(self.app / d) for d in ("var/cache", "var/sessions", "var/log")],
                            logs=[str(self.log), *self.web.logs], services=self.web.service_names)
