"""Every NATS subject and JetStream KV bucket name Isthmus uses, written once."""

from __future__ import annotations

import re

# Accepted config: key "<kind>.<namespace>.<name>", value = resource JSON. Written by galley, read by pilot.
CONFIG_BUCKET = "isthmus_config"
# Per-proxy generated config: key = proxy id, value = ProxyConfig JSON. Written by pilot, read by proxies.
PROXY_CONFIG_BUCKET = "isthmus_proxy_config"
# Trust bundle: key TRUST_BUNDLE_KEY, value = PEM roots. Written by citadel, read by proxies.
TRUST_BUNDLE_BUCKET = "isthmus_trust_bundle"
TRUST_BUNDLE_KEY = "roots"

# Revoked bootstrap tokens: key = token jti, value = the token's exp (decimal seconds). Written by
# `isthmus token revoke`, read by citadel, which refuses those tokens.
TOKEN_REVOCATION_BUCKET = "isthmus_token_revocations"

# Proxy sync state: key = proxy id, value = the proxy's latest Ack (shared.bus.codec). Written by proxies.
PROXY_STATUS_BUCKET = "isthmus_proxy_status"

_KEY_UNSAFE = re.compile(r"[^-_=a-zA-Z0-9]")


def key_token(value: str) -> str:
    """Make one dot-free KV key token from arbitrary text (anything outside [-_=a-zA-Z0-9] becomes '_')."""
    return _KEY_UNSAFE.sub("_", value)


def config_key(kind: str, namespace: str, name: str) -> str:
    return f"{key_token(kind)}.{key_token(namespace)}.{key_token(name)}"


def proxy_key(proxy_id: str) -> str:
    """KV key of one proxy in PROXY_CONFIG_BUCKET and PROXY_STATUS_BUCKET."""
    return key_token(proxy_id)
