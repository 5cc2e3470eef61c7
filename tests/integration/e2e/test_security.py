"""Zero trust through the real mesh: AuthorizationPolicy between workloads, STRICT mTLS, a foreign CA.

Each test deletes what it applied through galley's API, so the session mesh is left as the other tests expect.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.local.mesh import LocalMesh, Workload
from services.proxy.tls import WorkloadIdentity, client_context

pytestmark = pytest.mark.integration

DEADLINE = 60.0
STRICT_SHOP = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mtls: {mode: STRICT}
"""


def delete(mesh: LocalMesh, kind: str, namespace: str, name: str) -> None:
    assert mesh.control_plane is not None
    url = f"{mesh.control_plane.galley_url}/v1/resources/{kind}/{namespace}/{name}"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as reply:
        json.loads(reply.read())


class Applied:
    """Applies YAML through galley; at the end deletes it all and waits for the given checks of the old state."""

    def __init__(self, mesh: LocalMesh) -> None:
        self._mesh = mesh
        self.created: list[tuple[str, str, str]] = []
        self.restored: list[tuple[Callable[[], Awaitable[bool]], str]] = []

    def __call__(self, name: str, content: str) -> None:
        answer = self._mesh.apply_text(name, content)
        for item in answer["applied"]:
            self.created.append((item["kind"], item["namespace"], item["name"]))

    def until_restored(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        self.restored.append((check, what))


@pytest.fixture
async def applied(mesh: LocalMesh) -> AsyncIterator[Applied]:
    tracker = Applied(mesh)
    yield tracker
    for kind, namespace, name in tracker.created:
        delete(mesh, kind, namespace, name)
    for check, what in tracker.restored:
        await eventually(check, what)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


async def call_status(caller: Workload, service: str) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{caller.app_url}/call/{service}/") as reply:
            await reply.read()
            return reply.status


async def plain_status(target: Workload) -> int | None:
    """Status of a plain-text request straight to the target's inbound port; None when the connection is refused."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"http://127.0.0.1:{target.inbound_port}/") as reply:
                await reply.read()
                return reply.status
    except aiohttp.ClientError:
        return None


def workload(workloads: dict[str, Workload], name: str) -> Workload:
    return workloads[name]


async def test_only_order_service_may_call_payment_service(
    mesh: LocalMesh, workloads: dict[str, Workload], applied: Applied
) -> None:
    order = workload(workloads, "order-service-v1")
    product = workload(workloads, "product-service-v1")
    payment = workload(workloads, "payment-service-v1")
    shipped = (resources.files("services.demoapp") / "config" / "authorization.yaml").read_text()
    applied("authorization.yaml", shipped)

    async def product_denied() -> bool:
        return await call_status(product, "payment-service") == 403

    await eventually(product_denied, "payment-service to refuse product-service")

    async def product_allowed() -> bool:
        return await call_status(product, "payment-service") == 200

    applied.until_restored(product_allowed, "payment-service to accept product-service again")
    assert await call_status(order, "payment-service") == 200
    assert await plain_status(payment) in (403, None)  # PERMISSIVE by default: plain text has no principal


async def test_strict_refuses_plain_text_and_meshed_calls_still_work(
    mesh: LocalMesh, workloads: dict[str, Workload], applied: Applied
) -> None:
    order = workload(workloads, "order-service-v1")
    payment = workload(workloads, "payment-service-v1")

    async def served() -> bool:
        return await plain_status(payment) == 200

    await eventually(served, "plain text to be served (PERMISSIVE, Istio's default)")
    applied("strict.yaml", STRICT_SHOP)

    async def refused() -> bool:
        return await plain_status(payment) is None

    await eventually(refused, "payment-service to refuse plain text")
    applied.until_restored(served, "plain text to be served again")
    assert await call_status(order, "payment-service") == 200


def foreign_client_context(spiffe_id: str) -> ssl.SSLContext:
    """A client presenting a workload certificate for `spiffe_id` from a CA the mesh does not trust."""
    now = datetime.datetime.now(datetime.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the mesh root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    chain = (leaf.public_bytes(serialization.Encoding.PEM),)
    identity = WorkloadIdentity(spiffe_id, key_pem, chain, root.public_bytes(serialization.Encoding.PEM), 0.0)
    context = client_context(identity)
    context.verify_mode = ssl.CERT_NONE  # only the server side is under test
    return context


async def test_client_certificate_from_another_ca_is_refused(workloads: dict[str, Workload]) -> None:
    payment = workload(workloads, "payment-service-v1")
    context = foreign_client_context("spiffe://cluster.local/ns/shop/sa/order-service")
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"https://127.0.0.1:{payment.inbound_port}/", ssl=context) as reply:
                await reply.read()
