"""The hot path's latency histogram shows in Prometheus what a plain ``Histogram`` would."""

from __future__ import annotations

import itertools

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.registry import REGISTRY

from app.metrics import LATENCY_BUCKETS, LatencyHistogram

_names = (f"test_latency_{n}_seconds" for n in itertools.count())


def samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    """The histogram's samples (buckets, count, sum) as ``{suffix and labels: value}``, minus ``_created``."""
    found = {}
    for metric in registry.collect():
        if metric.name != name:
            continue
        for sample in metric.samples:
            if not sample.name.endswith("_created"):
                key = sample.name.removeprefix(name) + str(sorted(sample.labels.items()))
                found[key] = sample.value
    return found


def test_published_buckets_count_and_sum_equal_a_plain_histogram_after_the_same_observations() -> None:
    name = next(_names)
    ours = LatencyHistogram(name, "ours", LATENCY_BUCKETS)
    reference_registry = CollectorRegistry()
    reference = Histogram(name, "reference", buckets=LATENCY_BUCKETS, registry=reference_registry)
    # on a bound (a bucket is "less than or equal"), between bounds, below all, above all
    values = [*LATENCY_BUCKETS, 0.0, 0.00007, 0.0003, 0.003, 0.7, 2.5000001, 60.0]
    for value in values:
        ours.observe(value)
        reference.observe(value)
    ours.publish()

    assert samples(REGISTRY, name) == samples(reference_registry, name)
    assert samples(REGISTRY, name)["_count[]"] == len(values)


def test_nothing_reaches_prometheus_before_publish_and_nothing_is_counted_twice() -> None:
    name = next(_names)
    ours = LatencyHistogram(name, "ours", LATENCY_BUCKETS)
    ours.observe(0.002)
    assert samples(REGISTRY, name)["_count[]"] == 0

    ours.publish()
    ours.publish()  # nothing new
    ours.observe(0.02)
    ours.publish()

    published = samples(REGISTRY, name)
    assert published["_count[]"] == 2
    assert published["_sum[]"] == pytest.approx(0.022)
    assert published["_bucket[('le', '0.0025')]"] == 1
    assert published["_bucket[('le', '0.025')]"] == 2
