"""Certificate faults on a real nginx run from the sandbox: an expired certificate, and a
certificate renewed on disk that nginx was never reloaded to serve.

A private PKI is made for each run with ``cryptography`` (root CA, intermediate, leaf for
``shop.prodx-lab.test``); nginx listens with TLS on 127.0.0.1 on a free port with its own
config, pid file and logs in the sandbox. Browsers that trusted the lab's root would show
NET::ERR_CERT_DATE_INVALID: the scenario checks that with a handshake trusting that root.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import time
from dataclasses import dataclass

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox
from prodx.lab.webstack import find_nginx, free_port

SITE = "shop.prodx-lab.test"
DAY = dt.timedelta(days=1)


@dataclass
class Issued:
    """PEM text of a certificate and its private key."""

    cert_pem: bytes
    key_pem: bytes
    cert: object
    key: object


def _key() -> object:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                             serialization.NoEncryption())


def issue(common_name: str, *, issuer: Issued | None = None, ca: bool = False, names: tuple[str, ...] = (),
          not_before: dt.datetime | None = None, not_after: dt.datetime | None = None) -> Issued:
    """A certificate for ``common_name`` signed by ``issuer`` (self-signed when None): a CA
    when ``ca``, else a server certificate for ``names`` (default: the common name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)  # type: ignore[attr-defined]
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - DAY)
        .not_valid_after(not_after or now + 90 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)  # type: ignore[attr-defined]
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)  # type: ignore[attr-defined]
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in (names or (common_name,))]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())  # type: ignore[arg-type]
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key), cert, key)


@dataclass
class Pki:
    """A root CA and an intermediate, to issue leaves the way a public CA does."""

    root: Issued
    intermediate: Issued

    @classmethod
    def make(cls) -> Pki:
        root = issue("prodx lab root CA", ca=True, not_after=dt.datetime.now(dt.timezone.utc) + 3650 * DAY)
        inter = issue("prodx lab intermediate CA", issuer=root, ca=True,
                      not_after=dt.datetime.now(dt.timezone.utc) + 1825 * DAY)
        return cls(root, inter)

    def leaf(self, *, names: tuple[str, ...] = (SITE,), valid_from_days: float = -1, valid_until_days: float = 90) -> Issued:
        """A server certificate issued by the intermediate, valid between the two offsets from now."""
        now = dt.datetime.now(dt.timezone.utc)
        return issue(names[0], issuer=self.intermediate, names=names,
                     not_before=now + valid_from_days * DAY, not_after=now + valid_until_days * DAY)


def served_leaf(port: int, sni: str = SITE, cafile: str | None = None) -> tuple[bytes, int, str]:
    """(DER leaf, OpenSSL verify code, message) of what 127.0.0.1:``port`` serves for ``sni``,
    verified against ``cafile`` (code 0 when a client trusting it accepts the certificate)."""
    loose = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    loose.check_hostname, loose.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, loose.wrap_socket(raw, server_hostname=sni) as s:
        der = s.getpeercert(binary_form=True) or b""
    strict = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, strict.wrap_socket(raw, server_hostname=sni):
            return der, 0, "ok"
    except ssl.SSLCertVerificationError as exc:
        return der, exc.verify_code, exc.verify_message


class _TlsSite(Scenario):
    """nginx serving https://shop.prodx-lab.test on 127.0.0.1 from the sandbox."""

    needs = Needs(commands=(("nginx", "nginx-light"),), kernel=())

    def _start(self, sb: Sandbox, pki: Pki, leaf: Issued) -> None:
        """Write the PKI and ``leaf``, start nginx with them, wait until it serves ``leaf``."""
        self.pki = pki
        self.fullchain = sb.path("tls/fullchain.pem")
        self.keyfile = sb.path("tls/privkey.pem")
        self.cafile = sb.path("tls/lab-root.pem")
        sb.mkdirs("tls")
        sb.write_text(self.cafile, self.pki.root.cert_pem.decode())
        self._install(sb, leaf)
        self.nginx = find_nginx() or "nginx"
        self.port = free_port()
        prefix = sb.mkdirs("nginx")
        tmp = sb.mkdirs("nginx/tmp")
        sb.write_text(prefix / "nginx.conf", f"""worker_processes 1;
pid {sb.path('nginx.pid')};
error_log {sb.path('nginx-error.log')};
events {{ worker_connections 64; }}
http {{
    access_log {sb.path('nginx-access.log')};
    client_body_temp_path {tmp}/client_body;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {SITE};
        ssl_certificate {self.fullchain};
        ssl_certificate_key {self.keyfile};
        location / {{ default_type text/plain; return 200 "shop ok\\n"; }}
    }}
}}
""")
        self.argv = [self.nginx, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", str(sb.path("nginx-error.log"))]
        sb.run([*self.argv, "-t", "-q"])
        sb.spawn([*self.argv, "-g", "daemon off;"], log="nginx.out")
        self._wait_serving(leaf)

    def _install(self, sb: Sandbox, leaf: Issued) -> None:
        """Write leaf + intermediate and the key where nginx's config points, as certbot does."""
        sb.write_text(self.keyfile, leaf.key_pem.decode(), mode=0o600)
        sb.write_text(self.fullchain, (leaf.cert_pem + self.pki.intermediate.cert_pem).decode())

    def _wait_serving(self, leaf: Issued) -> None:
        from cryptography.hazmat.primitives import serialization

        want = leaf.cert.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 15
        streak = 0
        while True:
            try:
                streak = streak + 1 if served_leaf(self.port, cafile=str(self.cafile))[0] == want else 0
            except OSError:
                streak = 0
            # After a reload the old worker may still take a connection or two: wait for a streak.
            if streak >= 10:
                return
            if time.monotonic() > deadline:
                raise LabError(f"nginx does not serve the expected certificate on 127.0.0.1:{self.port}; "
                               f"see {self.fullchain.parent.parent / 'nginx-error.log'}")
            time.sleep(0.05)

    def user_sees(self) -> tuple[int, str]:
        """What a browser that trusts the lab's root gets: OpenSSL's verify code and message."""
        _der, code, message = served_leaf(self.port, cafile=str(self.cafile))
        return code, message

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", logs=[str(sb.path("nginx-error.log"))],
                            services=["nginx"]) + (
            f"\n[[http]]\nurl = {json.dumps(f'https://127.0.0.1:{self.port}/')}\nexpect_text = \"shop ok\"\n"
            f"\n[[tls]]\nendpoint = {json.dumps(f'127.0.0.1:{self.port}')}\nserver_name = {json.dumps(SITE)}\n"
            f"\n[[tls]]\nfile = {json.dumps(str(self.fullchain))}\n")


class ExpiredCertificate(_TlsSite):
    name = "expired-certificate"
    condition = "tls-expired"
    description = (f"nginx (own config in the sandbox) serves https://{SITE} on 127.0.0.1 with a certificate from a "
                   "private CA that expired two days ago (renewal never ran); the file on disk is the same one")
    symptoms = (
        "browsers show NET::ERR_CERT_DATE_INVALID / 'Your connection is not private'",
        "API clients fail with 'certificate has expired'; the server itself answers normally",
    )

    def setup(self, sb: Sandbox) -> None:
        pki = Pki.make()
        self._start(sb, pki, pki.leaf(valid_from_days=-88, valid_until_days=2))
        code, message = self.user_sees()
        if code != 0:
            raise LabError(f"the healthy site's certificate does not verify: {code} {message}")
        self.injected.append(f"nginx serves https://{SITE} on 127.0.0.1:{self.port}; its certificate verified before the fault")

    def inject(self, sb: Sandbox) -> None:
        expired = self.pki.leaf(valid_from_days=-92, valid_until_days=-2)
        self._install(sb, expired)
        sb.run([*self.argv, "-s", "reload"])
        self._wait_serving(expired)
        code, message = self.user_sees()
        self.injected.append(f"the days passed: nginx now serves a certificate that expired 2 days ago; a browser "
                             f"trusting the lab CA gets verify error {code} ({message})")


class CertRenewedNotReloaded(_TlsSite):
    name = "cert-renewed-not-reloaded"
    condition = "cert-not-reloaded"
    accept = ("tls-expired",)
    description = (f"nginx (own config in the sandbox) serves https://{SITE} with a certificate that expired two days "
                   "ago; the renewal job wrote a fresh one (valid 90 days) to the same file but never reloaded nginx")
    symptoms = (
        "browsers show NET::ERR_CERT_DATE_INVALID although the renewal cron ran",
        "`openssl x509 -in fullchain.pem -enddate` shows a date months ahead",
    )

    def setup(self, sb: Sandbox) -> None:
        pki = Pki.make()
        self._start(sb, pki, pki.leaf(valid_from_days=-92, valid_until_days=-2))
        self.injected.append(f"nginx serves https://{SITE} on 127.0.0.1:{self.port} with a certificate that expired "
                             "2 days ago")

    def inject(self, sb: Sandbox) -> None:
        renewed = self.pki.leaf(valid_from_days=0, valid_until_days=90)
        self._install(sb, renewed)
        code, message = self.user_sees()
        self.injected.append(f"the renewal wrote a certificate valid 90 days to {self.fullchain} without reloading "
                             f"nginx; a browser trusting the lab CA still gets verify error {code} ({message})")
