"""Several edges' series summed into one /metrics (runtime.metrics.merge)."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from runtime import metrics


def _edge(pings: int, latencies: list[float], available: int) -> metrics.Families:
    registry = CollectorRegistry()
    counter = Counter("pingstream_pings", "pings", ["kind"], registry=registry)
    counter.labels("success").inc(pings)
    histogram = Histogram("pingstream_log_produce_seconds", "produce", buckets=(0.001, 0.01), registry=registry)
    for latency in latencies:
        histogram.observe(latency)
    Gauge("pingstream_log_available", "log", registry=registry).set(available)
    return json.loads(json.dumps(metrics.families(registry)))  # as it crosses the socket


def _samples(exposition: bytes) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition.decode()) for s in family.samples}


def test_it_adds_up_counters_and_histograms():
    merged = _samples(metrics.merge([_edge(3, [0.0005, 0.005], 1), _edge(4, [0.02], 1)]))
    assert merged[("pingstream_pings_total", (("kind", "success"),))] == 7
    assert merged[("pingstream_log_produce_seconds_bucket", (("le", "0.001"),))] == 1
    assert merged[("pingstream_log_produce_seconds_bucket", (("le", "0.01"),))] == 2
    assert merged[("pingstream_log_produce_seconds_bucket", (("le", "+Inf"),))] == 3
    assert merged[("pingstream_log_produce_seconds_count", ())] == 3


def test_it_keeps_a_gauges_lowest_value():
    assert _samples(metrics.merge([_edge(1, [], 1), _edge(1, [], 0)]))[("pingstream_log_available", ())] == 0


def test_it_keeps_the_earliest_creation_time():
    first, second = _edge(1, [], 1), _edge(1, [], 1)
    created = [s for f in first if f[0] == "pingstream_pings" for s in f[3] if s[0].endswith("_created")][0]
    created[2] -= 100
    merged = _samples(metrics.merge([first, second]))
    assert merged[("pingstream_pings_created", (("kind", "success"),))] == created[2]


def test_one_process_merged_is_its_own_exposition():
    edge = _edge(5, [0.003], 1)
    assert _samples(metrics.merge([edge])) == _samples(metrics.merge([edge, []]))
    assert _samples(metrics.merge([edge]))[("pingstream_pings_total", (("kind", "success"),))] == 5
