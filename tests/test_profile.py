"""Profiles: valid ones load; every error names file, line and key."""

from __future__ import annotations

import pytest

from prodx.profile import ProfileError, load_profile, parse_profile


def test_profile_full_example_loads_every_key():
    p = parse_profile(
        '[app]\nname = "shop"\nuser = "www-data"\nwritable = ["/var/www/shop/var/cache"]\n'
        'logs = ["/var/www/shop/var/log/prod.log"]\nservices = ["php-fpm8.2", "nginx"]\n'
    )
    assert (p.name, p.user, p.writable, p.logs, p.services) == (
        "shop", "www-data", ("/var/www/shop/var/cache",), ("/var/www/shop/var/log/prod.log",), ("php-fpm8.2", "nginx"),
    )


def test_profile_empty_is_valid_and_empty():
    assert parse_profile("").writable == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[app]\nname = "x"\nwritable = "/tmp"\n', "site.toml:3: app.writable: must be a list of absolute paths"),
        ('[app]\nwritable = ["relative/path"]\n', "site.toml:2: app.writable"),
        ('[app]\nname = "x"\n\ncolour = "blue"\n', "site.toml:4: app.colour: unknown key"),
        ('[application]\nname = "x"\n', "site.toml:1: application: unknown table or key"),
        ('[app]\nservices = [1, 2]\n', "site.toml:2: app.services: must be a list of process names"),
        ('[app]\nname = "x\n', "site.toml:2: invalid TOML"),
        ('[app]\nuser = true\n', "site.toml:2: app.user"),
    ],
)
def test_profile_bad_input_error_names_file_line_and_key(text, expected):
    with pytest.raises(ProfileError) as err:
        parse_profile(text, "site.toml")
    assert str(err.value).startswith(expected)


def test_profile_missing_file_error_names_it(tmp_path):
    with pytest.raises(ProfileError, match="nope.toml: no such file"):
        load_profile(str(tmp_path / "nope.toml"))
