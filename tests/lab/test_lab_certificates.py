"""Certificates installed wrong on a real nginx: the fault is real (what a client trusting the
lab CA gets, what nginx serves) and prodx diagnoses it first, with and without a profile.

Root only (the lab stages every scenario as root); needs nginx-light.
"""

from __future__ import annotations

import os

import pytest
from cryptography import x509

from prodx.lab.scenarios.certificates import OTHER_SITE
from prodx.lab.scenarios.tls import SITE, served_leaf

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
]


def test_certificate_chain_scenario_serves_the_leaf_alone_and_is_diagnosed_first(lab) -> None:
    with lab.stage("certificate-chain") as run:
        sc = run.scenario
        _der, code, message = served_leaf(sc.port, cafile=str(sc.cafile))
        assert code == 20, message  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        on_disk = x509.load_pem_x509_certificates(sc.fullchain.read_bytes())
        assert len(on_disk) == 1 and on_disk[0].issuer == sc.pki.intermediate.cert.subject
        lab.assert_diagnosed(run)


def test_tls_name_mismatch_scenario_serves_another_sites_certificate_and_is_diagnosed_first(lab) -> None:
    with lab.stage("tls-name-mismatch") as run:
        sc = run.scenario
        der, code, message = served_leaf(sc.port, sni=SITE, cafile=str(sc.cafile))
        assert code == 62, message  # X509_V_ERR_HOSTNAME_MISMATCH
        served = x509.load_der_x509_certificate(der)
        names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert names == [OTHER_SITE]
        assert served_leaf(sc.port, sni=OTHER_SITE, cafile=str(sc.cafile))[1] == 0  # valid, for the other site
        lab.assert_diagnosed(run)
