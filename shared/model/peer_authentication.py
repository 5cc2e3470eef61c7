"""PeerAuthentication: the mTLS mode a workload's inbound listener enforces (mesh, namespace, workload)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from shared.model.base import Spec, WorkloadSelector


class MtlsMode(StrEnum):
    UNSET = "UNSET"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


class MutualTLS(Spec):
    mode: MtlsMode = MtlsMode.UNSET


class PeerAuthenticationSpec(Spec):
    selector: WorkloadSelector | None = None
    mtls: MutualTLS | None = None
    port_level_mtls: dict[int, MutualTLS] = Field(default_factory=dict)

    @field_validator("port_level_mtls")
    @classmethod
    def _ports(cls, value: dict[int, MutualTLS]) -> dict[int, MutualTLS]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is outside 1-65535")
        return value
