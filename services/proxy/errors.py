"""Failures the data path turns into local replies, each with its HTTP status and Envoy-style response flag."""

from __future__ import annotations


class ProxyError(Exception):
    """A request the proxy answers itself: `status` goes to the caller, `flag` to logs and headers."""

    status = 500
    flag = "-"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoRoute(ProxyError):
    status = 404
    flag = "NR"


class NoHealthyUpstream(ProxyError):
    status = 503
    flag = "UH"


class UpstreamConnectFailure(ProxyError):
    status = 503
    flag = "UF"


class UpstreamTimeout(ProxyError):
    status = 504
    flag = "UT"


class AccessDenied(ProxyError):
    status = 403
    flag = "RBAC"


class NotReady(ProxyError):
    """No config or no certificate yet: the proxy cannot route safely."""

    status = 503
    flag = "NC"


class UpstreamOverflow(ProxyError):
    """A cluster's circuit breaker (DestinationRule connectionPool) is full: answered at once, never queued."""

    status = 503
    flag = "UO"


class BadRequest(ProxyError):
    """A request the proxy cannot pass on as it is (a gRPC-Web body that does not decode, say)."""

    status = 400
    flag = "-"
