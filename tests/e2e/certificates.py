"""A throwaway certificate authority for the TLS tests, over the mesh's own
(`meshsearch_common.certificates`): a CA, and certificates it signs for servers (localhost,
127.0.0.1) and clients, written as PEM files for a day."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from meshsearch_common import certificates


@dataclass(frozen=True)
class Issued:
    cert_file: Path
    key_file: Path
    serial: int


class Authority:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self._authority = certificates.Authority.new(name, days=1)
        self.cert_file = directory / f"{name}-ca.pem"
        self.cert_file.write_bytes(self._authority.pem)

    def issue(self, name: str, *, server: bool, file_stem: str | None = None) -> Issued:
        """A certificate for `name`: a server's (valid for localhost and 127.0.0.1) or a client's."""
        cert, key = self._authority.issue(
            name,
            ["localhost"] if server else [],
            server=server,
            client=not server,
            days=1,
            ip_addresses=[ipaddress.ip_address("127.0.0.1")] if server else None,
        )
        stem = file_stem or name
        cert_file, key_file = self.directory / f"{stem}.pem", self.directory / f"{stem}-key.pem"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Issued(cert_file, key_file, cert.serial_number)
