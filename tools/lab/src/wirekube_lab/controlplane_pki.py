"""Certificates, keys and kubeconfigs for the lab's control plane (pure, no I/O).

The control plane launcher (``wirekube_lab.controlplane``) needs a tiny PKI:

* one CA that signs everything (``CertificateAuthority.generate``);
* the kube-apiserver serving certificate, valid for every name a client may
  dial: 127.0.0.1 from the root namespace, the lab's uplink address
  (100.64.0.1) from inside network namespaces, the first Service IP and the
  in-cluster DNS names (``kubernetes.default.svc`` ...);
* an admin client certificate in the ``system:masters`` group (client-cert
  authentication: the apiserver maps CN to the user and O to groups);
* an ECDSA key pair the apiserver signs service-account tokens with.

Everything here returns values (PEM bytes, dicts, YAML text); writing files is
the launcher's job, so these functions are unit-tested without a filesystem or
an apiserver. ECDSA P-256 keys are used throughout: generating them takes
microseconds, and the apiserver accepts them for TLS and for ES256 tokens.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Certificates outlive any lab run or test session by far; a short but generous
# validity keeps leaked lab material useless after a while.
CERT_VALIDITY = datetime.timedelta(days=30)
# Backdating tolerates a little clock skew between this host and its namespaces
# (they share the clock, but certificates copied elsewhere might not).
BACKDATE = datetime.timedelta(minutes=5)

APISERVER_DNS_NAMES: tuple[str, ...] = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

ADMIN_USER = "wirekube-admin"
MASTERS_GROUP = "system:masters"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class KeyPair:
    """A private key and its certificate, both PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA able to issue server and client certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(
        cls, common_name: str = "wirekube-lab-ca", now: datetime.datetime | None = None
    ) -> CertificateAuthority:
        now = now or datetime.datetime.now(datetime.UTC)
        key = _new_key()
        name = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str | IPAddress] = (),
        server: bool = False,
        client: bool = False,
        now: datetime.datetime | None = None,
    ) -> KeyPair:
        """Issue a leaf certificate for a new key; ``server``/``client`` set the EKUs."""
        if not (server or client):
            raise ValueError("a leaf certificate must be for a server, a client or both")
        now = now or datetime.datetime.now(datetime.UTC)
        key = _new_key()
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organizations))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def apiserver_serving_sans(
    lab_address: str, service_ip: str = "10.96.0.1", extra: Sequence[str] = ()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) the serving certificate must cover.

    ``extra`` entries are sorted into IPs or DNS names by whether they parse as an
    address. Duplicates are dropped, order is kept (stable certificates in tests).
    """
    dns: list[str] = list(APISERVER_DNS_NAMES)
    ips: list[str] = ["127.0.0.1", lab_address, service_ip]
    for item in extra:
        try:
            ips.append(str(ipaddress.ip_address(item)))
        except ValueError:
            dns.append(item)
    return tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips))


def service_account_signing_key() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of the key that signs service-account tokens."""
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _key_pem(key), public


def kubeconfig(
    server: str,
    ca_pem: bytes,
    *,
    user: str,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    token: str | None = None,
    cluster: str = "wirekube-lab",
    namespace: str | None = None,
) -> dict[str, Any]:
    """A self-contained kubeconfig (credentials inline) as a dict.

    Exactly one credential: a client certificate + key, or a bearer token.
    """
    if (client_cert_pem is None) != (client_key_pem is None):
        raise ValueError("client certificate and key go together")
    if (client_cert_pem is None) == (token is None):
        raise ValueError("give either a client certificate or a token")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    creds: dict[str, str]
    if token is not None:
        creds = {"token": token}
    else:
        assert client_cert_pem is not None and client_key_pem is not None
        creds = {
            "client-certificate-data": b64(client_cert_pem),
            "client-key-data": b64(client_key_pem),
        }
    context: dict[str, str] = {"cluster": cluster, "user": user}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": f"{user}@{cluster}", "context": context}],
        "current-context": f"{user}@{cluster}",
        "preferences": {},
    }


def dump_kubeconfig(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def service_account_username(namespace: str, name: str) -> str:
    """The user name the apiserver gives a service account's tokens."""
    return f"system:serviceaccount:{namespace}:{name}"
