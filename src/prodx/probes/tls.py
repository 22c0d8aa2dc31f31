"""Certificates: the ones the profile's [[tls]] endpoints serve, the profile's certificate
files, and the files the web server configuration names.

Reads:

- ``ctx.host.observe("tls", [host, port, sni], ...)``: a TLS handshake with the stdlib
  ``ssl`` module (connect and handshake bounded by 1.5 s each), first without verification
  to get what the server sends, then verifying against this machine's trust store to keep
  OpenSSL's verdict; answers ``{"chain_der_b64": [leaf, ...], "chain_complete_known": true,
  "verify_code": 20, "verify_message": "unable to get local issuer certificate", "error": ""}``.
- the PEM files of the profile's ``[[tls]] file`` entries and the ones named by
  ``ssl_certificate`` / ``SSLCertificateFile`` / ``SSLCertificateChainFile`` in the configs the
  running servers were started with (discovery: ``nginx -c``, ``apache2 -f``, a database's
  own config) and in /etc/nginx (nginx.conf, conf.d/*.conf, sites-enabled/*),
  /etc/apache2/sites-enabled/* and /etc/httpd/conf.d/*.conf, e.g.
  ``ssl_certificate /etc/letsencrypt/live/shop/fullchain.pem;``, with the ``server_name`` of
  the nginx server block that names each (a file whose certificate covers none of its
  server's names is a name mismatch); and the TLS listeners of those configs (``listen 443
  ssl`` with its ``server_name``) as endpoints.
- this host's CA bundle (/etc/ssl/certs/ca-certificates.crt), to tell a leaf signed directly
  by a trusted root from one whose intermediate is missing.

No endpoint and no certificate file (a host without TLS, a profile without [[tls]]) leaves
every finding unknown.
"""

from __future__ import annotations

import base64
import re
import socket
import ssl
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext

CONNECT_S = 1.5
EXPIRING_S = 14 * 86400
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
NGINX_CONFIGS = ("/etc/nginx/nginx.conf", "/etc/nginx/conf.d/*.conf", "/etc/nginx/sites-enabled/*")
APACHE_CONFIGS = ("/etc/apache2/sites-enabled/*", "/etc/apache2/mods-enabled/ssl.conf", "/etc/httpd/conf.d/*.conf")
#: OpenSSL X509_V_ERR_* codes that mean the chain could not be built up to a trusted root.
_NO_ISSUER = {2, 20}
_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def handshake(host: str, port: int, sni: str) -> dict[str, Any]:
    """What the server at host:port sends for ``sni``, and whether this host's trust store
    accepts it (OpenSSL's verify code when it does not)."""
    out: dict[str, Any] = {"chain_der_b64": [], "chain_complete_known": False, "verify_code": None,
                           "verify_message": "", "error": ""}
    loose = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=CONNECT_S) as raw, \
                loose.wrap_socket(raw, server_hostname=sni or None) as tls:
            leaf = tls.getpeercert(binary_form=True)
            # SSLSocket.get_unverified_chain is public from Python 3.13; 3.10-3.12 have it
            # only on the private _sslobj. Without it we know the leaf alone.
            getter = getattr(tls, "get_unverified_chain", None) or getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
            chain = []
            if getter is not None:
                try:
                    chain = [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in getter() or []]  # type: ignore[attr-defined]
                    out["chain_complete_known"] = True
                except (AttributeError, ssl.SSLError, ValueError):
                    chain = []
            out["chain_der_b64"] = [base64.b64encode(c).decode() for c in (chain or ([leaf] if leaf else []))]
    except (OSError, ssl.SSLError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    strict = ssl.create_default_context()
    try:
        with socket.create_connection((host, port), timeout=CONNECT_S) as raw, \
                strict.wrap_socket(raw, server_hostname=sni or host):
            out["verify_code"] = 0
    except ssl.SSLCertVerificationError as exc:
        out["verify_code"], out["verify_message"] = exc.verify_code, exc.verify_message
    except (OSError, ssl.SSLError) as exc:
        out["verify_message"] = f"{type(exc).__name__}: {exc}"
    return out


@dataclass(frozen=True)
class Cert:
    """The facts of one certificate that matter here."""

    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: float
    not_after: float
    fingerprint: str
    self_signed: bool
    is_ca: bool
    subject_der: bytes = field(repr=False, default=b"")
    issuer_der: bytes = field(repr=False, default=b"")


def parse_cert(der: bytes) -> Cert:
    """A DER certificate's subject, issuer, DNS names, validity and SHA-256 fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    c = x509.load_der_x509_certificate(der)
    try:
        names = tuple(c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    if not names:
        names = tuple(str(a.value) for a in c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))
    try:
        is_ca = bool(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    return Cert(
        subject=c.subject.rfc4514_string(),
        issuer=c.issuer.rfc4514_string(),
        names=names,
        not_before=c.not_valid_before_utc.timestamp(),
        not_after=c.not_valid_after_utc.timestamp(),
        fingerprint=c.fingerprint(hashes.SHA256()).hex(),
        self_signed=c.subject == c.issuer,
        is_ca=is_ca,
        subject_der=c.subject.public_bytes(),
        issuer_der=c.issuer.public_bytes(),
    )


def pem_blocks(data: bytes) -> list[bytes]:
    """The DER of every PEM certificate in ``data``, in order; empty when there is none."""
    out = []
    for block in _PEM.findall(data):
        body = b"".join(block.splitlines()[1:-1])
        try:
            out.append(base64.b64decode(body))
        except ValueError:
            continue
    return out


def name_matches(host: str, names: Iterable[str]) -> bool:
    """Whether ``host`` is covered by one of the certificate's DNS ``names`` (RFC 6125: a
    wildcard stands for exactly one leftmost label).

    >>> name_matches("shop.example.com", ["*.example.com"])
    True
    >>> name_matches("a.shop.example.com", ["*.example.com"])
    False
    >>> name_matches("Example.com.", ["www.example.com", "example.com"])
    True
    """
    host = host.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _is_ip(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        return True
    except OSError:
        return False


def nginx_cert_sites(text: str) -> dict[str, list[str]]:
    """Certificate file → the ``server_name`` names of the nginx server blocks that serve it
    (catch-all ``_``, regexes and blocks without names left out; comments ignored).

    >>> nginx_cert_sites('server { listen 443 ssl; server_name shop.example.com www.shop.example.com;\\n'
    ...                  '  ssl_certificate /etc/ssl/shop.pem; }\\nserver { server_name _; ssl_certificate /etc/ssl/x.pem; }')
    {'/etc/ssl/shop.pem': ['shop.example.com', 'www.shop.example.com']}
    """
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"\bserver\s*\{", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        block = text[m.end():i]
        names = [n for d in re.findall(r"(?:^|[;{}\s])server_name\s+([^;]+);", block) for n in d.split()
                 if n != "_" and not n.startswith("~") and "$" not in n]
        for _directive, path in config_cert_paths(block, "nginx"):
            if names:
                out.setdefault(path, []).extend(n for n in names if n not in out.get(path, []))
    return out


def config_cert_paths(text: str, kind: str) -> list[tuple[str, str]]:
    """(directive, path) of the certificate files a web server config names; paths holding
    variables (``$ssl_server_name``) are skipped, comments ignored.

    >>> config_cert_paths("ssl_certificate /etc/ssl/a.pem; # ssl_certificate /old.pem;\\nssl_certificate_key /k;", "nginx")
    [('ssl_certificate', '/etc/ssl/a.pem')]
    >>> config_cert_paths('  SSLCertificateFile "/etc/ssl/b.crt"\\n  SSLCertificateChainFile /etc/ssl/ca.crt', "apache")
    [('SSLCertificateFile', '/etc/ssl/b.crt'), ('SSLCertificateChainFile', '/etc/ssl/ca.crt')]
    """
    if kind == "nginx":
        pattern = re.compile(r"^\s*(ssl_certificate)\s+[\"']?([^\s;\"']+)[\"']?\s*;", re.M)
    else:
        pattern = re.compile(r"^\s*(SSLCertificateFile|SSLCertificateChainFile)\s+[\"']?([^\s\"']+)[\"']?", re.M | re.I)
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for m in pattern.finditer(line):
            if "$" not in m.group(2):
                out.append((m.group(1), m.group(2)))
    return out


def _web_configs(ctx: ProbeContext, patterns: tuple[str, ...], nginx: bool = False) -> list[str]:
    """The config files matching ``patterns``, and for nginx also the config a running master
    was started with (``-c``) and its includes."""
    found = [conf for pattern in patterns for conf in ctx.host.glob(pattern)]
    if nginx:
        from prodx.probes.network import nginx_config_files

        found += nginx_config_files(ctx)
    return list(dict.fromkeys(found))


@dataclass
class Served:
    """One endpoint's handshake, judged."""

    endpoint: str
    sni: str
    chain: list[Cert]
    verify_code: int | None
    verify_message: str
    chain_known: bool


@dataclass
class OnDisk:
    """One certificate file (plus the Apache chain file beside it), judged."""

    path: str
    chain: list[Cert]
    source: str


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.1f} days" if abs(days) < 10 else f"{days:.0f} days"


class TlsCertificatesProbe(Probe):
    """Expired, soon expiring, misnamed or chain-incomplete certificates, served or on disk,
    and files renewed on disk that the server has not loaded."""

    name = "tls.certificates"
    findings = ("tls.cert_expired", "tls.cert_expiring_soon", "tls.cert_not_yet_valid", "tls.chain_incomplete", "tls.name_mismatch",
                "tls.served_cert_stale")
    cost = 1.0
    deadline_s = 2.5

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        host = ctx.host
        endpoints = []
        for check in ctx.target.tls:
            if check.endpoint:
                name, _, port = check.endpoint.rpartition(":")
                name = name.strip("[]")
                sni = check.server_name or ("" if _is_ip(name) else name)
                endpoints.append((check.endpoint, name, int(port), sni))
        files: dict[str, str] = {c.file: "profile" for c in ctx.target.tls if c.file}
        chain_files: dict[str, str] = {}
        sites: dict[str, list[str]] = {}
        # A second pass examines what the first pass's findings named, nothing more.
        if not ctx.target.second_pass:
            found = ctx.discovery()
            known = {e[0] for e in endpoints}
            for endpoint, server_name, _why in found.tls_endpoints:
                if endpoint not in known:
                    host_part, _, port = endpoint.rpartition(":")
                    endpoints.append((endpoint, host_part.strip("[]"), int(port), server_name))
            for path, why in found.certificates:
                files.setdefault(path, why)
            for path, why in found.chain_files:
                chain_files.setdefault(path, why)
        config_sources = () if ctx.target.second_pass else (
            (_web_configs(ctx, NGINX_CONFIGS, nginx=True), "nginx"), (_web_configs(ctx, APACHE_CONFIGS), "apache"))
        for confs, kind in config_sources:
            for conf in confs:
                try:
                    text = host.read_text(conf, 256 * 1024)
                except OSError:
                    continue
                if kind == "nginx":
                    for path, names in nginx_cert_sites(text).items():
                        sites.setdefault(path if path.startswith("/") else "/etc/nginx/" + path, names)
                for directive, path in config_cert_paths(text, kind):
                    if not path.startswith("/"):
                        path = "/etc/nginx/" + path if kind == "nginx" else "/etc/apache2/" + path
                    if directive.lower() == "sslcertificatechainfile":
                        chain_files.setdefault(path, conf)
                    else:
                        files.setdefault(path, conf)

        def shake(ep: tuple[str, str, int, str]) -> dict[str, Any]:
            _label, name, port, sni = ep
            return host.observe("tls", [name, port, sni], lambda: handshake(name, port, sni))

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(endpoints)))) as pool:
            results = list(pool.map(shake, endpoints))

        served: list[Served] = []
        failed: dict[str, str] = {}
        for (label, _name, _port, sni), res in zip(endpoints, results):
            if res.get("error") or not res.get("chain_der_b64"):
                failed[label] = res.get("error") or "the server sent no certificate"
                continue
            chain = [parse_cert(base64.b64decode(b)) for b in res["chain_der_b64"]]
            served.append(Served(label, sni, chain, res.get("verify_code"), res.get("verify_message", ""),
                                 bool(res.get("chain_complete_known"))))

        extra_chain: list[Cert] = []
        for path in chain_files:
            try:
                extra_chain += [parse_cert(d) for d in pem_blocks(host.read_bytes(path, 1 << 20))]
            except (OSError, ValueError):
                continue
        disk: list[OnDisk] = []
        unreadable: dict[str, str] = {}
        for path, source in files.items():
            try:
                blocks = pem_blocks(host.read_bytes(path, 1 << 20))
            except FileNotFoundError:
                unreadable[path] = "missing"
                continue
            except PermissionError:
                unreadable[path] = "permission denied (run as root to read private certificate folders)"
                continue
            except OSError as exc:
                unreadable[path] = exc.strerror or str(exc)
                continue
            try:
                chain = [parse_cert(b) for b in blocks]
            except ValueError as exc:
                unreadable[path] = f"not a certificate: {exc}"
                continue
            if not chain:
                unreadable[path] = "holds no PEM certificate"
                continue
            if source != "profile" and extra_chain and len(chain) == 1:
                chain = chain + extra_chain
            disk.append(OnDisk(path, chain, source))

        if not served and not disk:
            parts = []
            if not endpoints and not files:
                parts.append("no [[tls]] endpoint or file in the profile and no certificate or TLS listener named by "
                             "the running servers' configs, /etc/nginx or /etc/apache2")
            parts += [f"{k}: {v}" for k, v in {**failed, **unreadable}.items()]
            why = "; ".join(parts)
            yield from (unknown(f, why) for f in self.findings)
            return

        now = host.now()
        trusted = self._trusted_subjects(ctx) if any(len(d.chain) == 1 for d in disk) else set()
        examined = [s.endpoint for s in served] + [d.path for d in disk]
        note = {"unexamined": {**failed, **unreadable}} if failed or unreadable else {}

        leaves = [(s.endpoint, s.chain[0]) for s in served] + [(d.path, d.chain[0]) for d in disk]
        expired = [(w, c) for w, c in leaves if c.not_after < now]
        soon = [(w, c) for w, c in leaves if now <= c.not_after < now + EXPIRING_S]
        if expired:
            w, c = expired[0]
            yield present("tls.cert_expired", f"{w}: certificate for {', '.join(c.names[:3])} expired {_iso(c.not_after)} "
                          f"({_days(now - c.not_after)} ago)",
                          expired=[{"where": w, "names": list(c.names), "not_after": _iso(c.not_after)} for w, c in expired], **note)
        else:
            yield absent("tls.cert_expired", f"{len(leaves)} certificate(s) in date", examined=examined, **note)
        if soon:
            w, c = soon[0]
            yield present("tls.cert_expiring_soon", f"{w}: certificate for {', '.join(c.names[:3])} expires "
                          f"{_iso(c.not_after)} (in {_days(c.not_after - now)})",
                          expiring=[{"where": w, "names": list(c.names), "not_after": _iso(c.not_after)} for w, c in soon])
        else:
            yield absent("tls.cert_expiring_soon", "no certificate expires within 14 days", examined=examined)
        future = [(w, c) for w, c in leaves if c.not_before > now]
        if future:
            w, c = future[0]
            yield present("tls.cert_not_yet_valid", f"{w}: certificate for {', '.join(c.names[:3])} is valid only from "
                          f"{_iso(c.not_before)}, {_days(c.not_before - now)} after this host's clock ({_iso(now)})",
                          future=[{"where": w, "not_before": _iso(c.not_before)} for w, c in future])
        else:
            yield absent("tls.cert_not_yet_valid", "every certificate's validity has begun", examined=examined)

        incomplete = []
        for s in served:
            leaf = s.chain[0]
            if s.verify_code in _NO_ISSUER and not leaf.self_signed and (not s.chain_known or len(s.chain) == 1):
                incomplete.append({"where": s.endpoint, "sent": len(s.chain) if s.chain_known else "leaf (chain not readable)",
                                   "issuer": leaf.issuer, "verify": f"{s.verify_code} {s.verify_message}"})
        for d in disk:
            leaf = d.chain[0]
            if len(d.chain) == 1 and not leaf.self_signed and not leaf.is_ca and leaf.issuer_der not in trusted:
                incomplete.append({"where": d.path, "sent": 1, "issuer": leaf.issuer, "named_by": d.source,
                                   "verify": "the file holds the leaf only, and its issuer is not a trusted root"})
        if incomplete:
            i0 = incomplete[0]
            yield present("tls.chain_incomplete", f"{i0['where']}: only the leaf certificate, issued by {i0['issuer']}; "
                          "clients cannot build the chain without the intermediate", incomplete=incomplete)
        else:
            yield absent("tls.chain_incomplete", "every chain carries its intermediates", examined=examined)

        mismatched = [{"where": s.endpoint, "asked": s.sni, "names": list(s.chain[0].names)}
                      for s in served if s.sni and not name_matches(s.sni, s.chain[0].names)]
        # A file the config serves for names its certificate covers none of.
        mismatched += [{"where": d.path, "asked": sites[d.path][0], "names": list(d.chain[0].names),
                        "server_names": sites[d.path]}
                       for d in disk if sites.get(d.path) and not d.chain[0].self_signed
                       and not any(name_matches(n, d.chain[0].names) for n in sites[d.path])]
        named = [s for s in served if s.sni] + [d for d in disk if sites.get(d.path)]
        if mismatched:
            m0 = mismatched[0]
            yield present("tls.name_mismatch", f"{m0['where']} serves a certificate for {', '.join(m0['names'][:3])}, "
                          f"not {m0['asked']}", mismatched=mismatched)
        elif named:
            yield absent("tls.name_mismatch", "every served certificate covers its name",
                         examined=[getattr(s, "endpoint", None) or getattr(s, "path", "") for s in named])
        else:
            yield unknown("tls.name_mismatch", "no endpoint with a host name was examined (an IP address needs "
                          "server_name in the profile's [[tls]])")

        if not served or not disk:
            yield unknown("tls.served_cert_stale",
                          "needs both a served certificate ([[tls]] endpoint) and certificate files to compare")
            return
        stale = []
        for s in served:
            live = s.chain[0]
            for d in disk:
                leaf = d.chain[0]
                same_name = (s.sni and name_matches(s.sni, leaf.names)) or set(live.names) & set(leaf.names)
                if same_name and leaf.fingerprint != live.fingerprint and leaf.not_after > live.not_after:
                    stale.append({"endpoint": s.endpoint, "served_not_after": _iso(live.not_after),
                                  "file": d.path, "file_not_after": _iso(leaf.not_after)})
        if stale:
            s0 = stale[0]
            yield present("tls.served_cert_stale", f"{s0['endpoint']} serves a certificate valid until "
                          f"{s0['served_not_after']}, but {s0['file']} holds one until {s0['file_not_after']}: "
                          "renewed on disk, not reloaded", stale=stale)
        else:
            yield absent("tls.served_cert_stale", "the served certificates are the newest on disk", examined=examined)

    @staticmethod
    def _trusted_subjects(ctx: ProbeContext) -> set[bytes]:
        """DER subjects of the roots in this host's CA bundle (empty if there is none)."""
        from cryptography import x509

        for bundle in CA_BUNDLES:
            try:
                data = ctx.host.read_bytes(bundle, 4 << 20)
            except OSError:
                continue
            out = set()
            # Some distributions' bundles hold roots with a negative serial, on which
            # cryptography warns (and may refuse in a future release); only the subject matters.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for der in pem_blocks(data):
                    try:
                        out.add(x509.load_der_x509_certificate(der).subject.public_bytes())
                    except ValueError:
                        continue
            return out
        return set()
