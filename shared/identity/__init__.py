"""Workload identity: SPIFFE IDs and the principal strings AuthorizationPolicy uses."""

from shared.identity.spiffe import SpiffeId, parse_spiffe_id, principal_of

__all__ = ["SpiffeId", "parse_spiffe_id", "principal_of"]
