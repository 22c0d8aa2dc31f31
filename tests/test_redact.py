"""Redaction: no secret from a corpus of real-looking log lines survives; plain lines stay."""

from __future__ import annotations

import pytest

from prodx.redact import MASK, redact

# (line, the secret that must not survive, text that must survive)
SECRETS = [
    ("connecting to postgres://app:S3cr3t-P4ss@db.internal:5432/shop", "S3cr3t-P4ss", "app:"),
    ("redis://:hunter2hunter2@127.0.0.1:6379/0 refused", "hunter2hunter2", "127.0.0.1:6379"),
    ("mysql://root:p%40ss%3Aw0rd@localhost/app", "p%40ss%3Aw0rd", "root:"),
    ('203.0.113.7 - - [02/Mar/2024:10:41:07 +0000] "GET /login?user=bob&password=Tr0ub4dor HTTP/1.1" 200',
     "Tr0ub4dor", "user=bob"),
    ("POST body: username=alice&passwd=letmein99&remember=1", "letmein99", "remember=1"),
    ("auth ok pwd=Zx9!qq user=admin", "Zx9!qq", "user=admin"),
    ("GET /api?api_key=9f8e7d6c5b4a39281706f5e4d3c2b1a0 HTTP/1.1", "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "/api?"),
    ("GET /cb?access_token=ya29.A0ARrdaM-abcdefgh&state=xyz", "ya29.A0ARrdaM-abcdefgh", "state=xyz"),
    ("client_secret=GOCSPX-1a2b3c4d5e6f7g8h9i0j", "GOCSPX-1a2b3c4d5e6f7g8h9i0j", "client_secret="),
    ('{"user": "bob", "password": "correct horse battery staple"}', "correct horse battery staple", '"user": "bob"'),
    ("DB_PASSWORD='quoted secret' DB_HOST=db", "quoted secret", "DB_HOST=db"),
    ("PGPASSWORD=pgSecret123 pg_dump shop", "pgSecret123", "pg_dump shop"),
    ("secret: s3cr3tvalue-for-app", "s3cr3tvalue-for-app", "secret:"),
    ("X-Auth-Token: 0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef", "X-Auth-Token"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "Authorization: Bearer"),
    ("authorization: Basic YWxpY2U6c2VjcmV0cGFzcw==", "YWxpY2U6c2VjcmV0cGFzcw==", "authorization"),
    ('headers={"Authorization": "Token 4f2a9c1e7b3d"}', "4f2a9c1e7b3d", "headers="),
    ("curl -H 'Authorization: Bearer sk-live-abc123def456ghi789' https://api.example.com", "sk-live-abc123def456ghi789", "https://api.example.com"),
    ("token eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcCJ9.c2lnbmF0dXJlLXBhcnQtaGVyZQ expired",
     "c2lnbmF0dXJlLXBhcnQtaGVyZQ", "expired"),
    ("aws_access_key_id=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    ("using key AKIAIOSFODNN7EXAMPLE for s3", "IOSFODNN7EXAMPLE", "for s3"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key"),
    ("GET /bucket/obj?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240302&X-Amz-Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
     "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024", "/bucket/obj"),
    ("key file: -----BEGIN RSA PRIVATE KEY-----MIIEowIBAAKCAQEA7bq1x-----END RSA PRIVATE KEY----- loaded",
     "MIIEowIBAAKCAQEA7bq1x", "loaded"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAA", "b3BlbnNzaC1rZXktdjEAAAAA", "BEGIN OPENSSH PRIVATE KEY"),
    ("Cookie: PHPSESSID=k3j4h5g6f7d8s9a0; lang=en; remember_me=abcdef123", "k3j4h5g6f7d8s9a0", "lang="),
    ("Cookie: PHPSESSID=k3j4h5g6f7d8s9a0; lang=en; remember_me=abcdef123", "abcdef123", "Cookie:"),
    ("Set-Cookie: sessionid=8x7y6z5w4v3u2t1s; Path=/; HttpOnly", "8x7y6z5w4v3u2t1s", "Set-Cookie: sessionid="),
    ("Set-Cookie: laravel_session=eyJpdiI6IlZ4dz09IiwidmFsdWUiOiJhYmMifQ%3D%3D; path=/", "eyJpdiI6IlZ4dz09IiwidmFsdWUiOiJhYmMifQ", "path"),
    ("request GET /?PHPSESSID=abcdef0123456789 from 10.0.0.5", "abcdef0123456789", "10.0.0.5"),
    ('[02-Mar-2024 10:41:07 UTC] PHP Warning:  session_start(): open(/var/lib/php/sessions/sess_k3j4h5g6f7d8s9a0q1w2e3r4t5, O_RDWR) failed',
     "k3j4h5g6f7d8s9a0q1w2e3r4t5", "/var/lib/php/sessions/sess_"),
    ("csrftoken=Zm9vYmFyYmF6cXV4cXV1eA sessionid=abc123def456", "Zm9vYmFyYmF6cXV4cXV1eA", "csrftoken="),
    ("git push https://x-access-token:ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/org/repo", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "github.com/org/repo"),
    ("using ghp_16C7e42F292c6912E7710c838347Ae178B4a for CI", "16C7e42F292c6912E7710c838347Ae178B4a", "for CI"),
    ("slack hook token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx", "slack hook"),
    ("Stripe charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc failed", "4eC39HqLyjWDarjtT1zdp7dc", "failed"),
    ("cron: mysqldump -uroot -pS3cretDump shop > /backup/shop.sql", "S3cretDump", "/backup/shop.sql"),
    ("api key: 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a", "3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a", "api key"),
    ("Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "Proxy-Authorization"),
    ("login?user=ops&pw=Summer2024x", "Summer2024x", "user=ops"),
    ("db_pw: hunter2pw", "hunter2pw", "db_pw"),
    ("sshpass -p 'S3cretSsh' ssh deploy@web1 uptime", "S3cretSsh", "deploy@web1"),
    ("sshpass -pS3cretSsh rsync -a /srv web2:/srv", "S3cretSsh", "rsync"),
    ("curl -u admin:Adm1nPass https://api.example.com/v1", "Adm1nPass", "admin:"),
    ("curl --user=admin:Adm1nPass -s https://api.example.com", "Adm1nPass", "https://api.example.com"),
    ("the admin logged in with password Winter2024! from 10.0.0.9", "Winter2024!", "from 10.0.0.9"),
]

# Ordinary lines that must come back unchanged.
PLAIN = [
    '2024/03/02 10:41:07 [crit] 1234#0: *88 pwrite() "/var/lib/nginx/body/0000000012" failed (28: No space left on device)',
    '203.0.113.7 - - [02/Mar/2024:10:41:07 +0000] "GET /register HTTP/1.1" 503 197 "-" "Mozilla/5.0"',
    "[02-Mar-2024 10:41:07 UTC] PHP Warning:  Unknown: Failed to write session data (files). Please verify that the current setting of session.save_path is correct (/var/lib/php/sessions) in Unknown on line 0",
    "2024-03-02 10:41:07.123 UTC [2345] FATAL:  password authentication failed for user \"shop\"",
    "Mar  2 10:41:07 web1 sshd[4321]: Failed password for root from 198.51.100.23 port 52144 ssh2",
    "Mar  2 10:41:07 web1 kernel: [12345.678901] EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm nginx",
    "[2024-03-02 10:41:07 +0000] [1234] [CRITICAL] WORKER TIMEOUT (pid:5678)",
    "1234:M 02 Mar 2024 10:41:07.123 # Failed opening the RDB file dump.rdb (in server root dir /var/lib/redis) for saving: No space left on device",
    "[2024-03-02T10:41:07.123456+00:00] request.INFO: Matched route \"app_login\". {\"route\":\"app_login\",\"request_uri\":\"https://shop.example.com/login\",\"method\":\"POST\"} []",
    "2024-03-02T10:41:07.123456Z 0 [Warning] [MY-010055] [Server] IP address '10.0.0.7' could not be resolved: Name or service not known",
    "cache key=users_list_42 hit ratio 0.93 for /var/cache/app/8f/3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
    "token_type=bearer expires_in=3600",
    "passenger_max_pool_size: 6",
    "Author: Jane Doe <jane@example.com>",
    "docker image sha256:3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a pulled",
    "sshd[812]: Accepted publickey for deploy; login with password authentication disabled",
    "user reset the password for bob",
    "curl -u admin https://api.example.com/v1 (password prompted)",
    "Setting up passwd:amd64 (1:4.13+dfsg1-1) ...",
    "hpw=3",
    "",
]


@pytest.mark.parametrize("line, secret, kept", SECRETS, ids=[s[1][:16] for s in SECRETS])
def test_redact_on_secret_corpus_masks_secret_and_keeps_context(line, secret, kept):
    out = redact(line)
    assert secret not in out, out
    assert kept in out, out
    assert MASK in out


@pytest.mark.parametrize("line", PLAIN, ids=range(len(PLAIN)))
def test_redact_on_ordinary_line_leaves_it_unchanged(line):
    assert redact(line) == line


def test_redact_is_idempotent_on_the_corpus():
    for line, _, _ in SECRETS:
        once = redact(line)
        assert redact(once) == once


def test_redact_on_non_utf8_replacement_text_does_not_raise():
    assert redact("caf\ufffd password=\ufffd\ufffdx ok") == f"caf\ufffd password={MASK} ok"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("redis-cli -h 127.0.0.1 -a hunter2pass ping", "hunter2pass"),
        ("/usr/bin/app --password hunter2pass --port 8000", "hunter2pass"),
        ("worker --api-key=AbC123xyz789 --verbose", "AbC123xyz789"),
        ("gunicorn --auth-token s3cr3tt0k app:wsgi", "s3cr3tt0k"),
    ],
)
def test_redact_command_line_secret_flags_are_masked(line, secret):
    out = redact(line)
    assert secret not in out
    assert MASK in out


def test_redact_command_line_ordinary_flags_stay():
    for line in ("nginx -g daemon off;", "ls --color=auto /var/log", "php-fpm: pool www"):
        assert redact(line) == line
