"""One sidecar fronting several app ports (Meta `isthmus-extra-ports`): which inbound port, transport and protocol
each of a caller's clusters and TCP listeners gets."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.snapshot import Instance
from services.pilot.testing import meshed, proxy_of, snapshot
from shared.consul import META_EXTRA_PORTS, META_PROTOCOL, META_UPSTREAMS
from shared.model.peer_authentication import MtlsMode
from shared.model.proxy_config import ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"
REVIEWS_ID = "spiffe://cluster.local/ns/shop/sa/reviews"
CALLER = meshed("frontend", "10.0.0.1", namespace="shop", **{META_UPSTREAMS: "reviews,reviews:5432,reviews:9080"})
# HTTP on 9080 (registered port 15006), TCP on 5432 (15008), a second HTTP port 9090 (15009).
REVIEWS = meshed(
    "reviews",
    "10.0.1.1",
    namespace="shop",
    app_port=9080,
    app="reviews",
    **{META_EXTRA_PORTS: "tcp:5432:15008,http:9090:15009"},
)
SINGLE = meshed("reviews", "10.0.1.2", namespace="shop", app_port=9080, app="reviews")

VS_9090 = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /admin}}]
    route: [{destination: {host: reviews, port: {number: 9090}}}]
  - route: [{destination: {host: reviews}}]
"""


def _generate(catalog: list[Instance], config: str = "", proxy: str = "frontend-10.0.0.1") -> ProxyConfig:
    snap = snapshot(catalog, config)
    return generate(snap, proxy_of(snap, proxy), TD, ROOT)


def _endpoints(config: ProxyConfig, cluster: str) -> list[tuple[str, int, str | None]]:
    found = next(c for c in config.clusters if c.name == cluster)
    return [(e.address, e.port, e.identity) for e in found.endpoints]


def test_the_tcp_port_gets_a_listener_whose_cluster_reaches_its_inbound_port() -> None:
    config = _generate([CALLER, REVIEWS])
    assert [(t.name, t.port) for t in config.tcp_listeners] == [("reviews:5432", 5432)]
    assert [w.cluster for w in config.tcp_listeners[0].routes[0].route] == ["outbound|5432||reviews"]
    assert _endpoints(config, "outbound|5432||reviews") == [("10.0.1.1", 15008, REVIEWS_ID)]


def test_http_keeps_the_registered_port_and_a_destination_port_picks_another_http_port() -> None:
    config = _generate([CALLER, REVIEWS], VS_9090)
    assert _endpoints(config, "outbound|80||reviews") == [("10.0.1.1", 15006, REVIEWS_ID)]
    assert _endpoints(config, "outbound|9090||reviews") == [("10.0.1.1", 15009, REVIEWS_ID)]


def test_a_single_port_instance_of_the_same_service_answers_every_cluster_on_its_registered_port() -> None:
    config = _generate([CALLER, REVIEWS, SINGLE], VS_9090)
    assert _endpoints(config, "outbound|9090||reviews") == [
        ("10.0.1.1", 15009, REVIEWS_ID),
        ("10.0.1.2", 15006, REVIEWS_ID),
    ]


def test_port_level_mtls_keys_on_each_app_port() -> None:
    strict_but_tcp_plain = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls: {5432: {mode: DISABLE}}
"""
    caller = _generate([CALLER, REVIEWS], strict_but_tcp_plain)
    assert _endpoints(caller, "outbound|5432||reviews") == [("10.0.1.1", 15008, None)]
    assert _endpoints(caller, "outbound|80||reviews") == [("10.0.1.1", 15006, REVIEWS_ID)]
    server = _generate([CALLER, REVIEWS], strict_but_tcp_plain, proxy="reviews-10.0.1.1")
    assert server.inbound.mode_for_port(5432) == MtlsMode.DISABLE
    assert server.inbound.mode_for_port(9080) == server.inbound.mode_for_port(9090) == MtlsMode.STRICT


def test_a_tcp_primary_port_with_an_http_extra_port_takes_http_on_the_extra_port() -> None:
    db = meshed("db", "10.0.2.1", app_port=5432, **{META_PROTOCOL: "tcp", META_EXTRA_PORTS: "http:8080:15010"})
    caller = meshed("reports", "10.0.0.2", **{META_UPSTREAMS: "db,db:5432,db:8080"})
    config = _generate([caller, db], proxy="reports-10.0.0.2")
    assert [t.name for t in config.tcp_listeners] == ["db:5432"]
    db_id = "spiffe://cluster.local/ns/default/sa/db"
    assert _endpoints(config, "outbound|5432||db") == [("10.0.2.1", 15006, db_id)]
    assert _endpoints(config, "outbound|80||db") == [("10.0.2.1", 15010, db_id)]


def test_extra_ports_of_an_instance_without_sidecar_are_ignored() -> None:
    other_tool = Instance(
        service="cache", service_id="cache-1", node="n1", address="10.0.3.1", port=6379,
        meta={META_PROTOCOL: "tcp", META_EXTRA_PORTS: "http:8080:18080"},
    )  # fmt: skip
    caller = meshed("reports", "10.0.0.2", **{META_UPSTREAMS: "cache,cache:6379"})
    config = _generate([caller, other_tool], proxy="reports-10.0.0.2")
    assert [t.name for t in config.tcp_listeners] == ["cache:6379"]
    assert _endpoints(config, "outbound|80||cache") == [("10.0.3.1", 6379, None)]
