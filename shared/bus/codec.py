"""Messages proxies write back: the ACK/NACK state of each proxy's config, kept in a KV bucket."""

from __future__ import annotations

from shared.model.base import Spec


class Ack(Spec):
    """A proxy's answer to one config version: accepted (ACK) or rejected with the reason (NACK)."""

    proxy_id: str
    version: str
    accepted: bool
    error: str | None = None
    applied_version: str = ""
    """The version the proxy is running after this answer (the old one on a NACK)."""
    timestamp: float = 0.0

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Ack:
        return cls.model_validate_json(data)
