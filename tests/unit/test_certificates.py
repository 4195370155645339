"""The mesh CA of deployments without cert-manager (meshsearch_common.certificates, compose's
`certs` service): one certificate per service, named for it, kept across runs, keys private."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshsearch_common import certificates


def test_each_service_gets_a_certificate_naming_it_for_both_ends_of_a_call(tmp_path: Path) -> None:
    certificates.main([str(tmp_path), "api", "search"])
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.crt").read_bytes())
    for service in ("api", "search"):
        directory = tmp_path / service
        cert = x509.load_pem_x509_certificate((directory / "tls.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [service, "localhost"]
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert (directory / "ca.crt").read_bytes() == (tmp_path / "ca" / "ca.crt").read_bytes()
        assert (directory / "tls.key").stat().st_mode & 0o077 == 0, "a key is its owner's alone"
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o077 == 0


def test_a_second_run_keeps_what_is_current_and_certifies_what_is_new(tmp_path: Path, capsys) -> None:
    certificates.main([str(tmp_path), "api"])
    first = (tmp_path / "api" / "tls.crt").read_bytes()
    capsys.readouterr()
    certificates.main([str(tmp_path), "api", "worker"])
    assert (tmp_path / "api" / "tls.crt").read_bytes() == first
    assert capsys.readouterr().out.split("\n")[:2] == [
        f"api: kept {tmp_path / 'api' / 'tls.crt'}",
        f"worker: issued {tmp_path / 'worker' / 'tls.crt'}",
    ]


def test_a_certificate_from_another_authority_is_replaced(tmp_path: Path) -> None:
    certificates.main([str(tmp_path / "one"), "api"])
    foreign = tmp_path / "two" / "api"
    foreign.parent.mkdir()
    (tmp_path / "one" / "api").rename(foreign)  # a directory left from another CA
    certificates.main([str(tmp_path / "two"), "api"])
    ca = x509.load_pem_x509_certificate((tmp_path / "two" / "ca" / "ca.crt").read_bytes())
    x509.load_pem_x509_certificate((foreign / "tls.crt").read_bytes()).verify_directly_issued_by(ca)
