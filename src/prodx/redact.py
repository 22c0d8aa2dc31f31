"""Redaction: mask secrets in a log line before it reaches any report, JSON or export.

Masks passwords in URLs, ``password=``-style key/value pairs (query strings, forms, JSON,
``key: value``), Authorization headers, cookies and session ids, AWS keys, JWTs, private key
blocks, well-known vendor tokens (GitHub, Slack, Stripe, GitLab) and long tokens after
key-ish words. The key name stays so the line remains readable; timestamps, paths, pids and
IPs are left alone.

>>> redact("GET /login?user=bob&password=hunter2 HTTP/1.1")
'GET /login?user=bob&password=[REDACTED] HTTP/1.1'
>>> redact("connecting to postgres://app:s3cr3t@db:5432/app")
'connecting to postgres://app:[REDACTED]@db:5432/app'
"""

from __future__ import annotations

import re

MASK = "[REDACTED]"

_PRIVATE_KEY = re.compile(
    r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----).*?(-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)",
    re.S)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s/]*(@)")
_AUTH_HEADER = re.compile(
    r"((?:proxy-)?authorization\"?'?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest|negotiate|ntlm|aws4-hmac-sha256)\s+)?)"
    r"[^\s\"',;]+", re.I)
_BEARER = re.compile(r"\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/-]{8,}=*(?![\w=])", re.I)
# Cookie headers: every value goes, names stay.
_COOKIE_HEADER = re.compile(r"((?:set-)?cookie\"?\s*[:=]\s*)([^\r\n\"]*)", re.I)
_COOKIE_VALUE = re.compile(r"(^|;\s*|,\s*)([^=;,\s]+=)([^;,\s]*)")
_SESSION_IDS = re.compile(
    r"\b(PHPSESSID|sessionid|session_id|sessid|laravel_session|JSESSIONID|connect\.sid|"
    r"[A-Za-z0-9_]*_session|XSRF-TOKEN|csrftoken|csrf_token|remember_web_[0-9a-f]+)=([^;&\s\"',]+)",
    re.I)
# PHP session files are named after the session id: sess_<id>.
_SESS_FILE = re.compile(r"\bsess_[A-Za-z0-9,-]{16,}")
_AWS_KEY_ID = re.compile(r"\b((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA))[A-Z0-9]{16}\b")
_VENDOR_TOKENS = re.compile(
    r"\b(ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|glpat-|xox[abposr]-|sk_live_|sk_test_|rk_live_|"
    r"pk_live_|SG\.|AIza|hf_|npm_)[A-Za-z0-9_.-]{16,}")
_KEYWORDS = (r"passw(?:or)?d|pwd|(?<![A-Za-z0-9])pw|pass|passphrase|secret|token|api[_-]?key|apikey|"
             r"access[_-]?key|secret[_-]?key|private[_-]?key|credentials?|signature|sig|auth|"
             r"session[_-]?id|sessid")
# Key ends exactly at a keyword ("db_password", "X-Auth-Token"), so "passenger=" or
# "token_type=" are left alone.
_KV = re.compile(
    r"(\b[\w.-]*?(?:" + _KEYWORDS + r")(?![A-Za-z])[\"']?\s*(?:=|:|=>)\s*)"
    # dpkg names packages by architecture ("passwd:amd64"): not a value.
    r"(?!(?:amd64|arm64|armhf|armel|i386|all|ppc64el|s390x|riscv64|mips64el)\b)"
    r"(\[REDACTED\]|\"[^\"]*\"|'[^']*'|[^\s\"'&,;}<>)\]]+)", re.I)
_MYSQL_CLI = re.compile(r"(\bmysql(?:dump|admin)?\b[^\n]*?\s-p)(?!\s)([^\s]+)")
# Command lines: "--password hunter2", "--token=abc", redis-cli's "-a hunter2".
_CLI_FLAG = re.compile(
    r"((?:^|\s)--?(?:[\w-]*(?:password|passwd|passphrase|secret|token|api-?key|auth)[\w-]*)(?:=|\s+))"
    r"(?!\[REDACTED\])(?!-)([^\s]+)", re.I)
_REDIS_CLI = re.compile(r"(\bredis-cli\b[^\n]*?\s-a\s+)(?!-)([^\s]+)")
_SSHPASS = re.compile(r"(\bsshpass\b[^\n]*?\s-p\s*)(?!-)([^\s]+)")
# curl's "-u user:password" and "--user user:password": the user stays.
_CURL_USER = re.compile(r"(\bcurl\b[^\n]*?\s(?:-u|--user)(?:\s+|=)['\"]?[^\s:'\"]+:)(?!\[REDACTED\])([^\s'\"]+)")
# Prose: "logged in with password hunter2"; words that name a kind of password are not one.
_PROSE_PASSWORD = re.compile(
    r"(\b(?:with|using|the|new|old)\s+password\s+(?:is\s+|was\s+|of\s+)?)"
    r"(?!(?:authentication|auth|login|prompt|protection|reset|change|changes|manager|policy|expired|hash|file|"
    r"for|from|to|in|on|and|or|field|check|failed|length|\[REDACTED\])\b)(\S+)", re.I)
# Long opaque tokens after a key-ish word: "api key 3f9a..." or "token 3f9a...".
_GENERIC = re.compile(
    r"(\b(?:key|token|secret|password|credential|bearer|signature|auth)s?\b[^A-Za-z0-9/\s]{0,3}\s?)"
    r"(?![/.])([A-Za-z0-9+/_=-]{24,})", re.I)


def _mask_quoted(match: re.Match[str]) -> str:
    value = match.group(2)
    if value[:1] in "\"'" and len(value) >= 2:
        return match.group(1) + value[0] + MASK + value[-1]
    return match.group(1) + MASK


def _mask_cookies(match: re.Match[str]) -> str:
    return match.group(1) + _COOKIE_VALUE.sub(lambda m: m.group(1) + m.group(2) + MASK,
                                              match.group(2))


def redact(line: str) -> str:
    """The line with every secret it carries replaced by ``[REDACTED]``.

    Args:
        line: one decoded log line (any text; never raises).

    Returns:
        The same line with secret values masked and their key names kept; a line without
        secrets is returned unchanged.
    """
    if not line:
        return line
    line = _PRIVATE_KEY.sub(lambda m: m.group(1) + MASK + m.group(2), line)
    line = _JWT.sub(MASK, line)
    line = _URL_USERINFO.sub(r"\1" + MASK + r"\2", line)
    line = _AUTH_HEADER.sub(r"\1" + MASK, line)
    line = _BEARER.sub(r"\1" + MASK, line)
    line = _COOKIE_HEADER.sub(_mask_cookies, line)
    line = _SESSION_IDS.sub(r"\1=" + MASK, line)
    line = _SESS_FILE.sub("sess_" + MASK, line)
    line = _AWS_KEY_ID.sub(r"\1" + MASK, line)
    line = _VENDOR_TOKENS.sub(r"\1" + MASK, line)
    line = _MYSQL_CLI.sub(r"\1" + MASK, line)
    line = _REDIS_CLI.sub(r"\1" + MASK, line)
    line = _SSHPASS.sub(r"\1" + MASK, line)
    line = _CURL_USER.sub(r"\1" + MASK, line)
    line = _PROSE_PASSWORD.sub(r"\1" + MASK, line)
    line = _CLI_FLAG.sub(r"\1" + MASK, line)
    line = _KV.sub(_mask_quoted, line)
    line = _GENERIC.sub(r"\1" + MASK, line)
    return line
