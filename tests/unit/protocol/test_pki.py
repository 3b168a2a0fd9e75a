"""Identities: self-signed P-256, SHA-256 thumbprints, CA certificates refused."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cuttle.protocol import pki


def _ca_certificate_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sneaky-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_identity_is_p256_self_signed_and_not_a_ca() -> None:
    identity = pki.generate_identity("web-01", pki.TENTACLE_NAME)
    cert = x509.load_pem_x509_certificate(identity.certificate_pem)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert pki.check_peer_certificate(identity.certificate_pem) == identity.thumbprint


def test_thumbprint_is_sha256_of_der_and_unique() -> None:
    a = pki.generate_identity("a", pki.SERVER_NAME)
    b = pki.generate_identity("a", pki.SERVER_NAME)
    der = x509.load_pem_x509_certificate(a.certificate_pem).public_bytes(serialization.Encoding.DER)
    import hashlib

    assert a.thumbprint == hashlib.sha256(der).hexdigest().upper()
    assert len(a.thumbprint) == 64
    assert a.thumbprint != b.thumbprint


def test_ca_certificate_is_refused() -> None:
    with pytest.raises(pki.CertificateError, match="CA:TRUE"):
        pki.check_peer_certificate(_ca_certificate_pem())


def test_garbage_certificate_is_refused_with_a_clear_error() -> None:
    with pytest.raises(pki.CertificateError, match="not a PEM X.509 certificate"):
        pki.check_peer_certificate(
            b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
        )


def test_thumbprint_normalization() -> None:
    raw = "ab" * 32
    assert (
        pki.normalize_thumbprint(":".join(raw[i : i + 2] for i in range(0, 64, 2))) == raw.upper()
    )
    with pytest.raises(pki.CertificateError):
        pki.normalize_thumbprint("1234")


def test_saved_key_is_owner_only(tmp_path: Path) -> None:
    identity = pki.generate_identity("x", pki.TENTACLE_NAME)
    pki.save_identity(identity, tmp_path / "key.pem", tmp_path / "cert.pem")
    mode = stat.S_IMODE((tmp_path / "key.pem").stat().st_mode)
    assert mode == 0o600
    loaded = pki.load_identity(tmp_path / "key.pem", tmp_path / "cert.pem")
    assert loaded == identity
