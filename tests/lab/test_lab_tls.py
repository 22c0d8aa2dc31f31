"""The TLS lab scenarios reproduce their fault on a real nginx, and prodx diagnoses it first.

Root only (the lab stages every scenario as root); needs nginx-light.
"""

from __future__ import annotations

import os

import pytest
from cryptography import x509

from prodx.lab.scenarios.tls import served_leaf

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
]


def _not_after(path) -> float:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].not_valid_after_utc.timestamp()


def test_expired_certificate_scenario_serves_an_expired_certificate_and_is_diagnosed_tls_expired(lab) -> None:
    with lab.stage("expired-certificate") as run:
        sc = run.scenario
        der, code, message = served_leaf(sc.port, cafile=str(sc.cafile))
        assert code == 10 and "expired" in message  # what a browser trusting the CA sees
        served = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
        assert served == _not_after(sc.fullchain)  # the file on disk is the same expired one
        lab.assert_diagnosed(run)


def test_cert_renewed_not_reloaded_scenario_serves_the_old_certificate_and_is_diagnosed_first(lab) -> None:
    with lab.stage("cert-renewed-not-reloaded") as run:
        sc = run.scenario
        der, code, _message = served_leaf(sc.port, cafile=str(sc.cafile))
        assert code == 10  # X509_V_ERR_CERT_HAS_EXPIRED
        served = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
        assert _not_after(sc.fullchain) > served + 80 * 86400  # renewed on disk, not served
        lab.assert_diagnosed(run)
