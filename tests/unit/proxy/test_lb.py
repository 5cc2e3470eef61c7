"""Load balancer pickers and consistent-hash keys, with seeded RNGs."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from services.proxy.lb import (
    HashKeySource,
    LeastRequestPicker,
    RandomPicker,
    RingHashPicker,
    RoundRobinPicker,
    WeightedLeastRequestPicker,
    WeightedRandomPicker,
    WeightedRoundRobinPicker,
    endpoint_key,
    hash64,
    picker_for,
)
from shared.model.destination_rule import LoadBalancerSettings
from shared.model.proxy_config import Endpoint

ENDPOINTS = [Endpoint(address=f"10.0.0.{i}", port=80) for i in range(1, 5)]


def _lb(raw: dict[str, object] | None) -> LoadBalancerSettings | None:
    return LoadBalancerSettings.model_validate(raw) if raw is not None else None


def test_picker_kinds_follow_istio_names_and_default_to_least_request() -> None:
    rng = random.Random(1)
    assert isinstance(picker_for(None, ENDPOINTS, rng), LeastRequestPicker)
    assert isinstance(picker_for(_lb({"simple": "UNSPECIFIED"}), ENDPOINTS, rng), LeastRequestPicker)
    assert isinstance(picker_for(_lb({"simple": "LEAST_CONN"}), ENDPOINTS, rng), LeastRequestPicker)
    assert isinstance(picker_for(_lb({"simple": "ROUND_ROBIN"}), ENDPOINTS, rng), RoundRobinPicker)
    assert isinstance(picker_for(_lb({"simple": "RANDOM"}), ENDPOINTS, rng), RandomPicker)
    chash = picker_for(_lb({"consistentHash": {"httpHeaderName": "x-user"}}), ENDPOINTS, rng)
    assert isinstance(chash, RingHashPicker)


def test_least_request_prefers_the_less_loaded_of_two() -> None:
    picker = LeastRequestPicker(random.Random(5))
    busy = {endpoint_key(e): 10 for e in ENDPOINTS[:3]}
    picks = Counter(picker.pick(ENDPOINTS, None, busy).address for _ in range(400))
    # The idle endpoint wins whenever it is one of the two candidates: half of the draws of 2 out of 4.
    assert picks["10.0.0.4"] > 150
    assert len(picks) == 4


def test_least_request_with_one_endpoint() -> None:
    assert LeastRequestPicker(random.Random(1)).pick(ENDPOINTS[:1], None, {}) is ENDPOINTS[0]


def test_ring_hash_is_stable_and_skips_unavailable() -> None:
    picker = RingHashPicker(ENDPOINTS, 1024, random.Random(1))
    key = hash64("user-42")
    first = picker.pick(ENDPOINTS, key, {})
    assert all(picker.pick(ENDPOINTS, key, {}) is first for _ in range(10))
    others = [e for e in ENDPOINTS if e is not first]
    assert picker.pick(others, key, {}) in others


def test_ring_hash_without_key_falls_back_to_random() -> None:
    picker = RingHashPicker(ENDPOINTS, 64, random.Random(2))
    assert {picker.pick(ENDPOINTS, None, {}).address for _ in range(100)} == {e.address for e in ENDPOINTS}


def test_hash_key_sources() -> None:
    headers = {"x-user": "alice", "cookie": "session=abc; other=1"}
    header = HashKeySource.of(_lb({"consistentHash": {"httpHeaderName": "X-User"}}))
    cookie = HashKeySource.of(_lb({"consistentHash": {"httpCookie": {"name": "session", "ttl": "0s"}}}))
    source = HashKeySource.of(_lb({"consistentHash": {"useSourceIp": True}}))
    query = HashKeySource.of(_lb({"consistentHash": {"httpQueryParameterName": "u"}}))
    assert header is not None and cookie is not None and source is not None and query is not None
    assert header.key(headers, "1.2.3.4", "") == hash64("alice")
    assert cookie.key(headers, None, "") == hash64("abc")
    assert source.key(headers, "1.2.3.4", "") == hash64("1.2.3.4")
    assert query.key({}, None, "a=1&u=bob") == hash64("bob")
    assert query.key({}, None, "a=1") is None
    assert header.key({}, None, "") is None
    assert cookie.key({"cookie": 'broken="unterminated'}, None, "") is None
    assert HashKeySource.of(_lb({"simple": "RANDOM"})) is None


def test_cookie_with_ttl_is_generated_when_missing() -> None:
    with_ttl = HashKeySource.of(_lb({"consistentHash": {"httpCookie": {"name": "sid", "path": "/", "ttl": "60s"}}}))
    session = HashKeySource.of(_lb({"consistentHash": {"httpCookie": {"name": "sid", "ttl": "0s"}}}))
    read_only = HashKeySource.of(_lb({"consistentHash": {"httpCookie": {"name": "sid"}}}))
    assert with_ttl is not None and session is not None and read_only is not None
    generated = with_ttl.new_cookie(random.Random(1))
    assert generated is not None
    key, set_cookie = generated
    value = set_cookie.split(";")[0].split("=")[1]
    assert set_cookie == f"sid={value}; Path=/; Max-Age=60; HttpOnly"
    # The client sends the cookie back and lands on the same ring point.
    assert with_ttl.key({"cookie": f"sid={value}"}, None, "") == key
    session_cookie = session.new_cookie(random.Random(1))
    assert session_cookie is not None and "Max-Age" not in session_cookie[1]
    assert read_only.new_cookie(random.Random(1)) is None


def test_a_generated_cookie_carries_the_configured_attributes() -> None:
    cookie = {"name": "sid", "ttl": "60s", "attributes": [{"name": "SameSite", "value": "Strict"}, {"name": "Secure"}]}
    source = HashKeySource.of(_lb({"consistentHash": {"httpCookie": cookie}}))
    assert source is not None
    generated = source.new_cookie(random.Random(1))
    assert generated is not None and generated[1].endswith("; Max-Age=60; HttpOnly; SameSite=Strict; Secure")


@pytest.mark.parametrize(
    ("attribute", "problem"),
    [({"name": "Same Site"}, "must be a token"), ({"name": "Domain", "value": "a; Secure"}, "cannot hold ';'")],
)
def test_cookie_attributes_that_would_break_the_header_are_refused(attribute: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        _lb({"consistentHash": {"httpCookie": {"name": "sid", "attributes": [attribute]}}})


def test_ring_size_forms() -> None:
    assert picker_for(
        _lb({"consistentHash": {"useSourceIp": True, "ringHash": {"minimumRingSize": 8}}}), ENDPOINTS, random.Random(1)
    )
    settings = _lb({"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 16}}})
    assert settings is not None and settings.consistent_hash is not None
    assert settings.consistent_hash.ring_size() == 16
    small = RingHashPicker(ENDPOINTS, 8, random.Random(1))
    assert len(small._hashes) == 8  # two points for each of four endpoints


def _weighted(*weights: int) -> list[Endpoint]:
    return [Endpoint(address=f"10.0.1.{i}", port=80, weight=w) for i, w in enumerate(weights, start=1)]


def _names(picks: list[Endpoint]) -> str:
    return "".join("abcdefgh"[int(e.address.rsplit(".", 1)[1]) - 1] for e in picks)


def test_unequal_weights_choose_the_weighted_pickers_and_equal_ones_do_not() -> None:
    rng = random.Random(1)
    weighted = _weighted(3, 1)
    assert isinstance(picker_for(_lb({"simple": "ROUND_ROBIN"}), weighted, rng), WeightedRoundRobinPicker)
    assert isinstance(picker_for(_lb({"simple": "RANDOM"}), weighted, rng), WeightedRandomPicker)
    assert isinstance(picker_for(None, weighted, rng), WeightedLeastRequestPicker)
    assert isinstance(picker_for(_lb({"simple": "ROUND_ROBIN"}), _weighted(5, 5), rng), RoundRobinPicker)


def test_weighted_round_robin_is_smooth() -> None:
    endpoints = _weighted(5, 1, 1)
    picker = WeightedRoundRobinPicker()
    assert _names([picker.pick(endpoints, None, {}) for _ in range(14)]) == "aabacaa" * 2
    # An endpoint leaving: the others share in their own proportion.
    assert Counter(_names([picker.pick(endpoints[1:], None, {}) for _ in range(10)])) == {"b": 5, "c": 5}


def test_weighted_random_follows_the_weights() -> None:
    picker = WeightedRandomPicker(random.Random(7))
    picks = Counter(_names([picker.pick(_weighted(3, 1), None, {}) for _ in range(4000)]))
    assert 2800 < picks["a"] < 3200 and picks["a"] + picks["b"] == 4000


def test_weighted_least_request_follows_the_weights_and_avoids_a_busy_endpoint() -> None:
    endpoints = _weighted(3, 1)
    picker = WeightedLeastRequestPicker()
    assert Counter(_names([picker.pick(endpoints, None, {}) for _ in range(400)])) == {"a": 300, "b": 100}
    busy = {endpoint_key(endpoints[0]): 8}  # a: 3 / 9 against b: 1 / 1
    picks = Counter(_names([picker.pick(endpoints, None, busy) for _ in range(400)]))
    assert picks["b"] > picks["a"]


def test_a_weighted_ring_gives_keys_in_proportion_to_weight() -> None:
    endpoints = _weighted(3, 1)
    picker = RingHashPicker(endpoints, 1024, random.Random(1))
    owners = Counter(_names([picker.pick(endpoints, hash64(f"user-{n}"), {}) for n in range(4000)]))
    assert 2700 < owners["a"] < 3300
