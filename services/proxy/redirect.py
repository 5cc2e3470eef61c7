"""Routes that answer themselves, after routing: VirtualService `redirect` and `directResponse`.

A redirect answers `redirectCode` (default 301) with a Location built from the request: `scheme` replaces the
scheme (default the request's: http on the outbound listener, a gateway server's own), `authority` the host (its
port, if it names one, the port), `uri` the whole path (Istio: whatever the match was) while the query is kept
unless `uri` brings its own; `port` replaces the port, `derivePort: FROM_PROTOCOL_DEFAULT` drops it,
`FROM_REQUEST_PORT` takes the request's; otherwise the Host header's port stays, as in Envoy. A port equal to
the scheme's default is left out. A direct response answers `status` with `body` (text/plain when a body is
given). Neither carries a response flag (Envoy logs them as normal responses); the route's response header
operations apply to both.
"""

from __future__ import annotations

from shared.model.virtual_service import HTTPDirectResponse, HTTPRedirect, RedirectPortSelection

DEFAULT_SCHEME = "http"
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_authority(authority: str) -> tuple[str, int | None]:
    """`host:port` -> (host, port); `[::1]:80` -> ("[::1]", 80); no port -> (host, None)."""
    if authority.startswith("["):
        end = authority.find("]")
        rest = authority[end + 1 :] if end != -1 else ""
        host = authority[: end + 1] if end != -1 else authority
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    name, sep, port = authority.rpartition(":")
    return (name, int(port)) if sep and port.isdigit() else (authority, None)


def location(
    redirect: HTTPRedirect, authority: str, path_qs: str, request_port: int | None, scheme: str = DEFAULT_SCHEME
) -> str:
    """`scheme`: the request's, which the redirect keeps unless it names one."""
    scheme = redirect.scheme or scheme
    host, port = split_authority(authority)
    if redirect.authority is not None:
        host, new_port = split_authority(redirect.authority)
        port = new_port if new_port is not None else port
    if redirect.port is not None:
        port = redirect.port
    elif redirect.derive_port is RedirectPortSelection.FROM_PROTOCOL_DEFAULT:
        port = None
    elif redirect.derive_port is RedirectPortSelection.FROM_REQUEST_PORT:
        port = request_port
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    path, _, query = path_qs.partition("?")
    if redirect.uri is not None:
        path = redirect.uri
        if "?" in path:
            query = ""
    return f"{scheme}://{host}{path}{'?' + query if query else ''}"


def direct_body(response: HTTPDirectResponse) -> bytes:
    return response.body.content() if response.body is not None else b""
