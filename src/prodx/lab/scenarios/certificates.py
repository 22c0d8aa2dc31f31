"""Certificates installed wrong on a real nginx (prodx.lab.scenarios.tls: the sandbox's private
CA, nginx with its own config): a leaf served without its intermediate, and the certificate of
another site. All real; the lab root CA stands for a public one, so what a browser trusting it
sees is what the scenario checks (OpenSSL verify codes 20 and 62).
"""

from __future__ import annotations

from prodx.lab.sandbox import LabError, Sandbox
from prodx.lab.scenarios.tls import SITE, Pki, _TlsSite

#: The other site whose certificate ends up on the shop's server block.
OTHER_SITE = "blog.prodx-lab.test"


class _Reinstalled(_TlsSite):
    """A site serving a complete, valid chain until inject installs something else."""


    def setup(self, sb: Sandbox) -> None:
        pki = Pki.make()
        self._start(sb, pki, pki.leaf(valid_from_days=-30, valid_until_days=60))
        code, message = self.user_sees()
        if code != 0:
            raise LabError(f"the healthy site's certificate does not verify: {code} {message}")
        self.injected.append(f"nginx serves https://{SITE} on 127.0.0.1:{self.port}; leaf + intermediate verify")

    def reinstall(self, sb: Sandbox, cert_pem: bytes, key_pem: bytes) -> None:
        """Write ``cert_pem`` and its key where nginx's config points, reload, wait for it."""
        sb.write_text(self.keyfile, key_pem.decode(), mode=0o600)
        sb.write_text(self.fullchain, cert_pem.decode())
        sb.run([*self.argv, "-s", "reload"])


class CertificateChain(_Reinstalled):
    name = "certificate-chain"
    condition = "certificate-chain"
    description = (f"nginx (own config in the sandbox) serves https://{SITE}; the renewed certificate is installed "
                   "as the leaf alone (cert.pem copied where fullchain.pem belongs) and nginx reloaded: clients "
                   "that do not already hold the intermediate cannot build the chain")
    symptoms = (
        "curl and API clients fail with 'unable to get local issuer certificate'",
        "some browsers show the site fine, others (Android, a fresh profile) say the connection is not private",
    )

    def inject(self, sb: Sandbox) -> None:
        renewed = self.pki.leaf(valid_from_days=0, valid_until_days=90)
        self.reinstall(sb, renewed.cert_pem, renewed.key_pem)
        self._wait_serving(renewed)
        code, message = self.user_sees()
        self.injected.append(f"renewed leaf installed without its intermediate in {self.fullchain}, nginx reloaded; "
                             f"a client trusting the lab root gets verify error {code} ({message})")


class TlsNameMismatch(_Reinstalled):
    name = "tls-name-mismatch"
    condition = "tls-name-mismatch"
    description = (f"nginx (own config in the sandbox) serves https://{SITE}; the certificate of another site "
                   f"({OTHER_SITE}, same private CA, valid) is installed in its place and nginx reloaded")
    symptoms = (
        "browsers show NET::ERR_CERT_COMMON_NAME_INVALID for the shop",
        "curl says 'no alternative certificate subject name matches target host name'",
    )

    def inject(self, sb: Sandbox) -> None:
        other = self.pki.leaf(names=(OTHER_SITE,), valid_from_days=-10, valid_until_days=80)
        self.reinstall(sb, other.cert_pem + self.pki.intermediate.cert_pem, other.key_pem)
        self._wait_serving(other)
        code, message = self.user_sees()
        self.injected.append(f"the certificate for {OTHER_SITE} installed in {self.fullchain}, nginx reloaded; a "
                             f"client asking for {SITE} gets verify error {code} ({message})")
