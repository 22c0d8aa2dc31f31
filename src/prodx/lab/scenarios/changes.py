"""Changes that break a working site: a config edit nginx cannot parse, a dependency update
the app's code no longer fits, and a deploy of broken code. All on a real nginx + PHP-FPM
(prodx.lab.webstack); the healthy system is days old (the lab backdates it), the change new.

What is real and what is simulated:

- ``bad-config-change``: all real. nginx.conf is edited with a missing semicolon and the
  reload runs the way Debian's unit does (``nginx -s reload``); it fails with ``[emerg]`` and
  the old configuration keeps serving, so the edit never took effect.
- ``dependency-regression``: the app is a git checkout committed days ago with a vendored
  library (``acme/greeter`` 1.0) and its ``composer.lock``. The update is simulated: prodx
  writes what ``composer update`` would (the 2.0 library whose API renamed ``greet()``, a new
  composer.lock and vendor/composer/installed.json) because there is no composer nor network
  here. Everything after it is real: requests through nginx run the code, PHP logs
  "Call to undefined method" fatal errors and the page answers 500.
- ``bad-deploy``: all real. The team's repository is a bare git repository in the sandbox; a
  commit of the app's own code (a method gains an argument, its caller is missed) is pushed
  there and deployed by ``git pull --ff-only`` in the checkout, as the app's user. PHP logs
  "Too few arguments" (ArgumentCountError) fatal errors; composer.lock and vendor/ stay as
  they were.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox
from prodx.lab.webstack import WebStack, webstack_unmet

_USER_COMMANDS = (("useradd", "passwd"), ("userdel", "passwd"))


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


class _WebApp(Scenario):
    """A Symfony-shaped app in ``srv/shop`` served by a private nginx + PHP-FPM."""

    def start_stack(self, sb: Sandbox) -> None:
        self.user = sb.add_user()
        self.app = sb.mkdirs("srv/shop", owner=self.user)
        for d in ("public", "var/cache", "var/log", "var/sessions"):
            sb.mkdirs(self.app / d, owner=self.user)
        self.web = WebStack(sb, self.user, self.app / "public", self.app / "var/sessions")
        self.web.start()

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user=self.user.name,
                            writable=[str(self.app / d) for d in ("var/cache", "var/log", "var/sessions")],
                            logs=self.web.logs, services=self.web.service_names)


class BadConfigChange(_WebApp):
    name = "bad-config-change"
    condition = "config-error"
    description = ("a private nginx + PHP-FPM serve the app; someone adds a location to nginx.conf, forgets a "
                   "semicolon, and reloads: the reload fails with [emerg] and the edit never takes effect")
    symptoms = (
        "the change someone just made to the site's nginx config 'does nothing'",
        "`nginx -s reload` printed an [emerg] error, or nobody looked at its output",
        "the next restart will take the site down",
    )
    needs = Needs(commands=_USER_COMMANDS, kernel=(), check=webstack_unmet)

    def setup(self, sb: Sandbox) -> None:
        self.start_stack(sb)
        status, _ = _get(self.web.port, "/login.php")
        if status != 200:
            raise LabError(f"the healthy web stack answers {status} on /login.php")
        self.injected.append(f"nginx on http://127.0.0.1:{self.web.port}/ and PHP-FPM as {self.user.name}; "
                             "/login.php answered 200")

    def inject(self, sb: Sandbox) -> None:
        conf = sb.path("nginx/nginx.conf")
        text = conf.read_text()
        edited = text.replace("        index login.php;\n",
                              "        index login.php;\n        location /status { return 200 'ok' }\n", 1)
        if edited == text:
            raise LabError(f"cannot find where to edit {conf}")
        sb.write_text(conf, edited)
        prefix = sb.path("nginx")
        reload = sb.run([self.web.nginx, "-p", f"{prefix}/", "-c", str(conf), "-s", "reload"], check=False)
        said = (reload.stderr or reload.stdout).strip().splitlines()
        if reload.returncode == 0 or not said or "[emerg]" not in said[0]:
            raise LabError(f"the reload did not fail as expected: {reload.returncode} {said}")
        self.injected.append(f"edited {conf} (a location without its ';'); `nginx -s reload` failed: {said[0]}")
        status, _ = _get(self.web.port, "/status")
        self.injected.append(f"the old config still serves: /status answers {status}, not the new 'ok'")


_GREETER_V1 = """<?php
namespace Acme;
final class Greeter {
    public function greet(string $name): string { return "Hello, $name"; }
}
"""
#: 2.0 renamed the method: the app's call breaks (a real-world API break in a major release).
_GREETER_V2 = """<?php
namespace Acme;
final class Greeter {
    public function hello(string $name): string { return "Hello, $name"; }
}
"""
_AUTOLOAD = """<?php
spl_autoload_register(function ($class) {
    if ($class === 'Acme\\\\Greeter') { require __DIR__ . '/acme/greeter/src/Greeter.php'; }
});
"""
_PAGE = """<?php
require __DIR__ . '/../vendor/autoload.php';
require __DIR__ . '/../src/Price.php';
echo (new Acme\\Greeter())->greet('shop') . ', today ' . App\\Price::format(1999) . "\\n";
"""
_PRICE_V1 = """<?php
namespace App;
final class Price {
    public static function format(int $cents): string { return sprintf('%d.%02d EUR', intdiv($cents, 100), $cents % 100); }
}
"""
#: Release 1.9 adds a currency argument and misses the caller in public/shop.php.
_PRICE_V2 = """<?php
namespace App;
final class Price {
    public static function format(int $cents, string $currency): string {
        return sprintf('%d.%02d %s', intdiv($cents, 100), $cents % 100, $currency);
    }
}
"""


def _lock(version: str) -> str:
    return json.dumps({"packages": [{"name": "acme/greeter", "version": version}], "content-hash": version}, indent=4) + "\n"


class _ShopApp(_WebApp):
    """The shop: a git checkout of the app's own code (public/, src/) with a vendored
    library (acme/greeter 1.0, composer.lock), deployed days ago, behind nginx + PHP-FPM."""

    needs = Needs(commands=(*_USER_COMMANDS, ("git", "git")), kernel=(), check=webstack_unmet)

    def setup(self, sb: Sandbox) -> None:
        self.start_stack(sb)
        u, app = self.user, self.app
        for d in ("bin", "src", "vendor/acme/greeter/src", "vendor/composer"):
            sb.mkdirs(app / d, owner=u)
        sb.write_text(app / "bin/console", "#!/usr/bin/env php\n<?php // Symfony-style entry point\n", owner=u)
        sb.write_text(app / "vendor/acme/greeter/src/Greeter.php", _GREETER_V1, owner=u)
        sb.write_text(app / "vendor/autoload.php", _AUTOLOAD, owner=u)
        sb.write_text(app / "vendor/composer/installed.json", _lock("1.0.0"), owner=u)
        sb.write_text(app / "composer.lock", _lock("1.0.0"), owner=u)
        sb.write_text(app / "src/Price.php", _PRICE_V1, owner=u)
        sb.write_text(app / "public/shop.php", _PAGE, owner=u)
        sb.write_text(app / ".gitignore", "/vendor/\n/var/\n", owner=u)
        for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "Release 1.8"]):
            sb.git(app, *argv, user=u)
        status, body = _get(self.web.port, "/shop.php")
        if status != 200 or "Hello, shop, today 19.99 EUR" not in body:
            raise LabError(f"the healthy shop page answers {status}: {body[:200]!r}; see {self.web.logs}")
        self.injected.append(f"shop page http://127.0.0.1:{self.web.port}/shop.php answered 200 "
                             "with acme/greeter 1.0 (git checkout committed 6 days ago)")

    def wait_broken(self, marker: str) -> None:
        """Wait until the shop page answers 500 three times and PHP logged ``marker``."""
        # OPcache checks a script's mtime at most every opcache.revalidate_freq (2 s by default)
        # per worker: the old code runs a little longer, as on a real host.
        deadline = time.monotonic() + 15
        codes: list[int] = []
        while time.monotonic() < deadline and codes[-3:] != [500, 500, 500]:
            time.sleep(0.5)
            codes.append(_get(self.web.port, "/shop.php")[0])
        if codes[-3:] != [500, 500, 500]:
            raise LabError(f"the shop page did not break: {codes}")
        errors = [line for line in Path(self.web.php_error_log).read_text(errors="replace").splitlines()
                  if marker in line]
        if not errors:
            raise LabError(f"PHP logged no {marker!r} in {self.web.php_error_log}")
        self.injected.append(f"the shop page now answers {codes[-3:]}; PHP logged {len(errors)} fatal error(s): "
                             f"{errors[0][:160]}")


class DependencyRegression(_ShopApp):
    name = "dependency-regression"
    condition = "dependency-regression"
    description = ("the shop app (a git checkout deployed 6 days ago) uses acme/greeter 1.0; an update brings "
                   "2.0 (simulated: the files composer would write), whose API renamed greet(); PHP fatal errors "
                   "begin at the next request")
    symptoms = (
        "the shop page returns 500 since someone ran composer update",
        "the PHP error log says 'Call to undefined method Acme\\Greeter::greet()'",
        "nobody deployed new code",
    )

    def inject(self, sb: Sandbox) -> None:
        u, app = self.user, self.app
        sb.write_text(app / "vendor/acme/greeter/src/Greeter.php", _GREETER_V2, owner=u)
        sb.write_text(app / "vendor/composer/installed.json", _lock("2.0.0"), owner=u)
        sb.write_text(app / "composer.lock", _lock("2.0.0"), owner=u)
        self.injected.append("simulated `composer update`: acme/greeter 1.0.0 → 2.0.0 (composer.lock, vendor/) just now")
        self.wait_broken("Call to undefined method")


class BadDeploy(_ShopApp):
    name = "bad-deploy"
    condition = "bad-deploy"
    description = ("the shop app is a git checkout deployed 6 days ago; release 1.9 is committed upstream with "
                   "App\\Price::format() taking a new currency argument but its caller left unchanged, and "
                   "deployed by `git pull` in place as the app's user: PHP fatal errors (ArgumentCountError) "
                   "begin at the next request; composer.lock and vendor/ are untouched")
    symptoms = (
        "the shop page returns 500 right after the deploy",
        "the PHP error log says 'Too few arguments to function App\\Price::format()'",
        "restarting PHP-FPM does not help",
    )

    def setup(self, sb: Sandbox) -> None:
        super().setup(sb)
        # The team's repository, which the server pulls from.
        self.origin = sb.path("git/shop.git")
        sb.mkdirs(self.origin.parent, owner=self.user)
        sb.git(sb.root, "clone", "-q", "--bare", str(self.app), str(self.origin), user=self.user)
        sb.git(self.app, "remote", "add", "origin", str(self.origin), user=self.user)
        sb.git(self.app, "fetch", "-q", "origin", user=self.user)
        sb.git(self.app, "branch", "-q", "--set-upstream-to=origin/main", user=self.user)

    def inject(self, sb: Sandbox) -> None:
        u = self.user
        work = sb.path("git/work")
        sb.git(sb.root, "clone", "-q", str(self.origin), str(work), user=u)
        sb.write_text(work / "src/Price.php", _PRICE_V2, owner=u)
        sb.git(work, "commit", "-q", "-am", "Release 1.9: prices carry their currency", user=u)
        sb.git(work, "push", "-q", "origin", "main", user=u)
        pulled = sb.git(self.app, "pull", "--ff-only", user=u)
        head = sb.git(self.app, "log", "-1", "--format=%h %s", user=u).stdout.strip()
        self.injected.append(f"deployed by `git pull --ff-only` in {self.app}: HEAD is now {head} "
                             f"({(pulled.stdout.strip().splitlines() or ['fast-forward'])[-1].strip()}); "
                             "composer.lock and vendor/ unchanged")
        self.wait_broken("ArgumentCountError")
