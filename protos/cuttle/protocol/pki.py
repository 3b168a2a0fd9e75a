"""Certificates and thumbprints: every server node and Tentacle has its own self-signed identity.

Identity is the SHA-256 thumbprint of the DER certificate. Trust is pinning: each side keeps the
certificates (and so the thumbprints) of the peers it trusts and hands them to gRPC as the root
bundle, so an unknown peer fails the TLS handshake before any request is served.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Peers verify each other by pinned certificate, not by host name; gRPC still checks a name, so
# every certificate carries one fixed SAN per role and clients override the target name to it.
SERVER_NAME = "cuttle-server"
TENTACLE_NAME = "cuttle-tentacle"

_VALIDITY = datetime.timedelta(days=100 * 365)


class CertificateError(ValueError):
    """A certificate is unreadable or unacceptable as a Cuttle identity."""


@dataclass(frozen=True)
class Identity:
    """A private key and its self-signed certificate, both PEM."""

    key_pem: bytes
    certificate_pem: bytes

    @property
    def thumbprint(self) -> str:
        """The SHA-256 thumbprint of the certificate."""
        return thumbprint_of_pem(self.certificate_pem)


def generate_identity(common_name: str, san: str) -> Identity:
    """Make a new ECDSA P-256 key and a self-signed, non-CA certificate for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
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
        .sign(key, hashes.SHA256())
    )
    return Identity(
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
    )


def load_certificate(pem: bytes) -> x509.Certificate:
    """Parse one PEM certificate, with a clear error when it is not one."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM X.509 certificate: {exc}") from exc


def thumbprint_of_pem(pem: bytes) -> str:
    """The upper-case hex SHA-256 of a PEM certificate's DER encoding."""
    der = load_certificate(pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest().upper()


def thumbprint_of_der(der: bytes) -> str:
    """The upper-case hex SHA-256 of a DER certificate."""
    return hashlib.sha256(der).hexdigest().upper()


def normalize_thumbprint(value: str) -> str:
    """Accept thumbprints with colons, spaces or lower case; reject anything else."""
    cleaned = value.replace(":", "").replace(" ", "").strip().upper()
    if len(cleaned) != 64 or any(c not in "0123456789ABCDEF" for c in cleaned):
        raise CertificateError(f"not a SHA-256 thumbprint (64 hex digits): {value!r}")
    return cleaned


def check_peer_certificate(pem: bytes) -> str:
    """Validate a peer's certificate as an identity (not a CA) and return its thumbprint."""
    certificate = load_certificate(pem)
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.value.ca:
        raise CertificateError(
            "certificate has CA:TRUE; a machine identity must not be able to sign other "
            "certificates"
        )
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc < now:
        raise CertificateError(f"certificate expired on {certificate.not_valid_after_utc}")
    return thumbprint_of_pem(pem)


def save_identity(identity: Identity, key_path: Path, certificate_path: Path) -> None:
    """Write the key (owner-only, from creation) and certificate."""
    key_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_path.with_suffix(key_path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(identity.key_pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, key_path)
    certificate_path.write_bytes(identity.certificate_pem)


def load_identity(key_path: Path, certificate_path: Path) -> Identity:
    """Read an identity written by save_identity."""
    return Identity(key_pem=key_path.read_bytes(), certificate_pem=certificate_path.read_bytes())


def fetch_peer_certificate(host: str, port: int, timeout: float = 10.0) -> bytes:
    """Do a TLS handshake with a server and return the certificate it presented, as PEM.

    Used once, before trusting a server by the thumbprint a person gave us: the caller compares
    the thumbprint and pins the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # We verify by thumbprint after the handshake; there is no CA to check against.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    import socket

    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=SERVER_NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise CertificateError(f"{host}:{port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()
