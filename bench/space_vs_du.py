"""Benchmark: prodx space scanner against GNU du on the same tree, warm cache.

Builds once (cached under bench/.data/, gitignored) a tree of N small files of varying sizes
in nested directories, then times, median of 5 runs each:

    du -s TREE            vs  scan(TREE, mode=BYTES)
    du --inodes -s TREE   vs  scan(TREE, mode=INODES)

and prints ratios du_time / prodx_time (above 1.0 means prodx is faster). Also checks that
both tools report the same totals.

Usage:
    python bench/space_vs_du.py                 # 1,000,000 files (builds in a minute or two)
    python bench/space_vs_du.py --files 20000   # quick run
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from prodx.scanners.space import Backend, ScanMode, _fastscan, scan

DATA_DIR = Path(__file__).resolve().parent / ".data"
RUNS = 5
TOP_DIRS = 16
# Sizes of small files as seen on web servers: sessions, cache entries, thumbnails, logs.
SIZES_BYTES = [0, 60, 300, 900, 2_000, 3_500, 5_000, 9_000, 15_000, 40_000]
SIZE_WEIGHTS = [3, 20, 25, 20, 12, 8, 5, 4, 2, 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="files in the tree")
    parser.add_argument("--runs", type=int, default=RUNS, help="timed runs per tool")
    args = parser.parse_args()

    tree = build_tree(args.files)
    print(f"tree: {tree} ({args.files:,} files); C walker built: {_fastscan is not None}")
    print("warming the cache ...", flush=True)
    for _ in range(2):
        subprocess.run(["du", "-s", str(tree)], check=True, stdout=subprocess.DEVNULL)
        scan(str(tree), mode=ScanMode.BYTES, deadline_s=600)

    du_bytes_s, du_out = time_du(["du", "-s", "--block-size=1", str(tree)], args.runs)
    du_inodes_s, du_inodes_out = time_du(["du", "--inodes", "-s", str(tree)], args.runs)
    rows = [("du -s", du_bytes_s, None), ("du --inodes -s", du_inodes_s, None)]
    results = {}
    backends = [Backend.C, Backend.PYTHON] if _fastscan is not None else [Backend.PYTHON]
    for backend in backends:
        for mode, du_s in ((ScanMode.BYTES, du_bytes_s), (ScanMode.INODES, du_inodes_s)):
            seconds, report = time_scan(tree, mode, backend, args.runs)
            results[(backend, mode)] = report
            rows.append((f"prodx scan {mode.value} ({backend.value})", seconds, du_s / seconds))

    print()
    print(f"{'tool':<28} {'median s':>9} {'du/prodx':>9}")
    for name, seconds, ratio in rows:
        print(f"{name:<28} {seconds:9.3f} {'' if ratio is None else f'{ratio:9.2f}':>9}")

    print()
    fast = results[(backends[0], ScanMode.BYTES)]
    fast_inodes = results[(backends[0], ScanMode.INODES)]
    print(f"totals: du {du_out:,} B / prodx {fast.total_bytes:,} B; "
          f"du {du_inodes_out:,} inodes / prodx {fast_inodes.total_inodes:,} inodes")
    same = du_out == fast.total_bytes and du_inodes_out == fast_inodes.total_inodes
    print("totals match du" if same else "TOTALS DIFFER FROM du")
    return 0 if same else 1


def time_du(argv: list[str], runs: int) -> tuple[float, int]:
    """Median wall time of `argv` and the number it printed."""
    times = []
    output = ""
    for _ in range(runs):
        started = time.perf_counter()
        output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        times.append(time.perf_counter() - started)
    return statistics.median(times), int(output.split()[0])


def time_scan(tree: Path, mode: ScanMode, backend: Backend, runs: int):
    times = []
    report = None
    for _ in range(runs):
        started = time.perf_counter()
        report = scan(str(tree), mode=mode, backend=backend, deadline_s=600)
        times.append(time.perf_counter() - started)
    return statistics.median(times), report


def build_tree(files: int) -> Path:
    """The cached tree for `files` files, built in parallel when missing."""
    tree = DATA_DIR / f"tree-{files}"
    done_marker = DATA_DIR / f"tree-{files}.complete"
    if done_marker.exists():
        return tree
    print(f"building {tree} with {files:,} files (once; cached) ...", flush=True)
    per_top = [files // TOP_DIRS + (1 if i < files % TOP_DIRS else 0) for i in range(TOP_DIRS)]
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        jobs = [pool.submit(_build_part, str(tree / f"site{i:02d}"), n, i) for i, n in enumerate(per_top)]
        for count, job in enumerate(jobs, 1):
            job.result()
            print(f"  {count}/{TOP_DIRS} parts, {time.monotonic() - started:.0f} s", flush=True)
    done_marker.write_text("ok\n")
    return tree


def _build_part(top: str, files: int, seed: int) -> None:
    """One top-level directory: app/area/leaf nesting, 1 to 200 files per leaf directory."""
    rng = random.Random(seed)
    payload = os.urandom(max(SIZES_BYTES))
    made = 0
    app = 0
    while made < files:
        for area in range(rng.randint(2, 12)):
            leaf_dir = os.path.join(top, f"app{app:03d}", f"area{area:02d}", f"d{rng.randint(0, 10**6):06d}")
            os.makedirs(leaf_dir, exist_ok=True)
            for k in range(min(rng.choice([1, 5, 20, 50, 100, 200]), files - made)):
                size = rng.choices(SIZES_BYTES, SIZE_WEIGHTS)[0]
                fd = os.open(os.path.join(leaf_dir, f"f{k:04d}.dat"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, payload[:size])
                finally:
                    os.close(fd)
                made += 1
            if made >= files:
                return
        app += 1


if __name__ == "__main__":
    sys.exit(main())
