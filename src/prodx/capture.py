"""Capture a sick host into one archive, and replay it elsewhere.

``prodx capture -o FILE.tar.gz`` runs the probes as ``prodx diagnose`` would, through a
``RecordingHost`` around the live host, and streams a gzip tar of the fixture layout that
``FixtureHost`` replays (see ``prodx.host.fixture``)::

    host.json        stats, listings, reads (in order), commands, processes, observations
    root/...         tails of files the probes opened by path
    profile.toml     the profile used, if any
    manifest.json    {"format": "prodx.capture/1", "options": {...}, "collected": {...},
                      "redacted": {"root/var/log/app.log": {"masked": 3, "kinds": {...}}}}

Nothing is written to the local disk but the output itself (the disk may be full): members
are built in memory and streamed. Every string archived goes through ``prodx.redact`` line
by line, after PEM private key blocks are masked whole; a capture therefore carries no
password, token, cookie or key, and an empty ``redacted`` table means none was seen.

``prodx diagnose --from FILE.tar.gz`` extracts into a temporary directory (removed after)
and replays it with ``FixtureHost``: the same differential as the live run.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from prodx import redact as _r
from prodx.host.zone import local_time_of
from prodx.redact import MASK, redact

FORMAT = "prodx.capture/1"

# The key block, or the tail of one whose BEGIN line a tail read cut off.
_PEM_BLOCK = _r._PRIVATE_KEY
_PEM_HEADLESS = re.compile(r"(?:^[A-Za-z0-9+/=:\- ,]{16,}\r?\n)+(?=-----END [A-Z0-9 ]*PRIVATE KEY)", re.MULTILINE)
_URL_MASK = re.compile(r"(://[^\s:/@]*:)\[REDACTED\](@)")
_ENV_LINE = re.compile(r"^(\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_.]*\s*=\s*)(.+)$")
#: Environment values that say how the process runs, not what it may access.
_ENV_KEEP = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "TERM", "PWD",
    "TZ", "HOSTNAME", "APP_ENV", "APP_DEBUG", "NODE_ENV", "RAILS_ENV", "PYTHONPATH", "INVOCATION_ID",
})
_KINDS = {
    "private_key": _PEM_BLOCK, "jwt": _r._JWT, "url_password": _r._URL_USERINFO,
    "authorization": _r._AUTH_HEADER, "bearer": _r._BEARER, "cookie": _r._COOKIE_HEADER,
    "session_id": _r._SESSION_IDS, "session_file": _r._SESS_FILE, "aws_access_key_id": _r._AWS_KEY_ID,
    "vendor_token": _r._VENDOR_TOKENS, "mysql_password": _r._MYSQL_CLI, "redis_password": _r._REDIS_CLI,
    "cli_secret": _r._CLI_FLAG, "key_value": _r._KV, "token": _r._GENERIC,
}


class CaptureError(Exception):
    """A capture cannot be written or read; the message names the file and says why."""


@dataclass
class Redactions:
    """Per archived item: how many secrets were masked, by kind."""

    items: dict[str, Counter[str]] = field(default_factory=dict)

    def note(self, where: str, original: str, masked: str) -> None:
        count = masked.count("REDACTED") - original.count("REDACTED")
        if count <= 0:
            return
        kinds = Counter({k: len(p.findall(original)) for k, p in _KINDS.items() if p.search(original)})
        if not kinds:
            kinds["environment"] = count
        self.items.setdefault(where, Counter()).update(kinds)

    def to_json(self) -> dict[str, Any]:
        return {w: {"masked": sum(c.values()), "kinds": dict(sorted(c.items()))} for w, c in sorted(self.items.items())}


def _is_kernel_state(path: str) -> bool:
    """/proc and /sys files other than command lines and environments hold counters and
    flags, never secrets; redacting them would only corrupt the replay."""
    if not path.startswith(("/proc/", "/sys/")):
        return False
    return path.rsplit("/", 1)[-1] not in ("environ", "cmdline")


def _is_env_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name == "environ" or name == ".env" or name.startswith(".env.") or name.endswith(".env")


def redact_text(text: str, env: bool = False) -> str:
    """``text`` with PEM private keys masked whole and every line through ``redact``;
    ``env`` masks every value of a ``KEY=value`` (or NUL-separated environ) file except
    harmless ones.

    >>> redact_text("a\\n-----BEGIN RSA PRIVATE KEY-----\\nMIIEow\\n-----END RSA PRIVATE KEY-----\\n")
    'a\\n-----BEGIN RSA PRIVATE KEY-----[REDACTED]-----END RSA PRIVATE KEY-----\\n'
    >>> redact_text("DB_HOST=db\\0DB_PASS=x\\0PATH=/bin", env=True)
    'DB_HOST=[REDACTED]\\x00DB_PASS=[REDACTED]\\x00PATH=/bin'
    """
    if not text:
        return text
    text = _PEM_BLOCK.sub(lambda m: m.group(1) + MASK + m.group(2), text)
    text = _PEM_HEADLESS.sub(MASK + "\n", text)
    parts = re.split(r"(\r?\n|\0)", text)
    for i in range(0, len(parts), 2):
        line = redact(parts[i])
        if env:
            m = _ENV_LINE.match(line)
            if m and m.group(1).strip().removeprefix("export").strip().rstrip("=").strip() not in _ENV_KEEP:
                line = m.group(1) + MASK
        parts[i] = line
    # "user:[REDACTED]@" would read as an IPv6 literal to a URL parser on replay.
    return _URL_MASK.sub(r"\1REDACTED\2", "".join(parts))


def _redact_value(value: Any, where: str, log: Redactions, env: bool = False) -> Any:
    """Every string in a JSON value (dict keys too, so paths stay consistent) redacted."""
    if isinstance(value, str):
        masked = redact_text(value, env)
        log.note(where, value, masked)
        return masked
    if isinstance(value, list):
        return [_redact_value(v, where, log, env) for v in value]
    if isinstance(value, dict):
        return {_redact_value(k, where, log): _redact_value(v, where, log, env) for k, v in value.items()}
    return value


def _json_str(key: str) -> str:
    try:
        value = json.loads(key)
    except ValueError:
        return ""
    return value if isinstance(value, str) else ""


def _redact_cmdline(argv: list[str], log: Redactions) -> list[str]:
    """A command line whose secret sits in another argument than its flag's context
    (``mysql -u app -pSECRET``) masked as a whole line would be.

    >>> _redact_cmdline(["mysql", "-u", "app", "-pS3cret", "shop"], Redactions())
    ['mysql', '-u', 'app', '-p[REDACTED]', 'shop']
    """
    joined = " ".join(argv)
    masked = redact_text(joined)
    if masked == joined:
        return list(argv)
    log.note("host.json:processes", joined, masked)
    parts = masked.split(" ")
    if len(parts) == len(argv):
        return parts
    return argv[:1] + [MASK] * (len(argv) - 1)


def _redact_meta(meta: dict[str, Any], log: Redactions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key == "reads":
            out[key] = {
                _redact_value(path, "host.json", log): [
                    r if _is_kernel_state(path)
                    else r | {"data": _redact_value(r["data"], f"host.json:reads:{path}", log, _is_env_file(path))}
                    for r in reads
                ]
                for path, reads in value.items()
            }
        elif key == "observations":
            out[key] = {
                kind: {
                    _redact_value(k, "host.json:observations", log):
                        v if _is_kernel_state(_json_str(k)) else _redact_value(v, f"host.json:observations:{kind}", log)
                    for k, v in table.items()
                }
                for kind, table in value.items()
            }
        elif key == "processes":
            out[key] = [p | {"cmdline": _redact_cmdline(p.get("cmdline", []), log)} for p in _redact_value(value, "host.json:processes", log)]
        elif key == "commands":
            out[key] = [
                {k: _redact_value(v, "host.json:commands:" + " ".join(c["argv"])[:80], log) for k, v in c.items()}
                for c in value
            ]
        else:
            out[key] = _redact_value(value, f"host.json:{key}", log)
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_archive(
    recorder: Any, out: IO[bytes], *, profile_text: str | None = None, options: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stream the capture held by ``recorder`` (a used ``RecordingHost``) to ``out`` as a
    gzip tar; returns the manifest written."""
    log = Redactions()
    meta = dict(recorder.snapshot())
    now = time.time()
    files: dict[str, int] = {}
    with tarfile.open(fileobj=out, mode="w|gz") as tar:
        for path, data in recorder.opened_files():
            text = data.decode("latin-1")
            name = "root/" + redact_text(path.lstrip("/"))
            masked = text if _is_kernel_state(path) else redact_text(text, _is_env_file(path))
            log.note(name, text, masked)
            blob = masked.encode("latin-1", "replace")
            files[name] = len(blob)
            _add(tar, name, blob, now)
        clean = _redact_meta(meta, log)
        host_json = json.dumps(clean, indent=1, sort_keys=True, default=str).encode()
        _add(tar, "host.json", host_json, now)
        if profile_text is not None:
            masked = redact_text(profile_text)
            log.note("profile.toml", profile_text, masked)
            _add(tar, "profile.toml", masked.encode(), now)
        safe_options = _redact_value(options or {}, "manifest.json:options", log)
        manifest = {
            "format": FORMAT,
            "hostname": clean.get("hostname"),
            "captured_at": clean.get("now"),
            "options": safe_options,
            "result": _redact_value(summary or {}, "manifest.json:result", log),
            "collected": {
                "files": files,
                "reads": {p: sum(len(r["data"]) for r in rs) for p, rs in clean.get("reads", {}).items()},
                "commands": [" ".join(c["argv"]) for c in clean.get("commands", [])],
                "observations": {k: sorted(v) for k, v in clean.get("observations", {}).items()},
                "counts": {k: len(v) for k, v in clean.items() if isinstance(v, (list, dict))},
                "host_json_bytes": len(host_json),
            },
            "redacted": log.to_json(),
        }
        _add(tar, "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode(), now)
    return manifest


@dataclass
class Replay:
    """An extracted capture: the host to pass to ``diagnose``, its profile and manifest."""

    host: Any
    profile_path: str
    manifest: dict[str, Any]
    #: The captured host's time zone (prodx.host.zone); None for captures that predate it.
    zone: dict[str, Any] | None = None


@contextmanager
def open_archive(path: str) -> Iterator[Replay]:
    """Serve the capture at ``path``: an archive extracted into a temporary directory
    (removed on exit), or a directory read in place (``_open_tree``).

    Raises CaptureError (naming ``path``) for a file that is not a gzip tar or holds no
    ``host.json``.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        yield _open_tree(Path(path))
        return
    if not stat.S_ISREG(mode):
        # A FIFO would block the open, a device would never end.
        raise CaptureError(f"{path} is not a regular file: a capture is a .tar.gz file")
    with tempfile.TemporaryDirectory(prefix="prodx-replay-") as tmp:
        try:
            with tarfile.open(path, mode="r:*") as tar:
                members = tar.getmembers()
                if "host.json" not in {m.name for m in members}:
                    raise CaptureError(f"{path} holds no host.json: not a prodx capture")
                _extract(tar, members, Path(tmp), path)
        except OSError as exc:
            raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except (tarfile.TarError, EOFError, UnicodeError) as exc:
            raise CaptureError(f"{path} is not a prodx capture: not a readable gzip tar archive") from exc
        yield _replay_of(Path(tmp), path)


#: A capture's members are files and folders of at most this size, this much in all: checked
#: on the headers, before anything is written.
MAX_MEMBER_BYTES = 512 << 20
MAX_ARCHIVE_BYTES = 1 << 30


def _extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path, path: str) -> None:
    """Write ``members`` under ``dest`` after checking every header: only files and folders,
    inside the archive, within the size bounds. Our own checks, not ``extractall(filter=)``,
    which Python 3.11 before 3.11.4 lacks. Raises CaptureError naming the member."""
    total = 0
    for m in members:
        parts = PurePosixPath(m.name).parts
        if m.name.startswith("/") or ".." in parts or not parts:
            raise CaptureError(f"{path}: member {m.name!r} points outside the archive: refused")
        if not (m.isfile() or m.isdir()):
            raise CaptureError(f"{path}: member {m.name!r} is not a file or folder (a link or device): refused")
        total += m.size
        if m.size > MAX_MEMBER_BYTES or total > MAX_ARCHIVE_BYTES:
            raise CaptureError(f"{path}: member {m.name!r} ({m.size:,} bytes) takes the archive past what a capture "
                               f"holds ({MAX_MEMBER_BYTES:,} bytes a member, {MAX_ARCHIVE_BYTES:,} in all): refused")
    for m in members:
        target = dest.joinpath(*PurePosixPath(m.name).parts)
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(m)
        if source is None:
            continue
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)


#: What each key of a capture's host.json holds (prodx.host.recording): a replay of a wrong
#: type would end in probe errors and still give a verdict.
_HOST_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "hostname": (str,), "now": (int, float), "is_root": (bool,), "effective_uid": (int,), "timezone": (dict,),
    **{k: (dict,) for k in ("stats", "lstats", "listdirs", "globs", "open_files", "space", "observations", "reads",
                            "readlinks")},
    **{k: (list,) for k in ("statvfs", "write_tests", "processes", "commands", "missing")},
}


def _replay_of(directory: Path, name: str) -> Replay:
    """A prodx capture laid out in ``directory`` (``host.json``, ``manifest.json``, ``root/``,
    maybe ``profile.toml``); errors name the capture as ``name``. Raises CaptureError."""
    from prodx.host.fixture import FixtureHost

    try:
        meta = json.loads((directory / "host.json").read_text())
    except (OSError, ValueError) as exc:
        raise CaptureError(f"{name}: host.json is unreadable: {exc}") from exc
    if not isinstance(meta, dict):
        raise CaptureError(f"{name}: host.json holds a JSON {type(meta).__name__}, not the object a capture writes")
    for key, kinds in _HOST_JSON_TYPES.items():
        # JSON's true is a Python int too: a uid or a time must not be one.
        if key in meta and (not isinstance(meta[key], kinds) or isinstance(meta[key], bool) and bool not in kinds):
            raise CaptureError(f"{name}: host.json: {key} is a JSON {type(meta[key]).__name__}, not what a capture "
                               f"writes ({' or '.join(k.__name__ for k in kinds)})")
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("options", {}), dict):
        raise CaptureError(f"{name}: manifest.json is not the object a capture writes")
    zone = meta.get("timezone")
    profile = directory / "profile.toml"
    return Replay(FixtureHost(directory), str(profile) if profile.is_file() else "", manifest,
                  zone if isinstance(zone, dict) else None)


#: Files looked at to date a tree that records no capture time (another tool's).
_DATING_FILES = 10_000


def _open_tree(directory: Path) -> Replay:
    """A capture as a directory: prodx's own, extracted (``host.json`` and ``root/``), or
    another tool's tree of the host's files (``proc/``, ``etc/``, ``var/log/`` at the top), read
    in place and never written. Such a tree records no capture time: it is taken as the newest
    file's time, so "recent" means recent before the capture. Raises CaptureError."""
    from prodx.host.fixture import FixtureHost

    if (directory / "host.json").is_file():
        return _replay_of(directory, str(directory))
    if not any((directory / top).is_dir() for top in ("proc", "etc", "var", "sys")):
        raise CaptureError(f"{directory}: neither a prodx capture (host.json) nor a tree of a host's files "
                           f"(proc/, etc/, var/ at the top)")
    newest = 0.0
    for i, file in enumerate(f for f in directory.rglob("*") if f.is_file() and not f.is_symlink()):
        if i >= _DATING_FILES:
            break
        newest = max(newest, file.stat().st_mtime)
    return Replay(FixtureHost(directory, root=directory, now=newest or time.time()), "", {})


def capture_options(options: dict[str, Any]) -> dict[str, Any]:
    """What of the diagnosing options the replay needs to give the same differential."""
    return {
        "symptoms": list(options.get("symptoms") or ()),
        "as_user": options.get("as_user", ""),
        "write_test": not options.get("no_write_test", False),
        "deadline_s": options.get("deadline_s", 3.0),
    }


def run_capture(output: str, **options: Any) -> int:
    """``prodx capture -o FILE``: diagnose through a recorder and stream the archive."""
    from prodx.diagnosis import DiagnoseOptions, diagnose
    from prodx.host.local import LocalHost
    from prodx.host.recording import RecordingHost
    from prodx.kb.loader import KBError
    from prodx.model import ExitStatus
    from prodx.profile import ProfileError

    def fail(message: str, status: ExitStatus) -> int:
        print(f"prodx: {message}", file=sys.stderr)
        return int(status)

    if options.get("no_probes"):
        return fail("capture records what the probes read; --no-probes leaves nothing to capture", ExitStatus.USAGE_ERROR)
    if output == "-" and sys.stdout.isatty():
        return fail("refusing to write a gzip archive to a terminal; use -o FILE.tar.gz or pipe it (-o - | ssh ...)",
                    ExitStatus.USAGE_ERROR)
    profile_text = None
    if options.get("profile_path"):
        try:
            profile_text = Path(options["profile_path"]).read_text(encoding="utf-8")
        except OSError as exc:
            return fail(f"cannot read profile {options['profile_path']}: {exc.strerror or exc}", ExitStatus.USAGE_ERROR)
    opts = capture_options(options)
    recorder = RecordingHost(LocalHost())
    try:
        result = diagnose(DiagnoseOptions(
            profile_path=options.get("profile_path", ""), symptoms=opts["symptoms"], as_user=opts["as_user"],
            deadline_s=opts["deadline_s"], kb_dirs=tuple(options.get("kb_dirs") or ()), write_test=opts["write_test"],
        ), host=recorder)
    except (KBError, ProfileError) as exc:
        return fail(str(exc), ExitStatus.USAGE_ERROR)
    summary = {"differential": [[p.condition, p.probability] for p in result.differential.ranked],
               "findings": {f.id: f.state.value for f in result.findings}}
    try:
        if output == "-":
            manifest = write_archive(recorder, sys.stdout.buffer, profile_text=profile_text, options=opts, summary=summary)
            sys.stdout.buffer.flush()
        else:
            try:
                with open(output, "wb") as fh:
                    manifest = write_archive(recorder, fh, profile_text=profile_text, options=opts, summary=summary)
            except BaseException:
                try:
                    os.unlink(output)
                except OSError:
                    pass
                raise
    except OSError as exc:
        return fail(f"cannot write {output}: {exc.strerror or exc}", ExitStatus.USAGE_ERROR)
    collected = manifest["collected"]
    masked = sum(r["masked"] for r in manifest["redacted"].values())
    leader = result.differential.leader
    print(f"prodx: wrote {'stdout' if output == '-' else output}: {len(collected['files']) + len(collected['reads'])} files, "
          f"{len(collected['commands'])} commands, {sum(len(v) for v in collected['observations'].values())} observations; "
          f"{masked} secrets masked. Leading: {leader.condition if leader else 'none'}"
          f"{f' (P {leader.probability:.2f})' if leader else ''}. Replay: prodx diagnose --from FILE", file=sys.stderr)
    return 0


def replay_diagnosis(path: str, options: Any) -> Any:
    """``diagnose --from``: the diagnosis of the capture at ``path``. ``options`` (a
    ``DiagnoseOptions``) left empty take the capture's own (profile, symptoms, user,
    write test), so the differential is the live one's. Raises CaptureError."""
    from dataclasses import replace

    from prodx.diagnosis import diagnose

    with open_archive(path) as replay, local_time_of(replay.zone):
        saved = replay.manifest.get("options", {})
        opts = replace(
            options,
            profile_path=options.profile_path or replay.profile_path,
            symptoms=list(options.symptoms) or list(saved.get("symptoms", [])),
            as_user=options.as_user or saved.get("as_user", ""),
            write_test=options.write_test and bool(saved.get("write_test", True)),
        )
        return diagnose(opts, host=replay.host)
