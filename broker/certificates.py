"""A private CA and the broker's TLS server certificate, made with `cryptography` (no shell openssl).

EC P-256 keys: generated in milliseconds, supported by Mosquitto's OpenSSL and every client.
The server certificate names `localhost`, 127.0.0.1, ::1 and any extra hostnames or addresses
(a docker-compose service name such as `mosquitto`, the broker's LAN name or IP), because
clients verify the name they dialled against these SANs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 825
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PemPair:
    """A certificate and its private key, PEM-encoded (the key unencrypted: Mosquitto reads it at start)."""

    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    # A minute of slack for clocks that are a little behind the provisioning machine's.
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


def make_ca(common_name: str = "thermoscreen broker CA", *, days: int = CA_VALID_DAYS) -> PemPair:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return PemPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def subject_alt_names(names: list[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses for a SAN extension, de-duplicated, defaults first."""
    result: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in [*DEFAULT_SERVER_NAMES, *names]:
        name = raw.strip()
        if not name:
            raise ValueError("empty hostname for the server certificate")
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        try:
            address: IpAddress = ipaddress.ip_address(name)
        except ValueError:
            if not all(part and (part.replace("-", "").isalnum()) for part in name.split(".")):
                raise ValueError(f"invalid hostname for the server certificate: {name!r}") from None
            result.append(x509.DNSName(name.lower()))
        else:
            result.append(x509.IPAddress(address))
    return result


def make_server_cert(ca: PemPair, names: list[str], *, days: int = SERVER_VALID_DAYS) -> PemPair:
    """A TLS server certificate signed by `ca`, valid for the default names plus `names`."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key made by thermoscreen")
    key = _new_key()
    sans = subject_alt_names(names)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thermoscreen broker")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return PemPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def certificate_names(cert_pem: bytes) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for (for `broker show`, tests)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
