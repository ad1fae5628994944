"""Self-signed CA and a SuperLink certificate for the TLS variant (``cryptography``, already beside flwr).

The SuperLink certificate names every address a SuperNode may dial: ``127.0.0.1``/``localhost`` for the local
launcher and the compose service names (``superlink``, ``interceptor``: the on-path proxy relays TLS untouched,
so SuperNodes that dial it still verify the SuperLink's certificate end to end).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fednas.storage import atomic_write_bytes

DEFAULT_NAMES = ("localhost", "127.0.0.1", "superlink", "interceptor")
VALID_DAYS = 365


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "archleak demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate_certificates(folder: Path, names: Sequence[str] = DEFAULT_NAMES) -> dict[str, Path]:
    """Write ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("archleak demo CA")).issuer_name(_name("archleak demo CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.crt", "ca_key": folder / "ca.key", "cert": folder / "server.pem",
             "key": folder / "server.key"}
    atomic_write_bytes(paths["ca"], ca.public_bytes(serialization.Encoding.PEM))
    atomic_write_bytes(paths["ca_key"], _pem_key(ca_key), mode=0o600)   # private from the first byte
    atomic_write_bytes(paths["cert"], cert.public_bytes(serialization.Encoding.PEM))
    atomic_write_bytes(paths["key"], _pem_key(key), mode=0o600)
    return paths
