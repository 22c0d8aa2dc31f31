"""Benchmark: `prodx diagnose` wall time and peak RSS on this host, against the targets.

Runs the real command (default probes, JSON to /dev/null) N times after one warm-up and
prints the median and worst wall time and the peak resident set size, with the ratio to
the issue's targets (median ≤ 1.0 s, peak RSS ≤ 80 MB). Pass extra diagnose arguments after
``--``, e.g. ``python bench/diagnose.py -- --profile lab.toml``.

``--with-stack`` (root) first starts a private web stack as the lab does — nginx + PHP-FPM
serving a Symfony-like app, PostgreSQL and Redis, all from Debian packages on 127.0.0.1 —
so discovery and every probe have real services to examine, and stops it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time

TARGET_MEDIAN_S = 1.0
TARGET_RSS_MB = 80.0


def run_once(extra: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `prodx diagnose` run."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prodx", "diagnose", "--json", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"prodx diagnose exited {code}")
    return wall, usage.ru_maxrss / 1024


@contextlib.contextmanager
def web_stack():
    """nginx + PHP-FPM + PostgreSQL + Redis, private to a lab sandbox, torn down on exit."""
    from prodx.lab.sandbox import Sandbox
    from prodx.lab.services import postgres, redis
    from prodx.lab.webstack import WebStack

    sb = Sandbox("bench-stack")
    try:
        user = sb.add_user()
        app = sb.mkdirs("srv/shop", owner=user)
        for d in ("var/cache", "var/log", "public"):
            sb.mkdirs(app / d, owner=user)
        sb.write_text(app / "composer.lock", "{}\n")
        WebStack(sb, user, app / "public", sb.mkdirs("sessions", owner=user)).start()
        with postgres(sandbox=sb), redis(sandbox=sb):
            yield
    finally:
        sb.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=15)
    parser.add_argument("--with-stack", action="store_true", help="start nginx, PHP-FPM, PostgreSQL, Redis first (root)")
    parser.add_argument("extra", nargs="*", help="arguments passed to prodx diagnose")
    args = parser.parse_args()
    with web_stack() if args.with_stack else contextlib.nullcontext():
        run_once(args.extra)  # warm the page cache and the KB files
        samples = [run_once(args.extra) for _ in range(args.runs)]
    walls = [w for w, _ in samples]
    rss = max(r for _, r in samples)
    median = statistics.median(walls)
    stack = " with nginx + PHP-FPM + PostgreSQL + Redis running" if args.with_stack else ""
    print(f"prodx diagnose, {args.runs} runs on {os.uname().nodename} ({os.cpu_count()} cores){stack}")
    print(f"  median wall {median:.3f} s  (worst {max(walls):.3f} s)   target {TARGET_MEDIAN_S:.1f} s   target/measured {TARGET_MEDIAN_S / median:.2f}")
    print(f"  peak RSS    {rss:.1f} MB                      target {TARGET_RSS_MB:.0f} MB    target/measured {TARGET_RSS_MB / rss:.2f}")


if __name__ == "__main__":
    main()
