"""prodx run by an unprivileged user: fewer findings, each missing one ``unknown`` with a
reason a person can act on, never a false ``absent``. Root drops to nobody in a forked child."""

from __future__ import annotations

import json
import os

import pytest

from prodx.diagnosis import DiagnoseOptions, diagnose
from prodx.probes import load_all
from prodx.report.diagnosis_json import to_document

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")


def _diagnose_as_nobody(kb) -> dict:
    # Everything is imported before the fork: nobody may not read the interpreter's files.
    load_all()
    import prodx.redact  # noqa: F401
    import prodx.scanners.logscan  # noqa: F401
    import prodx.scanners.space  # noqa: F401
    import prodx.scanners.timestamps  # noqa: F401

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            doc = to_document(diagnose(DiagnoseOptions(as_user="www-data"), kb=kb))
            os.write(write_fd, json.dumps(doc).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 1 << 16):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def test_unprivileged_run_reports_unknowns_with_reasons_not_absents(kb):
    doc = _diagnose_as_nobody(kb)
    states = {f["id"]: f for f in doc["findings"]}
    write = states["storage.write_enospc"]
    assert write["state"] == "unknown" and "needs root to test writes as www-data" in write["reason"]
    deleted = states["storage.deleted_open_large"]
    if deleted["state"] == "unknown":
        assert "needs root" in deleted["reason"]
    for f in doc["findings"]:
        if f["state"] == "unknown":
            assert f["reason"], f["id"]
    assert doc["differential"], "the run still produces a differential"
