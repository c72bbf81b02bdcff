"""Prometheus metrics: read from the store's kept counters at each scrape (two queries over
the batches table and the limiter waits, no item read), plus what only the server sees
(open streams, item durations as the feed reports them). ``/metrics`` with a token, or on
``--metrics-host/--metrics-port`` without one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from batchyard.states import BatchState, ItemState
from batchyard.web.auth import Caller, caller
from batchyard.web.problems import responses
from batchyard.web.webhooks import delivery_metrics
from batchyard.yard import Yard

router = APIRouter(tags=["server"])
#: Buckets of item durations, in seconds: a no-op task to a long LLM call.
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class StoreCollector(Collector):
    """Batches and items by state, runs, tokens, cost and rate-limit waits of a store."""

    def __init__(self, yard: Yard, extra: Callable[[], Iterator[Metric]] | None = None) -> None:
        self.yard = yard
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        totals = self.yard.store.totals(time.time())
        batches = GaugeMetricFamily("batchyard_batches", "Batches by state.", labels=["state"])
        for state in BatchState:
            batches.add_metric([state.value], totals.batches.get(state.value, 0))
        items = GaugeMetricFamily("batchyard_items", "Items by state.", labels=["state"])
        for item_state in ItemState:
            items.add_metric([item_state.value], totals.items[item_state.value])
        yield batches
        yield items
        finished = sum(totals.items[s.value] for s in ItemState if s.is_terminal)
        usage = totals.usage
        for name, doc, value in (
            ("batchyard_items_recorded", "Items recorded finished.", finished),
            ("batchyard_llm_calls", "Calls billed by a provider.", usage.calls),
            (
                "batchyard_cache_hits",
                "Answers the response cache gave instead of a call.",
                usage.cache_hits,
            ),
            ("batchyard_cost", "Cost of the calls, in the price table's currency.", usage.cost),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        reruns = CounterMetricFamily(
            "batchyard_item_reruns",
            "Runs of an item after its first, by why: error (a retry), worker_lost, released "
            "(a worker stopped), retry (the batch was retried).",
            labels=["why"],
        )
        for why, count in totals.reruns.items():
            reruns.add_metric([why], count)
        yield reruns
        tokens = CounterMetricFamily("batchyard_tokens", "Tokens used, by kind.", labels=["kind"])
        for kind in ("in", "out", "cached", "reasoning"):
            tokens.add_metric([kind], getattr(usage, f"tokens_{kind}"))
        yield tokens
        yield GaugeMetricFamily(
            "batchyard_items_waiting_for_rate_limit",
            "Items held by workers that wait for a rate limiter.",
            value=totals.waiting,
        )
        if self.extra is not None:
            yield from self.extra()


class ServerMetrics:
    """The registry of one app: the store's figures and the server's own."""

    def __init__(self, yard: Yard, streams: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.yard = yard
        self.streams = streams
        self.registry.register(StoreCollector(yard, self._server))
        self.durations = Histogram(
            "batchyard_item_duration_seconds",
            "Durations of finished attempts, as the live feed reported them.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def _server(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "batchyard_open_streams", "Live streams open.", value=self.streams()
        )
        yield from delivery_metrics(self.yard)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}
}


@router.get(
    "/metrics",
    response_class=Response,
    responses=_TEXT | responses(401, 503),
)
def metrics(request: Request, _: Caller = Depends(caller)) -> Response:
    """The Prometheus metrics (any token; ``--metrics-port`` serves them without one)."""
    registry: ServerMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
