"""Profiles: valid ones load; every error names file, line and key."""

from __future__ import annotations

import os

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


EXAMPLE_TABLES = """\
[app]
name = "shop"

[[http]]
url = "https://shop.example.com/health"
expect_text = "ok"

[[http]]
url = "https://shop.example.com/login"
login = { form = { username = "probe", password = "pw" }, expect_text = "Logged in", then_url = "https://shop.example.com/account" }

[[dependency]]
name = "database"
url = "postgres://shop@127.0.0.1/shop"

[[dependency]]
name = "payments"
tcp = "api.payments.example:443"

[[tls]]
file = "/etc/ssl/shop/fullchain.pem"
"""


def test_profile_http_dependency_tls_tables_load():
    p = parse_profile(EXAMPLE_TABLES)
    assert [h.url for h in p.http] == ["https://shop.example.com/health", "https://shop.example.com/login"]
    assert p.http[1].login.form == {"username": "probe", "password": "pw"}
    assert [(d.name, d.kind, d.address) for d in p.dependencies] == [
        ("database", "postgres", ("127.0.0.1", 5432)),
        ("payments", "tcp", ("api.payments.example", 443)),
    ]
    assert p.tls[0].file == "/etc/ssl/shop/fullchain.pem"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[http]]\nurl = "http://a"\n\n[[http]]\nurl = "http://b"\nexpect_status = 9\n', "site.toml:6: http[1].expect_status"),
        ('[[http]]\nurl = "ftp://a"\n', "site.toml:2: http[0].url: must be an http:// or https:// URL"),
        ('[[http]]\nurl = "http://a"\nlogin = { form = { u = "x" } }\n', "site.toml:3: http[0].login.expect_text: is required"),
        ('[[dependency]]\nname = "db"\n', "site.toml:1: dependency[0]: needs exactly one of tcp or url"),
        ('[[dependency]]\nname = "db"\ntcp = "db.local"\n', 'site.toml:3: dependency[0].tcp: must be "host:port"'),
        ('[[tls]]\nendpoint = "x:1"\ncolour = 1\n', "site.toml:3: tls[0].colour: unknown key"),
        ('[http]\nurl = "http://a"\n', "site.toml:1: http: must be written [[http]]"),
        # A port out of range or a broken IPv6 literal: a traceback or a probe error later.
        ('[[dependency]]\nname = "db"\nurl = "postgres://db:99999/x"\n', "site.toml:3: dependency[0].url: must be a postgres://"),
        ('[[http]]\nurl = "http://[::1/"\n', "site.toml:2: http[0].url: must be an http:// or https:// URL"),
        ('[[dependency]]\nname = "db"\ntcp = "db:99999"\n', 'site.toml:3: dependency[0].tcp: must be "host:port"'),
    ],
)
def test_profile_tables_bad_input_names_line_and_key(text, expected):
    with pytest.raises(ProfileError) as err:
        parse_profile(text, "site.toml")
    assert str(err.value).startswith(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("[app]\nname = \"x\"\nuser = " + "9" * 5000 + "\n", "site.toml:3: invalid value: an integer of more than 4,300 digits"),
    ("[app]\nname = " + "[" * 100_000 + "]" * 100_000 + "\n", "site.toml: invalid TOML: arrays or tables nested too deep"),
])
def test_profile_values_python_cannot_hold_are_refused_naming_the_file(text, expected):
    # A ValueError or RecursionError from the TOML reader used to end in "internal error".
    with pytest.raises(ProfileError) as err:
        parse_profile(text, "site.toml")
    assert str(err.value).startswith(expected)


def test_profile_that_is_a_fifo_or_a_device_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "site.toml"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        with pytest.raises(ProfileError, match="not a regular file"):
            load_profile(path)
    big = tmp_path / "big.toml"
    big.write_text("# x\n" * 400_000)
    with pytest.raises(ProfileError, match="a profile is at most"):
        load_profile(str(big))


def test_profile_a_valid_profile_is_checked_without_looking_up_lines(monkeypatch):
    # Each line lookup reads the whole text: done for every key, 10,000 [[http]] tables took
    # over 300 s. Lines are looked up only to name an error.
    import prodx.profile as profile

    calls = []
    monkeypatch.setattr(profile, "_line_of", lambda *a: calls.append(a) or None)
    text = "".join(f'[[http]]\nurl = "http://h{i}.example/"\nlogin = {{ form = {{ u = "x" }}, expect_text = "ok" }}\n'
                   for i in range(10_000))
    assert len(parse_profile(text, "site.toml").http) == 10_000
    assert calls == []
