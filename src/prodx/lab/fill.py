"""Fillers the lab runs as a child process (often as the throwaway user): stdlib only.

The sandbox runs this file's text with ``python -I -c <text> MODE PATH [ARG]`` so it works
for any user without importing prodx. Each mode writes until the kernel says no and prints
one JSON line: ``{"errno": "ENOSPC", "bytes": 50331648, "files": 1}``.

Modes:
    blob PATH             one big data file, 1 MiB writes then 4 KiB writes, until refused
    log PATH              realistic log lines appended until refused; the last line is cut
    files DIR PREFIX      small files named PREFIX<random> until refused (inodes or blocks)
    cache DIR             64 KiB cache entries under two levels of hashed folders until refused
    appcache DIR LOG      one cache write as the app would; on refusal a Symfony-style CRITICAL
                          line with the real strerror is appended to LOG
    hold PATH BYTES       a worker named lab-worker that writes PATH up to BYTES, waits until
                          PATH is deleted, keeps writing the open file until refused, then
                          tries a line every half second until killed
"""

from __future__ import annotations

import errno
import json
import os
import random
import sys
import time

_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR")
_MESSAGES = (
    'request.{lvl}: Matched route "app_login". {{"route":"app_login","method":"POST","request_uri":"https://shop.example/login"}} []',
    'security.{lvl}: User has been authenticated successfully. {{"username":"customer{n}@example.com"}} []',
    'doctrine.{lvl}: SELECT t0.id AS id_1, t0.email AS email_2 FROM customer t0 WHERE t0.id = ? {{"params":{{"1":{n}}}}} []',
    'app.{lvl}: Cart recalculated {{"cart_id":{n},"items":3,"total_cents":{m}}} []',
    'php.{lvl}: User Deprecated: Method "Symfony\\\\Component\\\\HttpKernel\\\\Bundle\\\\Bundle::build()" might add "void" {{"exception":"[object]"}} []',
)


def _log_line(rng: random.Random, t: float) -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    msg = rng.choice(_MESSAGES).format(lvl=rng.choice(_LEVELS), n=rng.randrange(1, 99999), m=rng.randrange(100, 99999))
    return f"[{stamp}.{rng.randrange(10**6):06d}+00:00] {msg}\n".encode()


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _write_until_refused(fd: int, chunks) -> tuple[int, OSError | None]:
    total = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            try:
                n = os.write(fd, view)
            except OSError as exc:
                return total, exc
            total += n
            view = view[n:]
    return total, None


def _top_off(path: str) -> tuple[int, OSError | None]:
    """Append 4 KiB blocks to ``path`` until refused, after a sync: ext4's delayed allocation
    reserves worst-case metadata for unwritten data and gives the rest back at writeback."""
    os.sync()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    small = b"\0" * 4096
    try:
        return _write_until_refused(fd, iter(lambda: small, None))
    finally:
        os.close(fd)


def blob(path: str) -> dict:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    total = 0
    err = None
    for size in (1 << 20, 1 << 12):
        data = os.urandom(size)
        n, err = _write_until_refused(fd, iter(lambda: data, None))
        total += n
    try:
        os.fsync(fd)
    except OSError:
        pass
    os.close(fd)
    return {"errno": _errname(err) if err else None, "bytes": total, "files": 1}


def log(path: str) -> dict:
    rng = random.Random(7)
    t = time.time() - 86400 * 30
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def lines():
        nonlocal t
        while True:
            batch = []
            for _ in range(256):
                t += rng.random() * 2
                batch.append(_log_line(rng, t))
            yield b"".join(batch)

    total, err = _write_until_refused(fd, lines())
    # One more line byte by byte, as a dying writer's last buffered flush: it is cut off
    # where the space ended, never at a newline.
    n, err2 = _write_until_refused(fd, (bytes([b]) for b in _log_line(rng, t)))
    total += n
    os.close(fd)
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            os.truncate(path, fh.tell() - 40)
    return {"errno": _errname(err or err2) if (err or err2) else None, "bytes": total, "files": 1}


def files(directory: str, prefix: str) -> dict:
    rng = random.Random(11)
    count = 0
    total = 0
    while True:
        name = f"{prefix}{rng.getrandbits(128):032x}"[: len(prefix) + 26]
        body = f'user|s:9:"cust{rng.randrange(10**5):05d}";'.encode()
        try:
            fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            return {"errno": _errname(exc), "bytes": total, "files": count}
        count += 1
        try:
            total += os.write(fd, body)
        except OSError as exc:
            os.close(fd)
            return {"errno": _errname(exc), "bytes": total, "files": count}
        os.close(fd)


def cache(directory: str) -> dict:
    rng = random.Random(13)
    count = 0
    total = 0
    data = os.urandom(64 << 10)
    last_sub, last = directory, ""
    while True:
        h = f"{rng.getrandbits(64):016x}"
        sub = os.path.join(directory, "pools", "app", h[0], h[1:3])
        try:
            os.makedirs(sub, exist_ok=True)
            last_sub = sub
        except OSError:
            sub = last_sub  # no block left for a new folder: the files still fill the rest
        path = os.path.join(sub, h[3:])
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            if not count:
                return {"errno": _errname(exc), "bytes": total, "files": count}
            # No block left for a folder entry: the last entry grows into what remains.
            n, err = _top_off(last)
            return {"errno": _errname(err or exc), "bytes": total + n, "files": count}
        last = path
        n, err = _write_until_refused(fd, [data])
        os.close(fd)
        total += n
        count += 1
        if err:
            n, err2 = _top_off(last)
            return {"errno": _errname(err2 or err), "bytes": total + n, "files": count}


def hold(path: str, target: str) -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, b"lab-worker", 0, 0, 0)  # PR_SET_NAME: comm shows the role
    except (OSError, AttributeError):
        pass
    rng = random.Random(17)
    t = time.time() - 3600

    def burst() -> bytes:
        nonlocal t
        t += 0.01
        return b"".join(_log_line(rng, t) for _ in range(512))

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # held until killed: the point
    while os.fstat(fd).st_size < int(target):
        os.write(fd, burst())
    os.fsync(fd)
    # Someone deletes the big log; the worker never reopens it and keeps logging into the
    # nameless file until the filesystem is full.
    while os.fstat(fd).st_nlink:
        time.sleep(0.05)
    _write_until_refused(fd, iter(burst, None))
    while True:
        time.sleep(0.5)
        try:
            os.write(fd, _log_line(rng, time.time()))
        except OSError:
            pass


def appcache(directory: str, log_path: str) -> dict:
    """What the app does on its next request: write a cache entry under ``directory``; when
    the kernel refuses, log the failure (with the real strerror) the way Symfony does."""
    target = os.path.join(directory, "pools", "a3")
    try:
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, "b7e1d2.cache"), "wb") as fh:
            fh.write(b"cached")
    except OSError as exc:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        line = (f'[{stamp}.000000+00:00] request.CRITICAL: Uncaught PHP Exception RuntimeException: '
                f'"Unable to write in the cache directory ({target}): {exc.strerror}." at '
                f"/srv/app/vendor/symfony/cache/Traits/FilesystemCommonTrait.php line 59\n")
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(line)
        return {"errno": _errname(exc), "bytes": 0, "files": 0}
    return {"errno": None, "bytes": 6, "files": 1}


def main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "hold":
        hold(*args)
        return 0
    result = {"blob": blob, "log": log, "files": files, "cache": cache, "appcache": appcache}[mode](*args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
