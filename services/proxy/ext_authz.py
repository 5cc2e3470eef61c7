"""CUSTOM AuthorizationPolicy action: asks an external HTTP authorizer (Envoy's ext_authz, HTTP flavour).

Provider names map to base URLs given to the sidecar (`--ext-authz NAME=URL`), as Istio's mesh config
`extensionProviders` would. The check request carries the original method, path (appended to the URL's path)
and headers, without a body. A 200 answer allows; any other status denies with that status and body (Envoy's
behaviour); an unknown provider, a timeout or a connection error denies with 403 (fail closed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from services.proxy.errors import ProxyError

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 5.0
_NOT_FORWARDED = frozenset({"content-length", "transfer-encoding", "host", "expect"})


class ExtAuthzDenied(ProxyError):
    status = 403
    flag = "UAEX"

    def __init__(self, message: str, status: int = 403, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def parse_providers(items: list[str]) -> dict[str, str]:
    """`NAME=URL` strings (from flags) -> {name: url}; raises ValueError naming the bad item."""
    providers: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"--ext-authz {item!r}: expected NAME=http://host:port[/path]")
        providers[name] = url.rstrip("/")
    return providers


@dataclass(frozen=True, slots=True)
class CheckRequest:
    method: str
    path: str
    headers: CIMultiDict[str]


class ExtAuthzClient:
    """One HTTP session per proxy; `check` raises ExtAuthzDenied unless the provider answers 200."""

    def __init__(self, providers: Mapping[str, str], timeout: float = CHECK_TIMEOUT) -> None:
        self._providers = dict(providers)
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        return self._session

    async def check(self, provider: str, policy: str, request: CheckRequest) -> None:
        base = self._providers.get(provider)
        if base is None:
            raise ExtAuthzDenied(f"{policy}: ext-authz provider {provider!r} is not configured on this proxy")
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED)
        try:
            async with self._client().request(
                request.method, base + request.path, headers=headers, allow_redirects=False
            ) as answer:
                body = await answer.text(errors="replace")
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("%s: ext-authz provider %s failed, denying: %s", policy, provider, err)
            raise ExtAuthzDenied(f"{policy}: ext-authz provider {provider!r} failed: {err}") from err
        if status != 200:
            code = status if 400 <= status <= 599 else 403
            raise ExtAuthzDenied(f"{policy}: denied by ext-authz provider {provider!r}", code, body)
