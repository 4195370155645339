"""The mesh's own certificate authority, for deployments with no cert-manager (compose):
`python -m meshsearch_common.certificates ROOT SERVICE...` makes a CA in ROOT/ca and, for each
service, ROOT/<service>/{tls.crt,tls.key,ca.crt} (the file names cert-manager writes, so the
services are configured alike everywhere).

Each certificate names its service (DNS SAN, and CN) and `localhost` (the container's own health
check), for both server and client use: a service proves who it is to the services it calls,
and those check the name against their allow-list (`CALLERS__IDENTITIES`), so a certificate
from this CA alone does not let a workload in. Runs are idempotent: the CA and certificates
that exist and are not near their end are kept, so restarting compose changes nothing.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = timedelta(days=30)
BACKDATE = timedelta(minutes=5)  # tolerate clocks a little behind the issuer's


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` readable by its owner alone, from the first byte on."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(data)


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, name: str, days: int = CA_DAYS) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )  # certificate and CRL signing only
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def kept_in(cls, directory: Path, name: str) -> Authority:
        """The CA stored in `directory`, made there first if absent or near its end."""
        cert_file, key_file = directory / "ca.crt", directory / "ca.key"
        if cert_file.exists() and key_file.exists():
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey) and not _ending(cert):
                return cls(key, cert)
        authority = cls.new(name)
        directory.mkdir(parents=True, exist_ok=True)
        _write_private(key_file, _key_pem(authority.key))
        cert_file.write_bytes(authority.pem)
        return authority

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        name: str,
        dns_names: list[str],
        *,
        server: bool = True,
        client: bool = True,
        days: int = LEAF_DAYS,
        ip_addresses: list[object] | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A certificate for `name` (its CN), valid for `dns_names`, for the given uses."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alternatives += [x509.IPAddress(a) for a in ip_addresses or []]  # type: ignore[arg-type]
        if alternatives:
            builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def _ending(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - datetime.now(UTC) < RENEW_BEFORE


def issue_service(authority: Authority, directory: Path, service: str) -> bool:
    """Write `service`'s certificate, key and the CA into `directory` unless a current one signed
    by this CA is there; whether one was written."""
    cert_file, key_file, ca_file = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    kept = all(f.exists() for f in (cert_file, key_file, ca_file))
    if kept and ca_file.read_bytes() == authority.pem:
        current = x509.load_pem_x509_certificate(cert_file.read_bytes())
        if not _ending(current) and current.issuer == authority.cert.subject:
            return False
    cert, key = authority.issue(service, [service, "localhost"])
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(key_file, _key_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_file.write_bytes(authority.pem)
    return True


def _give_to(directory: Path, owner: tuple[int, int]) -> None:
    """Hand a service's directory to the user its container runs as (the key stays 0600)."""
    for path in (directory, *directory.iterdir()):
        os.chown(path, *owner)
    directory.chmod(0o700)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m meshsearch_common.certificates", description=__doc__)
    parser.add_argument("root", type=Path, help="ROOT/ca holds the CA, ROOT/<service> each certificate")
    parser.add_argument("services", nargs="+", help="the services to certify; each name is its DNS name")
    parser.add_argument("--owner", default="", help="UID:GID to give each service's directory (run as root)")
    parser.add_argument("--ca-name", default="meshsearch mesh CA")
    arguments = parser.parse_args(argv)
    authority = Authority.kept_in(arguments.root / "ca", arguments.ca_name)
    for service in arguments.services:
        directory = arguments.root / service
        written = issue_service(authority, directory, service)
        if arguments.owner:
            uid, _, gid = arguments.owner.partition(":")
            _give_to(directory, (int(uid), int(gid or uid)))
        print(f"{service}: {'issued' if written else 'kept'} {directory / 'tls.crt'}", flush=True)


if __name__ == "__main__":
    main()
