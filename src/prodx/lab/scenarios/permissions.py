"""Access faults on a served PHP app: a cache folder recreated by root, a session folder the
app cannot write. The app (nginx + PHP-FPM as its own user, prodx.lab.scenarios.common) runs
before and after the fault; the requests after it fail for real and PHP logs why."""

from __future__ import annotations

import os

from prodx.lab.sandbox import LabError, Sandbox
from prodx.lab.scenarios.common import ServedAppOnLoop

#: A page rendered through a compiled-template cache, written the way Twig's FilesystemCache
#: does (mkdir of the key's folder, tempnam, rename), logging to var/log/prod.log like Monolog.
_HOME_PHP = r"""<?php
$root = dirname(__DIR__);
function app_log(string $root, string $message): void {
    $line = sprintf("[%s] request.CRITICAL: %s [] []\n", date('Y-m-d\TH:i:s.uP'), $message);
    file_put_contents($root . '/var/log/prod.log', $line, FILE_APPEND);
}
$hash = md5('home.html.twig');
$key = "$root/var/cache/prod/twig/" . substr($hash, 0, 2) . "/$hash.php";
if (!is_file($key)) {
    $dir = dirname($key);
    if (!is_dir($dir) && !mkdir($dir, 0777, true) && !is_dir($dir)) {
        $e = new RuntimeException(sprintf('Unable to create the cache directory (%s).', $dir));
        app_log($root, sprintf('Uncaught PHP Exception RuntimeException: "%s" at %s line %d', $e->getMessage(), __FILE__, __LINE__));
        throw $e;
    }
    $tmp = tempnam($dir, basename($key));
    if (false === @file_put_contents($tmp, "<?php return 'Shop home';\n") || !@rename($tmp, $key)) {
        $e = new RuntimeException(sprintf('Failed to write cache file "%s".', $key));
        app_log($root, sprintf('Uncaught PHP Exception RuntimeException: "%s" at %s line %d', $e->getMessage(), __FILE__, __LINE__));
        throw $e;
    }
}
echo include $key;
"""


class CacheOwnedByRoot(ServedAppOnLoop):
    name = "cache-owned-by-root"
    condition = "ownership-changed"
    description = ("a PHP app (nginx + PHP-FPM as its own user) caches compiled templates under "
                   "mnt/app/var/cache/prod; root recreates that folder (0755 root:root) with warmed-up files, "
                   "as `bin/console cache:clear` run as root does; the next requests fail to write the cache")
    symptoms = (
        "right after a deploy or cache clear, pages return 500",
        "the log says 'Permission denied' writing the cache",
        "clearing the cache again as root 'fixes' it for a while",
    )
    pages = {"index.php": _HOME_PHP}

    def setup(self, sb: Sandbox) -> None:
        super().setup(sb)
        status, body = self.get("/index.php")
        if status != 200 or "Shop home" not in body:
            raise LabError(f"the healthy app answers {status}: {body[:200]!r}; see {self.web.logs}")
        self.injected.append(f"nginx on http://127.0.0.1:{self.web.port}/ and PHP-FPM as {self.user.name}; "
                             "the home page answered 200 and cached its template")

    def inject(self, sb: Sandbox) -> None:
        cache = self.app / "var/cache"
        # What `rm -rf var/cache/prod && bin/console cache:warmup` as root leaves behind.
        sb.run(["rm", "-rf", "--one-file-system", str(sb.check(cache / "prod"))])
        prod = sb.mkdirs(cache / "prod", mode=0o755)
        for sub in ("pools", "twig", "doctrine"):
            sb.mkdirs(prod / sub, mode=0o755)
        sb.write_text(prod / "App_KernelProdContainer.php", "<?php // container dumped by cache:warmup\n")
        self.injected.append(f"root recreated {prod} (0755 root:root) with pools/, twig/, doctrine/ and the "
                             f"container; {self.user.name} cannot write there")
        codes = [self.get("/index.php")[0] for _ in range(3)]
        if codes != [500, 500, 500]:
            raise LabError(f"the home page did not fail after the fault: {codes}")
        self.injected.append(f"the next requests answer {codes}; PHP logged why to {self.web.php_error_log} "
                             f"and the app to {self.log}")


class PermissionDenied(ServedAppOnLoop):
    name = "permission-denied"
    condition = "permission-denied"
    description = ("a PHP app (nginx + PHP-FPM as its own user) keeps its sessions in mnt/app/var/sessions; the "
                   "folder gets mode 0555, so its own user can no longer create session files; logins stop taking")
    symptoms = (
        "logins silently fail: the session is never saved",
        "the log says 'Permission denied' for the session folder",
    )

    def setup(self, sb: Sandbox) -> None:
        super().setup(sb)
        if not self.web.login("alice").logged_in:
            raise LabError(f"the healthy app does not keep a login; see {self.web.logs}")
        self.injected.append(f"nginx on http://127.0.0.1:{self.web.port}/ and PHP-FPM as {self.user.name}; "
                             "a login worked before the fault")

    def inject(self, sb: Sandbox) -> None:
        sessions = sb.check(self.app / "var/sessions")
        os.chmod(sessions, 0o555)
        self.injected.append(f"chmod 0555 {sessions} (owner {self.user.name}): no one but root may create files there")
        seen = self.web.login("bob")
        if seen.logged_in:
            raise LabError("a login still took after the fault")
        self.injected.append(f"a login now shows the login form again (POST {seen.login_status}, "
                             f"account page {seen.account_status}); PHP logged why to {self.web.php_error_log}")
