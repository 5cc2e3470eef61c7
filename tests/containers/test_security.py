"""Zero trust in the compose mesh: SPIFFE identities across VMs, STRICT mTLS on the inbound port, and an
AuthorizationPolicy that lets only order-service call payment-service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.containers.mesh import NAMESPACE, TRUST_DOMAIN, ComposeMesh, eventually

INBOUND_PORT = 15006

STRICT_MTLS = f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: {NAMESPACE}
spec:
  mtls:
    mode: STRICT
"""

ONLY_ORDER_CALLS_PAYMENT = f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: containers-suite-payment-callers
  namespace: {NAMESPACE}
spec:
  selector:
    matchLabels:
      app: payment-service
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - {TRUST_DOMAIN}/ns/{NAMESPACE}/sa/order-service
"""


@pytest.fixture
def applied(mesh: ComposeMesh, request: pytest.FixtureRequest) -> Iterator[None]:
    """Applies the YAML given by indirect parametrization through galley, and deletes it afterwards."""
    text: str = request.param
    mesh.apply(text)
    try:
        yield
    finally:
        mesh.delete(text)


def test_payment_service_sees_order_service_spiffe_identity(mesh: ComposeMesh) -> None:
    _, status, version, caller = mesh.call("order-service-v1", "/call/payment-service/pay")
    assert (status, version) == (200, "v1")
    assert caller == f"spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/order-service"


@pytest.mark.parametrize("applied", [STRICT_MTLS], indirect=True, ids=["strict"])
def test_strict_mtls_refuses_plain_text_on_the_inbound_port(mesh: ComposeMesh, applied: None) -> None:
    url = f"http://{mesh.ip('product-service-v1')}:{INBOUND_PORT}/"

    def plain_text_refused() -> bool:
        probe = mesh.exec("order-service-v1", ["isthmus-http", "-t", "5", url], check=False)
        assert '"service"' not in probe.stdout, f"plain text reached the app: {probe.stdout}"
        return probe.returncode != 0

    eventually(plain_text_refused, 30, f"plain-text GET {url} refused")
    # Mesh traffic, which is mTLS, still flows.
    assert mesh.call("order-service-v1", "/call/product-service/")[1] == 200


@pytest.mark.parametrize("applied", [ONLY_ORDER_CALLS_PAYMENT], indirect=True, ids=["allow-order"])
def test_only_order_service_may_call_payment_service(mesh: ComposeMesh, applied: None) -> None:
    eventually(
        lambda: mesh.call("product-service-v1", "/call/payment-service/pay")[1] == 403,
        30,
        "product-service -> payment-service denied with 403",
    )
    for _ in range(5):
        _, status, _, caller = mesh.call("order-service-v1", "/call/payment-service/pay")
        assert status == 200, "order-service -> payment-service must stay allowed"
        assert caller == f"spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/order-service"
    for _ in range(5):
        assert mesh.call("product-service-v1", "/call/payment-service/pay")[1] == 403
