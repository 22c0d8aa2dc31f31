"""The site profile: a TOML file describing the app prodx examines.

Example::

    [app]
    name = "shop"
    user = "www-data"
    writable = ["/var/www/shop/var/cache", "/var/lib/php/sessions"]
    logs = ["/var/www/shop/var/log/prod.log"]
    services = ["php-fpm8.2", "nginx"]

    [[http]]
    url = "https://shop.example.com/health"
    expect_status = 200
    expect_text = "ok"

    [[http]]
    url = "https://shop.example.com/login"
    login = { form = { username = "probe", password = "secret" }, then_url = "https://shop.example.com/account", expect_text = "Logged in as probe" }

    [[dependency]]
    name = "database"
    url = "postgres://shop@127.0.0.1:5432/shop"

    [[dependency]]
    name = "payments"
    tcp = "api.payments.example:443"

    [[tls]]
    endpoint = "shop.example.com:443"

    [[tls]]
    file = "/etc/ssl/shop/fullchain.pem"

Every key is optional; unknown keys and wrong types are errors naming file, line and key.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ProfileError(ValueError):
    """A profile is malformed; the message names file, line and key."""

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


@dataclass(frozen=True)
class LoginJourney:
    """Post ``form`` to the check's URL, follow the redirect (or open ``then_url``) with the
    cookies it set, and expect ``expect_text``: a session that survives a redirect."""

    form: dict[str, str]
    expect_text: str
    then_url: str = ""


@dataclass(frozen=True)
class HttpCheck:
    url: str
    expect_status: int = 200
    expect_text: str = ""
    login: LoginJourney | None = None


@dataclass(frozen=True)
class Dependency:
    """Something the app needs over the network: ``tcp`` "host:port", or a ``url`` whose
    scheme says what it is (postgres, postgresql, mysql, redis, http, https)."""

    name: str
    tcp: str = ""
    url: str = ""

    @property
    def kind(self) -> str:
        return urlsplit(self.url).scheme if self.url else "tcp"

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to connect to; the scheme's default port when the URL has none."""
        if self.tcp:
            host, _, port = self.tcp.rpartition(":")
            return host.strip("[]"), int(port)
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or _DEFAULT_PORTS[parts.scheme]


@dataclass(frozen=True)
class TlsCheck:
    endpoint: str = ""  # host:port
    file: str = ""
    server_name: str = ""


@dataclass(frozen=True)
class Profile:
    """What a site says about its app. An empty profile means "discover what you can"."""

    name: str = ""
    user: str = ""
    writable: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    http: tuple[HttpCheck, ...] = ()
    dependencies: tuple[Dependency, ...] = ()
    tls: tuple[TlsCheck, ...] = ()
    source: str = ""


_DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "mysql": 3306, "redis": 6379, "http": 80, "https": 443}
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_abs_paths(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x.startswith("/") for x in v)


def _is_names(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def _is_url(*schemes: str) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises ValueError for a port out of 0-65535 or not a number
        except ValueError:  # also a malformed IPv6 literal ("http://[::1")
            return False
        return parts.scheme in schemes and bool(parts.hostname)

    return check


def _is_host_port(v: Any) -> bool:
    return isinstance(v, str) and bool(_HOST_PORT.match(v)) and 0 < int(v.rsplit(":", 1)[1]) < 65536


def _is_status(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599


def _is_form(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())


#: table → key → (what it must be, checker); "required" keys are listed apart.
_SCHEMA: dict[str, dict[str, tuple[str, Callable[[Any], bool]]]] = {
    "app": {
        "name": ("a string", _is_str),
        "user": ("a string (a user name or uid)", lambda v: isinstance(v, str | int) and not isinstance(v, bool)),
        "writable": ("a list of absolute paths", _is_abs_paths),
        "logs": ("a list of absolute paths", _is_abs_paths),
        "services": ("a list of process names", _is_names),
    },
    "http": {
        "url": ("an http:// or https:// URL", _is_url("http", "https")),
        "expect_status": ("an HTTP status code (100-599)", _is_status),
        "expect_text": ("a string", _is_str),
        "login": ("a table {form, expect_text, then_url}", lambda v: isinstance(v, dict)),
    },
    "http.login": {
        "form": ("a table of string fields", _is_form),
        "expect_text": ("a string", _is_str),
        "then_url": ("an http:// or https:// URL", _is_url("http", "https")),
    },
    "dependency": {
        "name": ("a string", _is_str),
        "tcp": ('"host:port"', _is_host_port),
        "url": ("a postgres://, mysql://, redis://, http:// or https:// URL", _is_url(*_DEFAULT_PORTS)),
    },
    "tls": {
        "endpoint": ('"host:port"', _is_host_port),
        "file": ("an absolute path", lambda v: isinstance(v, str) and v.startswith("/")),
        "server_name": ("a host name", _is_str),
    },
}
_REQUIRED = {"http": ("url",), "http.login": ("form", "expect_text"), "dependency": ("name",)}
_ONE_OF = {"dependency": ("tcp", "url"), "tls": ("endpoint", "file")}
_ARRAYS = ("http", "dependency", "tls")


def _line_of(text: str, table: str, index: int | None, key: str) -> int | None:
    """The line where ``key`` is set in ``[table]`` (or the ``index``-th ``[[table]]``), or the
    table's header line when ``key`` is empty; inline tables count as their key's line."""
    current: tuple[str, int | None] = ("", None)
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        array = re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", stripped)
        plain = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if array:
            name = array.group(1)
            counts[name] = counts.get(name, -1) + 1
            current = (name, counts[name])
        elif plain:
            name = plain.group(1)
            head = name.split(".")[0]
            current = (name, counts.get(head)) if head in _ARRAYS else (name, None)
        else:
            if current == (table, index) and key and re.match(rf"^{re.escape(key)}\s*=", stripped):
                return number
            continue
        if current == (table, index) and not key:
            return number
    return None


def _check_table(
    text: str, source: str, table: str, index: int | None, data: Any,
    parent_line: Callable[[], int | None] | None = None, label: str = "",
) -> None:
    label = label or (table if index is None else f"{table}[{index}]")

    # Lines are looked up only for an error: each lookup reads the whole text.
    def where() -> int | None:
        return _line_of(text, table, index, "") or (parent_line() if parent_line else None)

    def line(key: str) -> int | None:
        return _line_of(text, table, index, key) or where()

    if not isinstance(data, dict):
        raise ProfileError(source, where(), label, "must be a table")
    schema = _SCHEMA[table]
    for key, value in data.items():
        if key not in schema:
            raise ProfileError(source, line(key), f"{label}.{key}", f"unknown key (known: {', '.join(schema)})")
        kind, check = schema[key]
        if not check(value):
            raise ProfileError(source, line(key), f"{label}.{key}", f"must be {kind}, got {value!r}")
    for key in _REQUIRED.get(table, ()):
        if key not in data:
            raise ProfileError(source, where(), f"{label}.{key}", "is required")
    choices = _ONE_OF.get(table)
    if choices and sum(k in data for k in choices) != 1:
        raise ProfileError(source, where(), label, f"needs exactly one of {' or '.join(choices)}")


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Parse and validate profile text; raise ProfileError on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else len(text.splitlines()) or 1
        raise ProfileError(source, line, "", f"invalid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ProfileError(source, None, "", "invalid TOML: arrays or tables nested too deep") from exc
    except ValueError as exc:  # an integer of more digits than Python converts (4,300)
        line = next((n for n, row in enumerate(text.splitlines(), 1) if re.search(r"\d{1000}", row)), None)
        raise ProfileError(source, line, "", "invalid value: an integer of more than 4,300 digits") from exc
    for top, value in data.items():
        if top not in ("app", *_ARRAYS):
            line = _line_of(text, top, None, "") or _line_of(text, "", None, top)
            raise ProfileError(source, line, top, "unknown table or key (known: [app], [[http]], [[dependency]], [[tls]])")
        if top in _ARRAYS and not isinstance(value, list):
            raise ProfileError(source, _line_of(text, top, None, "") or _line_of(text, "", None, top), top, f"must be written [[{top}]] (a list of tables)")
    app = data.get("app", {})
    _check_table(text, source, "app", None, app)
    for table in _ARRAYS:
        for i, entry in enumerate(data.get(table, [])):
            _check_table(text, source, table, i, entry)
            if table == "http" and "login" in entry:
                def login_line(i: int = i) -> int | None:
                    return _line_of(text, "http", i, "login") or _line_of(text, "http.login", i, "")

                _check_table(text, source, "http.login", i, entry["login"], login_line, f"http[{i}].login")
    return Profile(
        name=app.get("name", ""),
        user=str(app.get("user", "")),
        writable=tuple(app.get("writable", ())),
        logs=tuple(app.get("logs", ())),
        services=tuple(app.get("services", ())),
        http=tuple(
            HttpCheck(
                url=h["url"],
                expect_status=h.get("expect_status", 200),
                expect_text=h.get("expect_text", ""),
                login=LoginJourney(h["login"]["form"], h["login"]["expect_text"], h["login"].get("then_url", ""))
                if "login" in h
                else None,
            )
            for h in data.get("http", [])
        ),
        dependencies=tuple(Dependency(d["name"], d.get("tcp", ""), d.get("url", "")) for d in data.get("dependency", [])),
        tls=tuple(TlsCheck(t.get("endpoint", ""), t.get("file", ""), t.get("server_name", "")) for t in data.get("tls", [])),
        source=source,
    )


#: A profile is a page of settings: anything larger is not one.
MAX_PROFILE_BYTES = 1 << 20


def load_profile(path: str) -> Profile:
    """Read and validate the profile at ``path``: a regular file of at most
    MAX_PROFILE_BYTES (a FIFO would block the read, a device would never end)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ProfileError(path, None, "", "not a regular file: a profile is a TOML file")
        if info.st_size > MAX_PROFILE_BYTES:
            raise ProfileError(path, None, "", f"{info.st_size:,} bytes: a profile is at most {MAX_PROFILE_BYTES:,}")
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ProfileError(path, None, "", "no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(path, None, "", f"cannot read: {exc}") from exc
    return parse_profile(text, path)
