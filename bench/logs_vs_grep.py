"""Benchmark: `prodx logs` against `LC_ALL=C grep -c -E -f patterns` on the same log.

Generates (once, cached in bench/.data/) a realistic log of --size-mb MiB: mixed nginx
access/error, PHP-FPM, Monolog, syslog and PostgreSQL lines, about 0.1 % of them matching
a signature. Writes the catalogue's patterns to a grep patterns file (the same regexes),
then times, median of --runs:

    grep            LC_ALL=C grep -c -E -f patterns FILE
    prodx logs      the CLI as a user runs it (python start-up + compile + scan)
    scan_file hs    scan_file() in-process, Hyperscan backend
    scan_file re    scan_file() in-process, `re` fallback, on a --re-slice-mb slice,
                    extrapolated linearly to the full size (labelled as such)

Ratios are grep_time / prodx_time: above 1.0 means prodx is faster.

Usage:
    python bench/logs_vs_grep.py [--size-mb 1024] [--runs 3] [--re-slice-mb 50]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from prodx.scanners.logscan import Matcher, load_signatures, scan_file

DATA_DIR = Path(__file__).resolve().parent / ".data"

_PATHS = ["/", "/login", "/register", "/api/v1/orders", "/static/app.3f9a.js", "/cart",
          "/product/1234", "/search?q=shoes", "/favicon.ico", "/admin/reports"]
_AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0",
           "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15",
           "curl/8.5.0", "Googlebot/2.1 (+http://www.google.com/bot.html)"]


def _ordinary_line(rng: random.Random) -> str:
    ip = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    d, h, m, s = rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    kind = rng.random()
    if kind < 0.70:
        return (f'{ip} - - [{d:02d}/Mar/2024:{h:02d}:{m:02d}:{s:02d} +0000] "GET '
                f'{rng.choice(_PATHS)} HTTP/1.1" {rng.choice([200, 200, 200, 304, 302, 404])} '
                f'{rng.randint(200, 90000)} "-" "{rng.choice(_AGENTS)}"')
    if kind < 0.80:
        return (f"[2024-03-{d:02d}T{h:02d}:{m:02d}:{s:02d}.{rng.randint(0, 999999):06d}+00:00] "
                f"app.INFO: order {rng.randint(1, 10**6)} placed by user {rng.randint(1, 10**5)} "
                f'{{"cart_items":{rng.randint(1, 9)},"total":"{rng.randint(1, 999)}.99"}} []')
    if kind < 0.88:
        return (f"[{d:02d}-Mar-2024 {h:02d}:{m:02d}:{s:02d}] NOTICE: [pool www] child "
                f"{rng.randint(1000, 99999)} started")
    if kind < 0.94:
        return (f"Mar {d:2d} {h:02d}:{m:02d}:{s:02d} web1 CRON[{rng.randint(1000, 99999)}]: "
                f"(www-data) CMD (php /var/www/app/bin/console app:queue:work --once)")
    if kind < 0.98:
        return (f"2024-03-{d:02d} {h:02d}:{m:02d}:{s:02d}.{rng.randint(0, 999):03d} UTC "
                f"[{rng.randint(100, 9999)}] LOG:  duration: {rng.random() * 900:.3f} ms  "
                f"statement: SELECT id, email FROM users WHERE id = {rng.randint(1, 10**5)}")
    return (f"2024/03/{d:02d} {h:02d}:{m:02d}:{s:02d} [warn] {rng.randint(100, 9999)}#0: "
            f"*{rng.randint(1, 10**6)} a client request body is buffered to a temporary file "
            f"/var/lib/nginx/body/{rng.randint(0, 10**9):010d}, client: {ip}")


def generate(path: Path, size_mb: int, seed: int = 7) -> None:
    """Write a log of about ``size_mb`` MiB to ``path`` (atomically)."""
    rng = random.Random(seed)
    examples = [e.encode() for s in load_signatures() for e in s.examples]
    pool = [_ordinary_line(rng).encode() for _ in range(200_000)]
    weights = None
    target = size_mb << 20
    tmp = path.with_suffix(".tmp")
    written = 0
    with open(tmp, "wb") as out:
        while written < target:
            lines = rng.choices(pool, weights, k=6000)
            for i in rng.sample(range(len(lines)), 6):     # ~0.1 % signature lines
                lines[i] = rng.choice(examples)
            block = b"\n".join(lines) + b"\n"
            out.write(block)
            written += len(block)
    os.replace(tmp, path)


def to_posix_ere(pattern: str, ignore_case: bool) -> str:
    """The pattern for grep -E: the catalogue dialect is already ERE; case-folding for an
    ``ignore_case`` signature is spelled out as ``[aA]`` outside brackets."""
    if not ignore_case:
        return pattern
    out, in_class, escaped = [], False, False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif ch == "]":
            in_class = False
            out.append(ch)
        elif ch.isalpha() and not in_class:
            out.append(f"[{ch.lower()}{ch.upper()}]")
        else:
            out.append(ch)
    return "".join(out)


def _median_s(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--re-slice-mb", type=int, default=50)
    args = ap.parse_args()

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log = DATA_DIR / f"mixed-{args.size_mb}mb.log"
    if not log.exists():
        print(f"generating {log} ...", file=sys.stderr)
        generate(log, args.size_mb)
    sigs = load_signatures()
    patterns = DATA_DIR / "patterns.ere"
    patterns.write_text("".join(to_posix_ere(s.pattern, s.ignore_case) + "\n" for s in sigs))
    size_mb = log.stat().st_size / (1 << 20)

    # Warm the page cache so every contender reads from memory.
    subprocess.run(["cat", str(log)], stdout=subprocess.DEVNULL, check=True)
    env = {**os.environ, "LC_ALL": "C"}
    grep_out = []

    def run_grep() -> None:
        r = subprocess.run(["grep", "-c", "-E", "-f", str(patterns), str(log)],
                           env=env, capture_output=True, text=True)
        grep_out.append(r.stdout.strip())

    def run_cli() -> None:
        subprocess.run([sys.executable, "-m", "prodx", "logs", "--json", str(log)],
                       stdout=subprocess.DEVNULL, check=True)

    hs_matcher = Matcher(sigs, backend="hyperscan")
    re_matcher = Matcher(sigs, backend="re")
    hs_result = []

    def run_hs() -> None:
        hs_result.append(scan_file(log, hs_matcher))

    grep_s = _median_s(run_grep, args.runs)
    cli_s = _median_s(run_cli, args.runs)
    hs_s = _median_s(run_hs, args.runs)

    slice_path = DATA_DIR / f"slice-{args.re_slice_mb}mb.log"
    if not slice_path.exists() or slice_path.stat().st_size != min(args.re_slice_mb << 20, log.stat().st_size):
        with open(log, "rb") as src, open(slice_path, "wb") as dst:
            dst.write(src.read(args.re_slice_mb << 20))
    slice_mb = slice_path.stat().st_size / (1 << 20)
    re_slice_s = _median_s(lambda: scan_file(slice_path, re_matcher), args.runs)
    re_s = re_slice_s * size_mb / slice_mb

    fs = hs_result[-1]
    matched_lines = sum(h.count for h in fs.hits.values())
    print(f"file: {log} ({size_mb:.0f} MiB, {fs.lines} lines), {len(sigs)} signatures")
    print(f"grep -c matching lines: {grep_out[-1]}; prodx matches (line x signature): "
          f"{matched_lines} in {len(fs.hits)} signatures")
    print(f"{'contender':<34}{'median s':>10}{'grep/prodx':>12}")
    print(f"{'LC_ALL=C grep -c -E -f patterns':<34}{grep_s:>10.2f}{'':>12}")
    print(f"{'prodx logs --json (CLI, hyperscan)':<34}{cli_s:>10.2f}{grep_s / cli_s:>12.2f}")
    print(f"{'scan_file (hyperscan)':<34}{hs_s:>10.2f}{grep_s / hs_s:>12.2f}")
    print(f"{'scan_file (re), extrapolated':<34}{re_s:>10.2f}{grep_s / re_s:>12.2f}"
          f"   (measured {re_slice_s:.2f} s on a {slice_mb:.0f} MiB slice)")


if __name__ == "__main__":
    main()
