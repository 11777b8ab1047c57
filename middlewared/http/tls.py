"""TLS for the API's port: the administrator's certificate and key (``--tls-cert``,
``--tls-key``), or one made once with ``cryptography`` and kept in the data dir
(``--tls-self-signed``). TLS 1.2 and 1.3 only; the certificate's SHA-256 fingerprint is
printed at start so a client can pin it."""

from __future__ import annotations

import datetime
import errno
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from middlewared.config import Transports
from middlewared.errors import MiddlewareError

SELF_SIGNED_CERT = "tls/self-signed.crt"
SELF_SIGNED_KEY = "tls/self-signed.key"
SELF_SIGNED_DAYS = 825


def files(transports: Transports, data_dir: Path) -> tuple[Path, Path] | None:
    """The certificate and key to serve (made now when self-signed and missing), or None."""
    if transports.tls_cert is not None and transports.tls_key is not None:
        return transports.tls_cert, transports.tls_key
    if not transports.tls_self_signed:
        return None
    cert, key = data_dir / SELF_SIGNED_CERT, data_dir / SELF_SIGNED_KEY
    if not (cert.exists() and key.exists()):
        make_self_signed(cert, key)
    return cert, key


def context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for ``cert`` and ``key``; an error saying which file is wrong."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as e:
        raise MiddlewareError(f"TLS: {e.filename}: no such file", errno.ENOENT) from None
    except (ssl.SSLError, OSError) as e:
        raise MiddlewareError(f"TLS: cannot use {cert} with {key}: {e}", errno.EINVAL) from None
    return ctx


def fingerprint(cert: Path) -> str:
    """The certificate's SHA-256 fingerprint, as ``openssl x509 -fingerprint`` shows it."""
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    digest = loaded.fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def end_point(cert: Path) -> bytes | None:
    """RFC 5929 tls-server-end-point of the served certificate (the first of a chain); None
    when it has none (an Ed25519 certificate): SCRAM binding is then refused."""
    from middlewared.auth.scram import ScramFailed, tls_server_end_point

    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        return tls_server_end_point(loaded)
    except ScramFailed:
        return None


def make_self_signed(cert: Path, key: Path, host: str | None = None) -> None:
    """An ECDSA P-256 key and a certificate for localhost, 127.0.0.1, ::1 and this host's
    name, valid for 825 days; the key is written 0600 before anything is in it."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = host or socket.gethostname()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    alt: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName(name),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    now = datetime.datetime.now(datetime.UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
