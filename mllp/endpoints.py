"""Listener and connector endpoints for MLLP, plain or over TLS.

Addresses are Twisted endpoint strings (``tcp:2575:interface=127.0.0.1``) so a channel
file can say where to listen; TLS is a separate setting that wraps whichever endpoint
the string describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import crypto
from twisted.internet import interfaces
from twisted.internet.endpoints import (
    HostnameEndpoint,
    clientFromString,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

MINIMUM_TLS = TLSVersion.TLSv1_2


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """A listener's TLS identity and, optionally, the CAs its clients must come from."""

    certificate: Path
    private_key: Path
    ca_certificates: Path | None = None
    require_client_certificate: bool = False

    def __post_init__(self) -> None:
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("require_client_certificate needs ca_certificates to verify against")


@dataclass(frozen=True, slots=True)
class ClientTLSSettings:
    """How a sender verifies the listener (None: platform CAs) and proves itself."""

    ca_certificates: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    hostname: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("a client certificate needs its private key, and the other way")


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every PEM certificate in a file, leaf first (the rest is its chain)."""
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as error:
        raise ValueError(f"{path}: no PEM certificate found ({error})") from None


def load_private_key(path: Path) -> PrivateKeyTypes:
    """An unencrypted PEM private key (keep the file readable by the engine only)."""
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: not an unencrypted PEM private key ({error})") from None


def _openssl_authorities(path: Path) -> list[crypto.X509]:
    """CA certificates in the form OpenSSL's trust store takes."""
    return [crypto.X509.from_cryptography(c) for c in load_certificates(path)]


def server_options(tls: TLSSettings) -> CertificateOptions:
    """OpenSSL options for a listener: its chain, TLS 1.2+, client verification if asked."""
    leaf, *chain = load_certificates(tls.certificate)
    options: dict[str, Any] = {
        "privateKey": load_private_key(tls.private_key),
        "certificate": leaf,
        "extraCertChain": chain,
        "raiseMinimumTo": MINIMUM_TLS,
    }
    if tls.ca_certificates is not None:
        options.update(
            verify=True,
            caCerts=_openssl_authorities(tls.ca_certificates),
            requireCertificate=tls.require_client_certificate,
        )
    return CertificateOptions(**options)


class _TLSServerFactory(TLSMemoryBIOFactory):
    """TLS wrapping that lets the wrapped factory refuse a connection by returning None."""

    def buildProtocol(self, addr: interfaces.IAddress | None) -> TLSMemoryBIOProtocol | None:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


@implementer(interfaces.IStreamServerEndpoint)
class TLSServerEndpoint:
    """Any stream server endpoint with TLS layered over its connections."""

    def __init__(
        self, inner: interfaces.IStreamServerEndpoint, options: CertificateOptions
    ) -> None:
        self._inner = inner
        self._options = options

    def listen(self, factory: interfaces.IProtocolFactory) -> Any:
        return self._inner.listen(_TLSServerFactory(self._options, False, factory))


def server_endpoint(
    reactor: Any, description: str, tls: TLSSettings | None
) -> interfaces.IStreamServerEndpoint:
    """The listener for an endpoint string, wrapped in TLS when settings are given."""
    inner = serverFromString(reactor, description)
    if tls is None:
        return inner
    return TLSServerEndpoint(inner, server_options(tls))


def client_endpoint(
    reactor: Any, target: str | tuple[str, int], tls: ClientTLSSettings | None = None
) -> interfaces.IStreamClientEndpoint:
    """A connector for ``(host, port)`` or a client endpoint string, with optional TLS."""
    if isinstance(target, tuple):
        host, port = target
        inner: interfaces.IStreamClientEndpoint = HostnameEndpoint(reactor, host, port)
    else:
        host = None
        inner = clientFromString(reactor, target)
    if tls is None:
        return inner
    hostname = tls.hostname or host
    if not hostname:
        raise ValueError("TLS to an endpoint string needs ClientTLSSettings.hostname")
    return wrapClientTLS(client_options(tls, hostname), inner)


def client_options(tls: ClientTLSSettings, hostname: str) -> Any:
    """OpenSSL options for a sender: verify ``hostname``, present a certificate if set."""
    if tls.ca_certificates is None:
        trust = platformTrust()
    else:
        trust = trustRootFromCertificates(
            [Certificate(c) for c in _openssl_authorities(tls.ca_certificates)]
        )
    extra: dict[str, Any] = {"raiseMinimumTo": MINIMUM_TLS}
    if tls.certificate is not None and tls.private_key is not None:
        leaf, *chain = load_certificates(tls.certificate)
        extra.update(
            certificate=leaf,
            privateKey=load_private_key(tls.private_key),
            extraCertChain=chain,
        )
    return optionsForClientTLS(hostname, trustRoot=trust, extraCertificateOptions=extra)
