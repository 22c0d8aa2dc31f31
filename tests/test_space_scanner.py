"""Space scanner on real trees, checked against GNU du run on the same tree."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from prodx.cli import cli
from prodx.report.space import render_text
from prodx.scanners import space
from prodx.scanners.space import Backend, ScanMode, scan

BACKENDS = [
    pytest.param(Backend.C, marks=pytest.mark.skipif(space._fastscan is None, reason="C walker not built")),
    Backend.PYTHON,
]
def available_backends() -> list[Backend]:
    return [Backend.PYTHON] + ([Backend.C] if space._fastscan is not None else [])


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, setuid)")


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-x", "-s", "--block-size=1", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0])


def du_inodes(path: Path) -> int:
    out = subprocess.run(["du", "-x", "--inodes", "-s", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0])


def du_per_dir(options: list[str], path: Path) -> dict[str, int]:
    out = subprocess.run(["du", "-x", *options, str(path)], capture_output=True, text=True).stdout
    return {line.split("\t", 1)[1]: int(line.split("\t", 1)[0]) for line in out.splitlines()}


def write(path: Path, size_bytes: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size_bytes))
    return path


def comparable(report: space.SpaceReport) -> dict:
    doc = report.to_json()
    for key in ("elapsed_s", "backend", "fs"):
        doc.pop(key)
    return doc


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Nested dirs, varied sizes, an empty dir, a hard link pair and symlinks."""
    root = tmp_path / "tree"
    write(root / "var/log/app/app.log", 300_000)
    write(root / "var/log/app/app.log.1", 120_000)
    write(root / "var/log/syslog", 9_000)
    for i in range(40):
        write(root / f"var/lib/php/sessions/sess_{i:03d}", 100 + i)
    write(root / "srv/www/index.html", 2_000)
    write(root / "srv/www/big.bin", 1_000_000)
    (root / "empty").mkdir()
    os.link(root / "srv/www/big.bin", root / "var/big-link.bin")
    outside = write(tmp_path / "outside/huge.bin", 3_000_000)
    os.symlink(outside.parent, root / "srv/link-to-outside")
    os.symlink(outside, root / "srv/huge-link.bin")
    os.symlink("dangling-target", root / "srv/dangling")
    return root


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_known_tree_matches_du_bytes_and_inodes(tree: Path, backend: Backend) -> None:
    report = scan(str(tree), backend=backend)

    assert report.total_bytes == du_bytes(tree)
    assert report.total_inodes == du_inodes(tree)
    assert report.partial is False and report.partial_reason == ""
    assert report.unreadable == 0
    assert report.backend == backend.value
    # One du run over the whole tree: a hard link is then charged where du meets it first.
    du_dirs_bytes = du_per_dir(["--block-size=1"], tree)
    du_dirs_inodes = du_per_dir(["--inodes"], tree)
    assert report.dirs_by_bytes and report.dirs_by_inodes
    for d in report.dirs_by_bytes + report.dirs_by_inodes:
        assert (d.bytes, d.inodes) == (du_dirs_bytes[d.path], du_dirs_inodes[d.path]), d.path


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_inodes_mode_without_hard_links_matches_du_inodes(tmp_path: Path, backend: Backend) -> None:
    for i in range(300):
        write(tmp_path / f"cache/{i % 7}/{i % 3}/entry{i}", i)

    report = scan(str(tmp_path), mode=ScanMode.INODES, backend=backend)

    assert report.total_inodes == du_inodes(tmp_path)
    assert report.total_bytes == 0 and report.dirs_by_bytes == [] and report.files_by_bytes == []
    assert report.dirs_by_inodes[0].inodes == du_inodes(Path(report.dirs_by_inodes[0].path))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_hard_linked_file_counted_once(tmp_path: Path, backend: Backend) -> None:
    big = write(tmp_path / "a/big.bin", 2_000_000)
    os.link(big, tmp_path / "b-link.bin")
    os.link(big, tmp_path / "a/c-link.bin")

    report = scan(str(tmp_path), backend=backend)

    assert report.total_bytes == du_bytes(tmp_path)
    assert report.total_bytes < 2 * big.stat().st_blocks * 512
    assert [f.bytes for f in report.files_by_bytes].count(big.stat().st_blocks * 512) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_symlinks_to_big_dir_and_file_not_followed(tree: Path, backend: Backend) -> None:
    report = scan(str(tree), backend=backend)

    assert report.total_bytes < 3_000_000
    assert all("outside" not in f.path and "huge" not in f.path for f in report.files_by_bytes)
    assert all("link-to-outside" not in d.path for d in report.dirs_by_bytes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_root_given_as_symlink_scans_its_target(tree: Path, tmp_path: Path, backend: Backend) -> None:
    link = tmp_path / "tree-link"
    os.symlink(tree, link)

    report = scan(str(link), backend=backend)

    assert report.root == str(tree.resolve())
    assert report.total_bytes == du_bytes(tree)


@pytest.mark.parametrize("mode", list(ScanMode))
def test_scan_both_backends_on_same_tree_give_same_report(tree: Path, mode: ScanMode) -> None:
    if space._fastscan is None:
        pytest.skip("C walker not built")
    for i in range(30):
        write(tree / f"srv/media/{i % 4}/img{i}.jpg", 1_000 * i)

    c_report = scan(str(tree), backend=Backend.C, mode=mode, top_n=5)
    py_report = scan(str(tree), backend=Backend.PYTHON, mode=mode, top_n=5)

    assert comparable(c_report) == comparable(py_report)


def test_walkers_deeper_than_fd_limit_give_same_raw_result(tmp_path: Path) -> None:
    if space._fastscan is None:
        pytest.skip("C walker not built")
    deep = tmp_path
    for level in range(12):
        deep = deep / f"level{level}"
        write(deep / "file", 100 * level)
        (deep / f"side{level}").mkdir()

    results = [
        walk(str(tmp_path), True, 60.0, 5, 5, fd_depth)
        for walk in (space._fastscan.walk, space._walk_python)
        for fd_depth in (1, 3, space.FD_KEEP_DEPTH)
    ]

    assert all(r == results[0] for r in results[1:])
    assert sum(d[2] for d in results[0][0]) == du_bytes(tmp_path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_one_dominant_chain_reports_where_usage_fans_out(tmp_path: Path, backend: Backend) -> None:
    for year in ("2022", "2023", "2024"):
        write(tmp_path / f"var/log/app/{year}/jan.log", 200_000)
        write(tmp_path / f"var/log/app/{year}/feb.log", 100_000)
    write(tmp_path / "etc/small.conf", 10)

    report = scan(str(tmp_path), backend=backend)

    paths = [d.path for d in report.dirs_by_bytes]
    assert paths[0] == str(tmp_path / "var/log/app")
    assert str(tmp_path) not in paths and str(tmp_path / "var") not in paths
    assert str(tmp_path / "var/log") not in paths
    assert set(paths[1:4]) == {str(tmp_path / f"var/log/app/{year}") for year in ("2022", "2023", "2024")}
    assert report.dirs_by_bytes[0].depth == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_zero_deadline_on_big_dir_returns_partial_with_reason(tmp_path: Path, backend: Backend) -> None:
    for i in range(3000):
        (tmp_path / f"s{i}").touch()

    report = scan(str(tmp_path), deadline_s=0.0, backend=backend)

    assert report.partial is True
    assert report.partial_reason.startswith("deadline 0.0 s reached after ")
    assert report.entries < 3000


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_dirs_removed_mid_scan_does_not_crash(tmp_path: Path, backend: Backend) -> None:
    root = tmp_path / "churn"
    for i in range(20):
        write(root / f"keep{i}/f", 10)
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            victim = root / f"gone{n % 10}"
            for j in range(20):
                write(victim / f"sub{j}/f", 10)
            shutil.rmtree(victim, ignore_errors=True)
            n += 1

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        reports = [scan(str(root), backend=backend) for _ in range(100)]
    finally:
        stop.set()
        worker.join()

    assert all(r.total_inodes >= 41 and not r.partial for r in reports)
    for r in reports:
        assert set(r.unreadable_errors) <= {"ENOENT", "ESTALE", "ENOTDIR"}
        assert len(r.unreadable_samples) == min(r.unreadable, space.UNREADABLE_SAMPLES)


@needs_root
def test_scan_tmpfs_mounted_inside_tree_is_not_crossed(tree: Path) -> None:
    mnt = tree / "var/cache/mnt"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        write(mnt / "inside.bin", 2_000_000)
        expected_bytes, expected_inodes = du_bytes(tree), du_inodes(tree)
        reports = [scan(str(tree), backend=b) for b in available_backends()]
        on_tmpfs = scan(str(mnt))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)

    assert expected_bytes < 2_000_000
    for report in reports:
        assert (report.total_bytes, report.total_inodes) == (expected_bytes, expected_inodes)
        assert all(not f.path.startswith(str(mnt)) for f in report.files_by_bytes)
        assert report.mount_point != str(mnt)
    assert (on_tmpfs.mount_point, on_tmpfs.fstype, on_tmpfs.device) == (str(mnt), "tmpfs", "tmpfs")
    assert on_tmpfs.total_bytes >= 2_000_000


_UNPRIVILEGED_SCAN = """
import json, os, sys
from prodx.scanners.space import Backend, scan  # before dropping root: /root may be 0700
os.setgid(65534); os.setuid(65534)
out = {}
for b in sys.argv[2:]:
    r = scan(sys.argv[1], backend=Backend(b))
    out[b] = {"unreadable": r.unreadable, "samples": r.unreadable_samples,
              "errors": r.unreadable_errors, "inodes": r.total_inodes}
print(json.dumps(out))
"""


@needs_root
def test_scan_unreadable_dir_as_unprivileged_user_counts_it_and_goes_on() -> None:
    root = Path(tempfile.mkdtemp(prefix="prodx-space-"))
    try:
        root.chmod(0o755)
        write(root / "open/readable.txt", 100).parent.chmod(0o755)
        (root / "open/readable.txt").chmod(0o644)
        locked = root / "locked"
        write(locked / "secret.txt", 100)
        locked.chmod(0o000)
        backends = ["python"] + (["c"] if space._fastscan is not None else [])

        proc = subprocess.run(
            [sys.executable, "-c", _UNPRIVILEGED_SCAN, str(root), *backends],
            capture_output=True, text=True, check=True,
        )
    finally:
        locked.chmod(0o755)
        shutil.rmtree(root)

    results = json.loads(proc.stdout)
    for result in results.values():
        assert result["unreadable"] == 1
        assert result["samples"] == [str(locked)]
        assert result["errors"] == {"EACCES": 1}
        assert result["inodes"] == 4  # root, open/, readable.txt, locked/ itself
    assert len(set(json.dumps(r, sort_keys=True) for r in results.values())) == 1


def test_scan_missing_root_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan(str(tmp_path / "nope"))


def test_scan_names_mount_point_device_and_fstype(tree: Path) -> None:
    report = scan(str(tree))

    df = subprocess.run(["df", "--output=target,source,fstype", str(tree)], capture_output=True, text=True)
    target, source, fstype = df.stdout.splitlines()[1].split()
    assert (report.mount_point, report.fstype) == (target, fstype)
    assert report.device == source
    assert report.fs is not None and report.fs.size_bytes > 0


def test_space_cli_json_prints_one_schema_document(tree: Path) -> None:
    result = CliRunner().invoke(cli, ["space", str(tree), "--json", "--top", "3"])

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "prodx.space/1"
    assert doc["total_bytes"] == du_bytes(tree)
    assert len(doc["files_by_bytes"]) == 3


def test_space_cli_inodes_flag_measures_inodes_only(tree: Path) -> None:
    result = CliRunner().invoke(cli, ["space", str(tree), "--json", "--inodes"])

    doc = json.loads(result.stdout)
    assert doc["mode"] == "inodes" and doc["dirs_by_bytes"] == [] and doc["dirs_by_inodes"]


def test_space_cli_text_shows_sections(tree: Path) -> None:
    result = CliRunner().invoke(cli, ["space", str(tree)])

    assert result.exit_code == 0, result.output
    for heading in ("Largest directories", "Largest files", "Most inodes", str(tree)):
        assert heading in result.stdout
    assert "PARTIAL" not in result.stdout


def test_space_cli_missing_path_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"

    result = CliRunner().invoke(cli, ["space", str(missing)])

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"prodx space: no such directory: {missing}"]


def test_space_renderer_partial_report_prints_partial_line(tmp_path: Path) -> None:
    for i in range(3000):
        (tmp_path / f"s{i}").touch()
    report = scan(str(tmp_path), deadline_s=0.0)

    out = io.StringIO()
    render_text(report, out)

    assert "PARTIAL: deadline 0.0 s reached after" in out.getvalue()
