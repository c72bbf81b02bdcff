"""What an llm batch will cost and how long it will take, before a single call.

- **Input tokens** are counted item by item from the rendered prompts: exactly for models
  whose tokenizer ships with batchyard (OpenAI's o200k_base and cl100k_base), otherwise by
  the documented estimate of ``batchyard.llm.tokens`` (about 4 characters a token), which
  then widens the range by 15% each way.
- **Output tokens** come from earlier answers of the same model and template (the history:
  any batch of the store, a pilot included), as their mean with a range of two standard
  errors of the total each way. A template version (``submit --template``) with no history
  of its own is estimated from the nearest earlier version that has one. With no history
  the range is 0 to max_tokens per call and the expectation half of max_tokens: say
  ``--pilot N`` to run N items first (spread over the input; they cost what they cost,
  and their answers are cached, so the run reuses them).
- **Items the response cache already answers** cost nothing and are counted apart.
- **Duration** is the longest of: calls at the request rate, tokens at the token rate (each
  as the shared limiter admits them) and calls at the given concurrency at the mean
  latency seen (2 s when nothing was seen).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from batchyard.batch import remaining_payloads
from batchyard.errors import ConfigError
from batchyard.llm.params import LlmParams, read_params
from batchyard.llm.prices import Price
from batchyard.llm.prompts import RenderError
from batchyard.llm.tokens import count_message_tokens
from batchyard.models import JSON, TemplateRef
from batchyard.ratelimit import window_safe
from batchyard.states import ItemState
from batchyard.store.base import Store
from batchyard.tasks import Pilot

#: Answers of earlier batches read for the history, at most.
HISTORY_SAMPLES = 2000
#: The latency assumed when no answer was seen (seconds).
DEFAULT_LATENCY = 2.0
NO_HISTORY = "no earlier answers (half of max_tokens expected; --pilot N measures them)"
#: How far an estimated (not exactly counted) input may be off, each way.
INPUT_SLACK = 0.15


@dataclass(frozen=True, slots=True)
class Samples:
    """Answers seen before: their output tokens and latencies, and where they came from."""

    tokens: list[int]
    latencies: list[float]
    source: str


@dataclass(frozen=True, slots=True)
class Estimate:
    """The expected cost, tokens and duration of the calls ``items`` will make."""

    model: str
    items: int
    cached: int
    input_tokens: int
    input_exact: bool
    output_tokens: float
    output_low: float
    output_high: float
    output_source: str
    price: Price | None
    cost: float | None
    cost_low: float | None
    cost_high: float | None
    duration: float
    bound_by: str

    @property
    def calls(self) -> int:
        return self.items - self.cached

    def as_dict(self) -> dict[str, JSON]:
        """The shape ``batchyard estimate --json`` prints."""
        price = self.price
        return {
            "model": self.model,
            "items": self.items,
            "cached": self.cached,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "input_exact": self.input_exact,
            "output_tokens": round(self.output_tokens),
            "output_tokens_range": [round(self.output_low), round(self.output_high)],
            "output_source": self.output_source,
            "price": None
            if price is None
            else {
                "input": price.input,
                "output": price.output,
                "cached_input": price.cached_input,
                "source": price.source,
            },
            "cost": self.cost,
            "cost_range": None if self.cost is None else [self.cost_low, self.cost_high],
            "duration_seconds": round(self.duration, 1),
            "bound_by": self.bound_by,
        }


def estimate(
    store: Store,
    params: dict[str, JSON],
    items: Iterable[Any],
    *,
    concurrency: int = 16,
    samples: Samples | None = None,
    template: TemplateRef | None = None,
) -> Estimate:
    """Estimate the llm calls of ``items`` under ``params`` (a batch's parameters), using
    the store's history of the same model and template unless ``samples`` are given; with
    no such history, that of the nearest earlier version of ``template``."""
    llm = read_params(params)
    if samples is None:
        samples = history(store, llm)
        if not samples.tokens and template is not None:
            samples = earlier_versions(store, template) or samples
    counted = _count_inputs(store, llm, items)
    return _estimate(llm, counted, samples, concurrency)


def estimate_task(
    store: Store,
    params: dict[str, JSON],
    items: Iterable[Any],
    *,
    concurrency: int,
    pilot: Pilot | None,
    template: TemplateRef | None = None,
) -> Estimate:
    """The llm task's estimate (its ``TaskSpec.estimate``). With a ``pilot``, its items are
    picked evenly over ``items`` and answered first; their answer lengths and latencies then
    stand in for the history. Raises ConfigError when the pilot got no answer."""
    samples = None
    if pilot is not None:
        rows = list(items)
        batch_id = pilot.run(spread(rows, pilot.size))
        samples = _pilot_answers(store, batch_id)
        items = rows
    return estimate(
        store, params, items, concurrency=concurrency, samples=samples, template=template
    )


def earlier_versions(store: Store, template: TemplateRef) -> Samples | None:
    """The answers of the nearest version before ``template`` that has any, or None."""
    version = template.version or 1
    for earlier in range(version - 1, 0, -1):
        found = _samples(store, store.template_batches(template.name, earlier))
        if found.tokens:
            where = f"{template.name}@{earlier}, the version before"
            return Samples(found.tokens, found.latencies, f"{found.source} of {where}")
    return None


def _samples(store: Store, batch_ids: Iterable[str]) -> Samples:
    tokens, latencies, batches = _collect(store, batch_ids)
    return Samples(tokens, latencies, _answers(len(tokens), batches))


def _collect(store: Store, batch_ids: Iterable[str]) -> tuple[list[int], list[float], int]:
    """Output tokens and latencies of the answers (not cache hits) of ``batch_ids`` in
    order, up to HISTORY_SAMPLES, and how many batches were read."""
    tokens: list[int] = []
    latencies: list[float] = []
    batches = 0
    for batch_id in batch_ids:
        batches += 1
        for item in _answered(store, batch_id):
            tokens.append(item.usage.tokens_out)
            if "latency" in item.metrics:
                latencies.append(item.metrics["latency"])
            if len(tokens) >= HISTORY_SAMPLES:
                return tokens, latencies, batches
    return tokens, latencies, batches


def _answers(count: int, batches: int) -> str:
    return f"{count} earlier answers ({batches} batch{'es' * (batches != 1)})"


def _pilot_answers(store: Store, batch_id: str) -> Samples:
    samples = pilot_samples(store, batch_id)
    if not samples.tokens:
        failed = store.items(batch_id, state=ItemState.FAILED, limit=1)
        why = f": {failed[0].error}" if failed else ""
        raise ConfigError(f"the pilot batch {batch_id} got no answer{why}")
    return samples


@dataclass(frozen=True, slots=True)
class _Inputs:
    items: int
    cached: int
    tokens: int
    exact: bool
    #: Prompt tokens of each call to make (cached items excluded).
    per_call: list[int]


def _count_inputs(store: Store, llm: LlmParams, items: Iterable[Any]) -> _Inputs:
    total = cached = 0
    exact = True
    per_call: list[int] = []
    for item in items:
        total += 1
        try:
            messages = llm.prompt.render(item)
        except RenderError as exc:
            raise RenderError(exc.reason, missing=exc.missing, position=total) from None
        if llm.cache and store.cache_get(llm.cache_key(llm.body(messages))) is not None:
            cached += 1
            continue
        count = count_message_tokens(messages, llm.model)
        exact = exact and count.exact
        per_call.append(count.tokens)
    return _Inputs(total, cached, sum(per_call), exact, per_call)


def _estimate(llm: LlmParams, inputs: _Inputs, samples: Samples, concurrency: int) -> Estimate:
    calls = len(inputs.per_call)
    out, low, high = _output_range(samples.tokens, calls, llm.max_tokens)
    price = llm.price
    slack = 0.0 if inputs.exact else INPUT_SLACK
    cost = cost_low = cost_high = None
    if price is not None:
        cost = _cost(price, inputs.tokens, out)
        cost_low = _cost(price, inputs.tokens * (1 - slack), low)
        cost_high = _cost(price, inputs.tokens * (1 + slack), high)
    duration, bound_by = _duration(llm, inputs, out, samples.latencies, concurrency)
    source = samples.source if samples.tokens else NO_HISTORY
    return Estimate(
        model=llm.model,
        items=inputs.items,
        cached=inputs.cached,
        input_tokens=inputs.tokens,
        input_exact=inputs.exact,
        output_tokens=out,
        output_low=low,
        output_high=high,
        output_source=source,
        price=price,
        cost=cost,
        cost_low=cost_low,
        cost_high=cost_high,
        duration=duration,
        bound_by=bound_by,
    )


def _output_range(tokens: list[int], calls: int, max_tokens: int) -> tuple[float, float, float]:
    """Expected output tokens of ``calls`` calls and a range of two standard errors of the
    total: the uncertainty of the mean seen (``s / sqrt(k)`` per call, for every call) and
    the spread of the calls themselves (``s * sqrt(calls)``). An answer seen longer than
    ``max_tokens`` (history of a version with a higher cap) counts as cut at it."""
    if not calls:
        return 0.0, 0.0, 0.0
    if not tokens:
        return calls * max_tokens / 2, 0.0, float(calls * max_tokens)
    tokens = [min(seen, max_tokens) for seen in tokens]
    mean = statistics.fmean(tokens)
    spread = statistics.stdev(tokens) if len(tokens) > 1 else mean / 2
    error = math.sqrt(calls**2 * spread**2 / len(tokens) + calls * spread**2)
    expected = calls * mean
    return expected, max(0.0, expected - 2 * error), min(calls * max_tokens, expected + 2 * error)


def _cost(price: Price, input_tokens: float, output_tokens: float) -> float:
    return price.cost(round(input_tokens), round(output_tokens))


def _duration(
    llm: LlmParams, inputs: _Inputs, output: float, latencies: list[float], concurrency: int
) -> tuple[float, str]:
    calls = len(inputs.per_call)
    latency = statistics.fmean(latencies) if latencies else DEFAULT_LATENCY
    lanes = min(concurrency, llm.concurrency or concurrency)
    bounds = {"concurrency and latency": math.ceil(calls / max(lanes, 1)) * latency}
    requests = window_safe(llm.rpm)
    if requests is not None:
        bounds["requests per minute"] = calls * requests.per / requests.amount
    tokens = window_safe(llm.tpm)
    if tokens is not None:
        per_call = llm.max_tokens * calls if llm.tpm_counts == "max_tokens" else output
        bounds["tokens per minute"] = (inputs.tokens + per_call) * tokens.per / tokens.amount
    bound_by = max(bounds, key=lambda name: bounds[name])
    return bounds[bound_by], bound_by


def history(store: Store, llm: LlmParams) -> Samples:
    """Output tokens and latencies of earlier answers (not cache hits) of the same model and
    template, newest batches first, up to HISTORY_SAMPLES."""
    tokens, latencies, batches = _collect(store, _same_batches(store, llm))
    source = f"{len(tokens)} earlier answers of {llm.model} with this template"
    return Samples(tokens, latencies, f"{source} ({batches} batch{'es' * (batches != 1)})")


def _same_batches(store: Store, llm: LlmParams) -> Iterator[str]:
    after = None
    while True:
        page = store.list_batches(task="llm", limit=100, after=after)
        for status in page.rows:
            try:
                other = read_params(status.params)
            except Exception:  # an old batch whose parameters no longer read: not the same
                continue
            if other.model == llm.model and other.prompt.version == llm.prompt.version:
                yield status.id
        if page.next is None:
            return
        after = page.next


def _answered(store: Store, batch_id: str) -> Iterator[Any]:
    after = 0
    while page := store.items(batch_id, state=ItemState.SUCCEEDED, after=after, limit=1000):
        for item in page:
            if item.usage.calls:
                yield item
        after = page[-1].position


#: The payloads of a batch's items still to do (its old name, kept for callers).
remaining_items = remaining_payloads


def spread(items: list[Any], n: int) -> list[Any]:
    """``n`` items spread evenly over ``items`` (all of them if there are fewer)."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def pilot_samples(store: Store, batch_id: str) -> Samples:
    """The answers of a pilot batch, as samples."""
    answered = list(_answered(store, batch_id))
    tokens = [item.usage.tokens_out for item in answered]
    latencies = [item.metrics["latency"] for item in answered if "latency" in item.metrics]
    return Samples(tokens, latencies, f"a pilot of {len(tokens)} answers (batch {batch_id})")
