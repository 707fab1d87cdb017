"""A throwaway TLS identity for tests: a self-signed certificate made on the fly."""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import NamedTuple


class SelfSigned(NamedTuple):
    key_path: str
    certificate_path: str
    #: The certificate in PEM, for clients that take a trust root in memory.
    pem: bytes


def write_self_signed_certificate(directory: str) -> SelfSigned:
    """Write a key and a self-signed certificate for ``localhost`` and 127.0.0.1
    into ``directory``.

    The certificate is its own CA, so it can be given to a client as the only
    trusted root (``cafile=`` or Twisted's ``trustRoot=``).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    key_path = os.path.join(directory, "key.pem")
    certificate_path = os.path.join(directory, "cert.pem")
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    with open(key_path, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    with open(certificate_path, "wb") as out:
        out.write(pem)
    return SelfSigned(key_path, certificate_path, pem)
