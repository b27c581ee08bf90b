"""Unit tests of the control plane's PKI and kubeconfig generation (pure)."""

from __future__ import annotations

import base64
import datetime
import ipaddress

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wirekube_lab import controlplane_pki as pki


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.CertificateAuthority.generate("test-ca")


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [
        str(a) for a in ext.get_values_for_type(x509.IPAddress)
    ]


def test_ca_is_a_ca(ca: pki.CertificateAuthority) -> None:
    bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True
    ku = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign
    assert ca.cert.subject == ca.cert.issuer
    ca.cert.verify_directly_issued_by(ca.cert)


def test_serving_certificate_covers_lab_and_cluster_names(ca: pki.CertificateAuthority) -> None:
    dns, ips = pki.apiserver_serving_sans("100.64.0.1")
    pair = ca.issue("kube-apiserver", dns_names=dns, ip_addresses=ips, server=True)
    cert = pair.certificate()
    cert.verify_directly_issued_by(ca.cert)
    got_dns, got_ips = _sans(cert)
    assert {"127.0.0.1", "100.64.0.1", "10.96.0.1"} <= set(got_ips)
    assert {
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    } <= set(got_dns)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # The private key matches the certificate.
    key = serialization.load_pem_private_key(pair.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_extra_sans_are_sorted_into_ips_and_names_without_duplicates() -> None:
    dns, ips = pki.apiserver_serving_sans(
        "100.64.0.1", extra=["198.18.0.5", "api.lab", "127.0.0.1", "::1", "localhost"]
    )
    assert ips == ("127.0.0.1", "100.64.0.1", "10.96.0.1", "198.18.0.5", "::1")
    assert dns.count("localhost") == 1 and dns[-1] == "api.lab"
    for ip in ips:
        ipaddress.ip_address(ip)


def test_admin_client_certificate_is_in_system_masters(ca: pki.CertificateAuthority) -> None:
    cert = ca.issue(pki.ADMIN_USER, organizations=[pki.MASTERS_GROUP], client=True).certificate()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == pki.ADMIN_USER
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_validity_window(ca: pki.CertificateAuthority) -> None:
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    cert = ca.issue("x", client=True, now=now).certificate()
    assert cert.not_valid_before_utc == now - pki.BACKDATE
    assert cert.not_valid_after_utc == now + pki.CERT_VALIDITY


def test_leaf_needs_a_purpose(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="server, a client or both"):
        ca.issue("nothing")


def test_service_account_key_pair_matches() -> None:
    private_pem, public_pem = pki.service_account_signing_key()
    key = serialization.load_pem_private_key(private_pem, None)
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert key.public_key().public_numbers() == public.public_numbers()


def test_kubeconfig_with_client_certificate(ca: pki.CertificateAuthority) -> None:
    admin = ca.issue("admin", organizations=["system:masters"], client=True)
    cfg = pki.kubeconfig(
        "https://100.64.0.1:6443",
        ca.cert_pem,
        user="admin",
        client_cert_pem=admin.cert_pem,
        client_key_pem=admin.key_pem,
    )
    text = pki.dump_kubeconfig(cfg)
    back = yaml.safe_load(text)
    assert back == cfg
    cluster = back["clusters"][0]["cluster"]
    assert cluster["server"] == "https://100.64.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem
    user = back["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == admin.cert_pem
    assert base64.b64decode(user["client-key-data"]) == admin.key_pem
    ctx = next(c for c in back["contexts"] if c["name"] == back["current-context"])
    assert ctx["context"] == {"cluster": "wirekube-lab", "user": "admin"}


def test_kubeconfig_with_token_and_namespace(ca: pki.CertificateAuthority) -> None:
    user = pki.service_account_username("wirekube-system", "wirekube-agent")
    assert user == "system:serviceaccount:wirekube-system:wirekube-agent"
    cfg = pki.kubeconfig(
        "https://127.0.0.1:1", ca.cert_pem, user=user, token="t0k", namespace="wirekube-system"
    )
    assert cfg["users"] == [{"name": user, "user": {"token": "t0k"}}]
    assert cfg["contexts"][0]["context"]["namespace"] == "wirekube-system"


@pytest.mark.parametrize(
    "creds",
    [
        {},
        {"token": "t", "client_cert_pem": b"c", "client_key_pem": b"k"},
        {"client_cert_pem": b"c"},
    ],
)
def test_kubeconfig_needs_exactly_one_credential(
    ca: pki.CertificateAuthority, creds: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        pki.kubeconfig("https://x:1", ca.cert_pem, user="u", **creds)  # type: ignore[arg-type]
