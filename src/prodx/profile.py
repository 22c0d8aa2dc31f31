"""The site profile: a TOML file describing the app prodx examines.

Example::

    [app]
    name = "shop"
    user = "www-data"
    writable = ["/var/www/shop/var/cache", "/var/lib/php/sessions"]
    logs = ["/var/www/shop/var/log/prod.log"]
    services = ["php-fpm8.2", "nginx"]

Every key is optional; unknown keys and wrong types are errors naming file, line and key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: key → (type description, checker)
_APP_KEYS: dict[str, tuple[str, Any]] = {
    "name": ("a string", lambda v: isinstance(v, str)),
    "user": ("a string (a user name or uid)", lambda v: isinstance(v, str | int) and not isinstance(v, bool)),
    "writable": ("a list of absolute paths", lambda v: isinstance(v, list) and all(isinstance(x, str) and x.startswith("/") for x in v)),
    "logs": ("a list of absolute paths", lambda v: isinstance(v, list) and all(isinstance(x, str) and x.startswith("/") for x in v)),
    "services": ("a list of process names", lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v)),
}


class ProfileError(ValueError):
    """A profile is malformed; the message names file, line and key."""

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


@dataclass(frozen=True)
class Profile:
    """What a site says about its app. An empty profile means "discover what you can"."""

    name: str = ""
    user: str = ""
    writable: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _line_of_key(text: str, table: str, key: str) -> int | None:
    """The line where ``key`` is set inside ``[table]`` (or at top level when table is '')."""
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1)
            if not table and current == key:
                return number
            continue
        if current == table and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Parse and validate profile text; raise ProfileError on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else len(text.splitlines()) or 1
        raise ProfileError(source, line, "", f"invalid TOML: {exc}") from exc
    for top in data:
        if top != "app":
            raise ProfileError(source, _line_of_key(text, "", top), top, "unknown table or key (known: [app])")
    app = data.get("app", {})
    if not isinstance(app, dict):
        raise ProfileError(source, _line_of_key(text, "", "app"), "app", "must be a table: [app]")
    for key, value in app.items():
        if key not in _APP_KEYS:
            raise ProfileError(source, _line_of_key(text, "app", key), f"app.{key}", f"unknown key (known: {', '.join(_APP_KEYS)})")
        kind, check = _APP_KEYS[key]
        if not check(value):
            raise ProfileError(source, _line_of_key(text, "app", key), f"app.{key}", f"must be {kind}, got {value!r}")
    return Profile(
        name=app.get("name", ""),
        user=str(app.get("user", "")),
        writable=tuple(app.get("writable", ())),
        logs=tuple(app.get("logs", ())),
        services=tuple(app.get("services", ())),
        source=source,
    )


def load_profile(path: str) -> Profile:
    """Read and validate the profile at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ProfileError(path, None, "", "no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(path, None, "", f"cannot read: {exc}") from exc
    return parse_profile(text, path)
