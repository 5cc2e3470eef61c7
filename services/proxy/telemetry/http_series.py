"""Istio's four HTTP series kept as plain counters and exposed through a collector at scrape time.

`istio_requests_total` and the three histograms (`istio_request_duration_milliseconds`,
`istio_request_bytes`, `istio_response_bytes`) share one label tuple per request, so one record per label
tuple holds all four: a request costs one dict lookup, three bucket searches and a handful of integer
additions, with no locks (requests and scrapes both run on the proxy's event loop). The exposition is what
prometheus-client's Counter and Histogram print (`_total`, cumulative `_bucket` with `le`, `_sum`,
`_count`), without the `_created` samples.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class Histogram:
    """One series' bucket counts (not cumulative; the last is +Inf) and sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0


class HttpRecord:
    """The four series of one label tuple."""

    __slots__ = ("duration", "request_bytes", "requests", "response_bytes")

    def __init__(self, duration_size: int, bytes_size: int) -> None:
        self.requests = 0
        self.duration = Histogram(duration_size)
        self.request_bytes = Histogram(bytes_size)
        self.response_bytes = Histogram(bytes_size)


class HttpSeries(Collector):
    """Istio's HTTP request metrics, recorded on the request path and rendered when scraped."""

    def __init__(
        self, label_names: Sequence[str], duration_buckets: Sequence[float], bytes_buckets: Sequence[float]
    ) -> None:
        self._label_names = list(label_names)
        self._duration_bounds = tuple(float(bound) for bound in duration_buckets)
        self._bytes_bounds = tuple(float(bound) for bound in bytes_buckets)
        self._duration_le = _le_values(self._duration_bounds)
        self._bytes_le = _le_values(self._bytes_bounds)
        self._records: dict[Labels, HttpRecord] = {}

    def record(self, labels: Labels, duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        record = self._records.get(labels)
        if record is None:
            if len(labels) != len(self._label_names):
                raise ValueError(f"{len(labels)} label values for {len(self._label_names)} label names")
            record = HttpRecord(len(self._duration_bounds) + 1, len(self._bytes_bounds) + 1)
            self._records[labels] = record
        record.requests += 1
        duration = record.duration
        duration.counts[bisect_left(self._duration_bounds, duration_ms)] += 1
        duration.sum += duration_ms
        sizes = record.request_bytes
        sizes.counts[bisect_left(self._bytes_bounds, request_bytes)] += 1
        sizes.sum += request_bytes
        sizes = record.response_bytes
        sizes.counts[bisect_left(self._bytes_bounds, response_bytes)] += 1
        sizes.sum += response_bytes

    def collect(self) -> Iterator[Metric]:
        names = self._label_names
        requests = CounterMetricFamily("istio_requests", "Requests handled", labels=names)
        duration = HistogramMetricFamily("istio_request_duration_milliseconds", "Request duration", labels=names)
        request_bytes = HistogramMetricFamily("istio_request_bytes", "Request body sizes", labels=names)
        response_bytes = HistogramMetricFamily("istio_response_bytes", "Response body sizes", labels=names)
        for labels, record in list(self._records.items()):
            values = list(labels)
            requests.add_metric(values, record.requests)
            _add(duration, values, record.duration, self._duration_le)
            _add(request_bytes, values, record.request_bytes, self._bytes_le)
            _add(response_bytes, values, record.response_bytes, self._bytes_le)
        yield from (requests, duration, request_bytes, response_bytes)


def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label of each bucket, +Inf last, spelled as prometheus-client spells them."""
    return tuple(str(floatToGoString(bound)) for bound in (*bounds, float("inf")))  # type: ignore[no-untyped-call]


def _add(family: HistogramMetricFamily, labels: list[str], histogram: Histogram, le_values: tuple[str, ...]) -> None:
    cumulative: list[tuple[str, float]] = []
    running = 0
    for le, count in zip(le_values, list(histogram.counts), strict=True):
        running += count
        cumulative.append((le, running))
    family.add_metric(labels, cumulative, histogram.sum)
