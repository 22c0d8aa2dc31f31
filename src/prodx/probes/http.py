"""The app as its users see it: the profile's [[http]] URLs, its login journey, and the 5xx
share in the web server's access log.

Reads, through ``ctx.host.observe("http", ...)`` (recorded and replayed like files):

- ``["GET", url, expect_text]``: one GET with httpx, no redirect followed, certificate not
  verified (the TLS probe judges certificates), connect bound 1 s, each read 1.5 s, the body
  read for at most 2 s from the start; answers ``{"status": 200, "latency_s": 0.012,
  "text_found": true, "excerpt": "<html>…", "error": ""}`` (excerpt at most 2 KiB).
- ``["LOGIN", url, then_url, [form field names], expect_text]``: POST the form to ``url`` (and
  nowhere else), then GET ``then_url`` or the redirect's Location with the cookies the POST
  set; answers the POST's status, the cookie names (never values), the followed URL, its
  status and whether ``expect_text`` came back. Form values stay out of the recorded key.

And the last ``ACCESS_TAIL_BYTES`` of the access logs (the profile's logs named ``*access*``,
``/var/log/nginx/access.log``, ``/var/log/apache2/access.log``, ``/var/log/httpd/access_log``)::

    203.0.113.9 - - [10/Oct/2026:13:55:36 +0200] "GET /login HTTP/1.1" 502 157 "-" "curl/8.5.0"

A profile without [[http]] leaves the endpoint findings unknown; no access log, or too few
requests in the last 5 minutes to judge a rate, leaves ``http.server_errors_up`` unknown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urljoin

from prodx.accesslog import ErrorRate, error_rate
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.profile import HttpCheck

CONNECT_S = 1.0
READ_S = 1.5
TOTAL_S = 2.0
#: Latency above this (to the response headers and the first KiB of body) counts as slow.
SLOW_S = 1.0
#: Bytes of body searched for the expected text; EXCERPT_BYTES of it are kept as evidence.
BODY_BYTES = 256 * 1024
EXCERPT_BYTES = 2048
ACCESS_TAIL_BYTES = 4 << 20
ACCESS_LOGS = ("/var/log/nginx/access.log", "/var/log/apache2/access.log", "/var/log/httpd/access_log")
RECENT_S = 300
BASELINE_S = 3600
#: Below this many requests in the recent window a share says nothing.
MIN_RECENT_REQUESTS = 20
MIN_RECENT_5XX = 5
#: The recent 5xx share must reach this, and this many times the baseline share.
RATE_UP_SHARE = 0.05
RATE_UP_FACTOR = 3.0
_USER_AGENT = "prodx (read-only diagnosis)"


def _client(follow: bool) -> Any:
    import httpx

    timeout = httpx.Timeout(connect=CONNECT_S, read=READ_S, write=READ_S, pool=CONNECT_S)
    return httpx.Client(verify=False, follow_redirects=follow, max_redirects=3, timeout=timeout,
                        headers={"User-Agent": _USER_AGENT}, trust_env=False)


def _exchange(client: Any, method: str, url: str, expect_text: str, started: float, **kwargs: Any) -> dict[str, Any]:
    """One request: status, latency, whether ``expect_text`` is in the first BODY_BYTES, an
    excerpt; ``error`` names a failure (timeout, refused) instead of raising."""
    import httpx

    out: dict[str, Any] = {"url": url, "status": None, "latency_s": None, "text_found": None, "excerpt": "",
                           "location": "", "error": ""}
    t0 = time.monotonic()
    try:
        with client.stream(method, url, **kwargs) as resp:
            out["status"] = resp.status_code
            out["location"] = resp.headers.get("location", "")
            body = b""
            for chunk in resp.iter_bytes():
                body += chunk
                # The read timeout bounds each chunk, not the whole body: a slow drip would not end.
                if len(body) >= BODY_BYTES or time.monotonic() - started > TOTAL_S:
                    break
            out["latency_s"] = round(time.monotonic() - t0, 4)
            text = body.decode(resp.encoding or "utf-8", "replace")
            out["text_found"] = (expect_text in text) if expect_text else None
            out["excerpt"] = text[:EXCERPT_BYTES]
            out["cookies"] = sorted(resp.cookies.keys())
    except httpx.TimeoutException as exc:
        out["error"] = f"timeout ({type(exc).__name__})"
        out["latency_s"] = round(time.monotonic() - t0, 4)
    except httpx.HTTPError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def fetch(url: str, expect_text: str) -> dict[str, Any]:
    """GET ``url`` once, no redirect followed."""
    with _client(follow=False) as client:
        return _exchange(client, "GET", url, expect_text, time.monotonic())


def login_journey(url: str, form: dict[str, str], then_url: str, expect_text: str) -> dict[str, Any]:
    """POST ``form`` to ``url``; then open ``then_url`` (or the Location the POST answered,
    or the POST's own page when it did not redirect) with its cookies and look for ``expect_text``."""
    started = time.monotonic()
    with _client(follow=False) as client:
        post = _exchange(client, "POST", url, expect_text, started, data=form)
        out: dict[str, Any] = {"post": post, "then": None}
        if post["status"] is None or post["status"] >= 400:
            return out
        nxt = then_url or (urljoin(url, post["location"]) if post["location"] else "")
        if not nxt:
            return out
        client.follow_redirects = True
        out["then"] = _exchange(client, "GET", nxt, expect_text, started)
        return out


def check_verdict(check: HttpCheck, result: dict[str, Any]) -> str:
    """Why the answer is not what the profile expects; empty when it is.

    >>> check_verdict(HttpCheck("http://x/", 200, "ok"), {"status": 200, "text_found": False, "error": ""})
    "the body lacks 'ok'"
    >>> check_verdict(HttpCheck("http://x/"), {"status": 503, "text_found": None, "error": ""})
    'status 503, expected 200'
    >>> check_verdict(HttpCheck("http://x/"), {"status": 200, "text_found": None, "error": ""})
    ''
    """
    if result.get("error"):
        return result["error"]
    if result.get("status") != check.expect_status:
        return f"status {result.get('status')}, expected {check.expect_status}"
    if check.expect_text and not result.get("text_found"):
        return f"the body lacks {check.expect_text!r}"
    return ""


class HttpEndpointsProbe(Probe):
    """The profile's URLs answer with the expected status and text, fast, and a login sticks."""

    name = "http.endpoints"
    findings = ("http.endpoint_failing", "http.slow", "http.login_session_lost")
    cost = 1.0
    deadline_s = 2.5

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        checks = list(ctx.target.http)
        if not checks:
            why = "no [[http]] URL in the profile: add the app's health and login URLs to check them"
            yield from (unknown(f, why) for f in self.findings)
            return
        host = ctx.host

        def get(check: HttpCheck) -> dict[str, Any]:
            return host.observe("http", ["GET", check.url, check.expect_text], lambda: fetch(check.url, check.expect_text))

        def journey(check: HttpCheck) -> dict[str, Any]:
            assert check.login is not None
            lg = check.login
            key = ["LOGIN", check.url, lg.then_url, sorted(lg.form), lg.expect_text]
            return host.observe("http", key, lambda: login_journey(check.url, lg.form, lg.then_url, lg.expect_text))

        # The login journey POSTs a form: the app creates a session (a write on the server).
        logins = [c for c in checks if c.login] if ctx.write_test else []
        with ThreadPoolExecutor(max_workers=min(8, len(checks) + len(logins))) as pool:
            gets = list(pool.map(get, checks))
            journeys = list(pool.map(journey, logins))

        failing, slow = [], []
        for check, result in zip(checks, gets):
            verdict = check_verdict(check, result)
            if verdict:
                failing.append({"url": check.url, "why": verdict, "status": result.get("status"),
                                "latency_s": result.get("latency_s"), "excerpt": (result.get("excerpt") or "")[:300]})
            latency = result.get("latency_s")
            if latency is not None and (latency > SLOW_S or result.get("error", "").startswith("timeout")):
                slow.append({"url": check.url, "latency_s": latency, "error": result.get("error", "")})
        lost, login_unknown = [], []
        for check, result in zip(logins, journeys):
            post = result["post"]
            if post["error"] or (post["status"] or 0) >= 400:
                why = post["error"] or f"status {post['status']}"
                failing.append({"url": check.url, "why": f"the login POST failed: {why}", "status": post["status"],
                                "latency_s": post["latency_s"], "excerpt": (post.get("excerpt") or "")[:300]})
                login_unknown.append(f"the login POST to {check.url} failed ({why}), so the session was not tested")
                continue
            final = result["then"] or post
            if final["error"]:
                login_unknown.append(f"opening {final['url']} after the login failed: {final['error']}")
                continue
            if not final.get("text_found"):
                assert check.login is not None
                lost.append({"url": check.url, "post_status": post["status"], "cookies_set": post.get("cookies", []),
                             "followed": final["url"], "status": final["status"],
                             "expected": check.login.expect_text, "excerpt": (final.get("excerpt") or "")[:300]})

        if failing:
            f0 = failing[0]
            yield present("http.endpoint_failing", f"{f0['url']}: {f0['why']}" + (f" (+{len(failing) - 1} more)" if len(failing) > 1 else ""),
                          failing=failing)
        else:
            yield absent("http.endpoint_failing", f"{len(checks)} URL(s) answered as expected",
                         urls=[c.url for c in checks])
        timed = [r for r in gets if r.get("latency_s") is not None]
        if slow:
            s0 = slow[0]
            yield present("http.slow", f"{s0['url']} took {s0['latency_s']:.2f} s (threshold {SLOW_S:.1f} s)",
                          slow=slow, threshold_s=SLOW_S)
        elif timed:
            worst = max(timed, key=lambda r: r["latency_s"])
            yield absent("http.slow", f"slowest {worst['url']} in {worst['latency_s']:.3f} s",
                         latency_s={r["url"]: r["latency_s"] for r in timed}, threshold_s=SLOW_S)
        else:
            yield unknown("http.slow", "no URL answered, so no latency was measured")
        if not logins and any(c.login for c in checks):
            yield unknown("http.login_session_lost", "the login journey was not run (--no-write-test): its POST makes "
                                                     "the app create a session")
        elif not logins:
            yield unknown("http.login_session_lost",
                          "no [[http]] check has a login journey (login = { form = {...}, expect_text = ... })")
        elif lost:
            l0 = lost[0]
            yield present("http.login_session_lost",
                          f"login POST to {l0['url']} answered {l0['post_status']}, but {l0['followed']} "
                          f"(status {l0['status']}) lacks {l0['expected']!r}: the session did not survive",
                          journeys=lost)
        elif login_unknown:
            yield unknown("http.login_session_lost", login_unknown[0])
        else:
            yield absent("http.login_session_lost", f"{len(logins)} login journey(s) kept the session")


def access_logs(ctx: ProbeContext) -> list[str]:
    """The profile's access logs, else the web servers' default ones that exist."""
    named = [p for p in ctx.target.logs if "access" in p.rsplit("/", 1)[-1]]
    return list(dict.fromkeys([*named, *(p for p in ACCESS_LOGS if ctx.host.exists(p))]))


def rate_verdict(rate: ErrorRate) -> bool | None:
    """True when the recent 5xx share is up against the baseline, False when it is not,
    None when there are too few recent requests to tell.

    >>> rate_verdict(ErrorRate(100, 30, 1000, 10, 3600, 0))
    True
    >>> rate_verdict(ErrorRate(100, 2, 1000, 10, 3600, 0))
    False
    >>> rate_verdict(ErrorRate(3, 3, 0, 0, 0, 0)) is None
    True
    """
    if rate.recent_requests < MIN_RECENT_REQUESTS:
        return None
    return (rate.recent_5xx >= MIN_RECENT_5XX and rate.recent_share >= RATE_UP_SHARE
            and rate.recent_share >= RATE_UP_FACTOR * rate.baseline_share)


class HttpAccessLogProbe(Probe):
    """The share of 5xx answers in the last 5 minutes against the hour before."""

    name = "http.access_log"
    findings = ("http.server_errors_up",)
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        logs = access_logs(ctx)
        if not logs:
            yield unknown("http.server_errors_up", "no access log found (looked in " + ", ".join(ACCESS_LOGS)
                          + "); name yours in the profile's logs to judge the 5xx rate")
            return
        now = ctx.host.now()
        rates: dict[str, ErrorRate] = {}
        unreadable: dict[str, str] = {}
        for path in logs:
            try:
                tail = ctx.host.read_tail(path, ACCESS_TAIL_BYTES)
            except FileNotFoundError:
                continue
            except PermissionError:
                unreadable[path] = "permission denied (run as root or as the web server's user)"
                continue
            lines = tail.split(b"\n")
            if len(tail) == ACCESS_TAIL_BYTES:
                lines = lines[1:]  # the first line of a bounded tail is cut off
            rates[path] = error_rate(lines, now, RECENT_S, BASELINE_S)
        if not rates:
            why = "; ".join(f"{p}: {w}" for p, w in unreadable.items()) or "the access logs vanished while read"
            yield unknown("http.server_errors_up", why)
            return
        evidence = {p: {"recent_requests": r.recent_requests, "recent_5xx": r.recent_5xx,
                        "baseline_requests": r.baseline_requests, "baseline_5xx": r.baseline_5xx,
                        "baseline_covered_s": round(r.baseline_covered_s)} for p, r in rates.items()}
        verdicts = {p: rate_verdict(r) for p, r in rates.items()}
        up = [p for p, v in verdicts.items() if v]
        if up:
            r = rates[up[0]]
            yield present("http.server_errors_up",
                          f"{up[0]}: {r.recent_5xx} of {r.recent_requests} requests ({r.recent_share:.0%}) got 5xx in the "
                          f"last {RECENT_S // 60} min, against {r.baseline_share:.1%} in the hour before",
                          logs=evidence)
        elif any(v is False for v in verdicts.values()):
            yield absent("http.server_errors_up", "the 5xx share of the last 5 minutes is not up against the hour before",
                         logs=evidence)
        else:
            total = sum(r.recent_requests for r in rates.values())
            yield unknown("http.server_errors_up", f"only {total} request(s) in the last {RECENT_S // 60} minutes of "
                          f"{', '.join(rates)}: too few to judge a 5xx rate", logs=evidence)
