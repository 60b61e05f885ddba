"""TLS settings of a listener as channel and engine files write them."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mllp.endpoints import TLSSettings


class ListenerTLS(BaseModel):
    """Server certificate and, optionally, the client certificates the listener requires."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate: Path
    private_key: Path
    ca_certificates: Path | None = None
    require_client_certificate: bool = False

    def relative_to(self, base: Path) -> ListenerTLS:
        """These files taken relative to `base` (the directory of the file naming them)."""
        return self.model_copy(update={
            "certificate": base / self.certificate,
            "private_key": base / self.private_key,
            "ca_certificates": base / self.ca_certificates if self.ca_certificates else None,
        })

    def settings(self) -> TLSSettings:
        """The TLS settings `mllp.endpoints.server_endpoint` takes."""
        return TLSSettings(self.certificate, self.private_key, self.ca_certificates,
                           self.require_client_certificate)
