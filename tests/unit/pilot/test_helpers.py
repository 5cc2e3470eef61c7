"""Small pilot helpers: Consul index rules, health entries, listen addresses, backoff, config values."""

from __future__ import annotations

import pytest

from services.pilot.backoff import Backoff
from services.pilot.catalog_watch import consul_base_url, instance_from_health, next_index
from services.pilot.server import parse_listen
from shared.clock import FakeClock
from shared.consul import META_MESH, META_PROXY_ID


def test_consul_index_resets_when_it_goes_backwards_and_never_drops_below_one() -> None:
    assert next_index(0, "42") == 42
    assert next_index(42, "42") == 42
    assert next_index(42, "7") == 0
    assert next_index(0, "0") == 1
    assert next_index(5, None) == 0
    assert next_index(5, "junk") == 0


def test_consul_address_forms() -> None:
    assert consul_base_url("127.0.0.1:8500") == "http://127.0.0.1:8500"
    assert consul_base_url("https://consul.example:8501/") == "https://consul.example:8501"


def health_entry(checks: list[str], address: str = "") -> dict[str, object]:
    return {
        "Node": {"Node": "vm1", "Address": "10.1.1.1"},
        "Service": {
            "ID": "web-1",
            "Service": "web",
            "Address": address,
            "Port": 15006,
            "Meta": {META_MESH: "true", META_PROXY_ID: "web-vm1", "version": "v2"},
        },
        "Checks": [{"Status": status} for status in checks],
    }


def test_health_entry_becomes_an_instance() -> None:
    instance = instance_from_health(health_entry(["passing", "passing"]))
    assert (instance.address, instance.port, instance.healthy) == ("10.1.1.1", 15006, True)
    assert instance.meshed and instance.proxy_id == "web-vm1"
    assert instance.labels == {"version": "v2"}
    assert instance.namespace == "default"
    assert instance_from_health(health_entry(["passing", "critical"], "10.2.2.2")).healthy is False
    assert instance_from_health(health_entry([], "10.2.2.2")).address == "10.2.2.2"


def test_consul_passing_weight_becomes_the_instance_weight() -> None:
    entry = health_entry(["passing"])
    assert instance_from_health(entry).weight == 1  # Consul's default
    service = entry["Service"]
    assert isinstance(service, dict)
    for weights, expected in (({"Passing": 5, "Warning": 1}, 5), ({"Passing": "x"}, 1), (None, 1), ({"Passing": 0}, 1)):
        service["Weights"] = weights
        assert instance_from_health(entry).weight == expected


def test_a_malformed_health_entry_raises() -> None:
    with pytest.raises(KeyError):
        instance_from_health({"Node": {}})


@pytest.mark.parametrize("bad", ["15014", ":15014", "host:port", "127.0.0.1:70000"])
def test_bad_listen_addresses_name_the_problem(bad: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        parse_listen(bad)


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:15014") == ("::1", 15014)


class RecordingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


async def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    clock = RecordingClock()
    backoff = Backoff(clock, initial=0.1, cap=0.3)
    for _ in range(4):
        await backoff.sleep()
    backoff.reset()
    await backoff.sleep()
    assert clock.slept == [0.1, 0.2, 0.3, 0.3, 0.1]
    with pytest.raises(ValueError, match="initial"):
        Backoff(clock, initial=0.0)
