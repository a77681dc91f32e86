"""Test certificates: a CA of our own (trustme), leaves for servers and clients, as files."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import grpc
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from peer_grpc.wire.tls import channel_credentials


@dataclass(frozen=True)
class CertFiles:
    """A certificate chain and its key, as PEM files."""

    cert: str
    key: str


class Pki:
    """A CA that issues certificates into ``directory``."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.ca = trustme.CA()
        self.directory = directory
        self.name = name
        self.ca_file = str(directory / f"{name}.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def issue(
        self,
        *identities: str,
        common_name: str | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CertFiles:
        """A certificate for DNS names or IP addresses (trustme's identities)."""
        leaf = self.ca.issue_cert(
            *identities,
            common_name=common_name,
            not_before=(None if not_after is None else not_after - datetime.timedelta(days=30)),
            not_after=not_after,
        )
        stem = f"{self.name}-{common_name or identities[0]}".replace("/", "_").replace(":", "_")
        return self._write(stem, leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())

    def issue_uri(self, uri: str, *dns_names: str) -> CertFiles:
        """A client certificate whose identity is a URI SAN, as SPIFFE issues them
        (trustme issues DNS names and addresses only)."""
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        issuer = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes()).subject
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
        names += [x509.DNSName(name) for name in dns_names]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "uri-holder")]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        stem = f"{self.name}-" + uri.replace("/", "_").replace(":", "_")
        return self._write(stem, cert.public_bytes(serialization.Encoding.PEM), key_pem)

    def _write(self, stem: str, cert: bytes, key: bytes) -> CertFiles:
        files = CertFiles(str(self.directory / f"{stem}.crt"), str(self.directory / f"{stem}.key"))
        Path(files.cert).write_bytes(cert)
        Path(files.key).write_bytes(key)
        return files

    def client_credentials(self, client: CertFiles | None) -> grpc.ChannelCredentials:
        """Credentials that trust this CA and present ``client`` (none: no certificate)."""
        if client is None:
            return channel_credentials(self.ca_file)
        return channel_credentials(self.ca_file, client.cert, client.key)
