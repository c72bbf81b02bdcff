"""The built-in ``llm`` task: one chat completion per item from any OpenAI-compatible
endpoint, within rate limits and a budget shared by every worker of the store.

For each item: render the prompt (a missing field fails the item, it is never sent); answer
from the response cache if an identical request was answered before; else hold the call's
worst-case cost on the batch's budget (pausing the batch when it does not fit), wait for the
limiter key (provider + model + key) to admit the call with its prompt and max_tokens, call,
and record tokens, cost and latency. A 429 pauses the whole key for what the provider said
and the call tries again in the same attempt; exhausted quotas pause the batch; 400, 401,
403, 404 and 422 fail the item at once; other errors are retried with backoff.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson

from batchyard import ratelimit
from batchyard.context import TaskContext
from batchyard.errors import ConfigError, Fail, PauseBatch, Retry
from batchyard.llm.client import ChatClient, ChatResult, ProviderError
from batchyard.llm.estimate import estimate_task
from batchyard.llm.headers import next_free_in, pause_for
from batchyard.llm.params import LlmParams, read_params
from batchyard.llm.prices import Price
from batchyard.llm.prompts import RenderError, validate_rows
from batchyard.llm.schema import options_schema
from batchyard.llm.tokens import count_message_tokens, most_tokens
from batchyard.models import JSON, BatchOptions
from batchyard.ratelimit import SharedLimiter
from batchyard.tasks import task
from batchyard.validation import Validation

#: 429s one attempt rides out (each after the pause the provider asked for) before it gives
#: the item back to the retry schedule.
RATE_LIMIT_RETRIES = 8
#: The pause of a limiter key after a 429 that says nothing of when to come back.
DEFAULT_PAUSE = 2.0
#: What the response cache keeps of a result (not latency: a reused answer has none).
_RESULT_FIELDS = ("answer", "model", "finish_reason", "usage", "cost")

_params: dict[str, LlmParams] = {}
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ChatClient]] = (
    weakref.WeakKeyDictionary()
)


def prepare(options: BatchOptions, will_call: bool = True) -> BatchOptions:
    """Check an llm batch before it is created: its parameters, that its API key is set
    here (when calls will be made), and that its model has a price when it has a budget.
    The batch's rate limits (``--rate-limit``, ``--tokens-per-minute``) become its
    ``rpm`` and ``tpm``."""
    limits = options.limits or {}
    raw = dict(options.params)
    if "rate_limit" in limits:
        raw["rpm"] = limits["rate_limit"]
    if "tokens_per_minute" in limits:
        raw["tpm"] = limits["tokens_per_minute"]
    params = read_params(raw)
    if will_call:
        params.api_key()
    for label, value in (("rpm", params.rpm), ("tpm", params.tpm)):
        try:
            ratelimit.parse_rate(value)
        except ConfigError as exc:
            raise ConfigError(f"--param {label}: {exc}") from None
    if options.budget is not None and params.price is None:
        raise ConfigError(
            f"a budget needs the price of {params.model}, which the price table does not "
            f'list; give it with --param prices=\'{{"{params.model}": '
            f'{{"input": 0.5, "output": 1.5}}}}\' (per million tokens)'
        )
    return replace(options, params=raw)


def check_rows(params: dict[str, JSON], rows: Iterable[tuple[int, Any]]) -> Validation:
    """Render the batch's prompt over every ``(line, item)`` row, before any call (its
    ``TaskSpec.validate_rows``). Raises ConfigError for parameters it cannot read."""
    return validate_rows(read_params(params).prompt, rows)


@task(
    name="llm",
    max_attempts=5,
    retry_backoff=2.0,
    retry_backoff_max=120.0,
    manages_limits=True,
    prepare=prepare,
    validate_rows=check_rows,
    estimate=estimate_task,
    options_schema=options_schema,
)
async def llm(item: Any, ctx: TaskContext) -> dict[str, Any]:
    params = _params_of(ctx)
    try:
        messages = params.prompt.render(item)
    except RenderError as exc:  # the same item renders the same way every time
        raise Fail(exc.reason) from None
    body = params.body(messages)
    cache_key = params.cache_key(body) if params.cache else None
    if cache_key is not None:
        cached = await asyncio.to_thread(ctx.services.cache_get, cache_key)
        if cached is not None:
            return _from_cache(ctx, orjson.loads(cached))
    price = params.price
    counted = count_message_tokens(messages, params.model)
    prompt_tokens = counted.tokens
    # A budget must hold whatever the provider counts: without the model's tokenizer, hold
    # for the most tokens the prompt could be (one per UTF-8 byte).
    worst_prompt = prompt_tokens if counted.exact else most_tokens(messages)
    await _hold_budget(ctx, price, worst_prompt, params.max_tokens)
    result = await _call(ctx, params, body, prompt_tokens)
    # No price: the cost is unknown (None), counted as an unpriced call, never as $0.
    cost = (
        None
        if price is None
        else price.cost(result.prompt_tokens, result.completion_tokens, result.cached_tokens)
    )
    ctx.usage(
        result.prompt_tokens,
        result.completion_tokens,
        cost or 0.0,
        tokens_cached=result.cached_tokens,
        tokens_reasoning=result.reasoning_tokens,
        calls=1,
        unpriced_calls=int(price is None),
    )
    ctx.metric("latency", result.latency)
    answer = _answer(ctx, params, result)
    record = {
        "answer": answer,
        "model": result.model,
        "finish_reason": result.finish_reason,
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "cached_tokens": result.cached_tokens,
            "reasoning_tokens": result.reasoning_tokens,
        },
        "cost": cost,
        "latency": round(result.latency, 4),
        "cached": False,
    }
    if cache_key is not None:
        value = orjson.dumps({name: record[name] for name in _RESULT_FIELDS}).decode()
        await asyncio.to_thread(ctx.services.cache_put, cache_key, value)
    return record


llm.__doc__ = __doc__


def _params_of(ctx: TaskContext) -> LlmParams:
    """The batch's parameters, read once per batch and process."""
    params = _params.get(ctx.batch_id)
    if params is None:
        try:
            params = read_params(ctx.params)
        except ConfigError as exc:
            raise Fail(str(exc)) from None
        _params[ctx.batch_id] = params
    return params


def _from_cache(ctx: TaskContext, cached: dict[str, Any]) -> dict[str, Any]:
    ctx.usage(cache_hits=1, saved_cost=float(cached.get("cost") or 0.0))
    return {**cached, "cost": 0.0, "saved_cost": cached.get("cost") or 0.0, "cached": True}


async def _hold_budget(
    ctx: TaskContext, price: Price | None, prompt_tokens: int, max_tokens: int
) -> None:
    """Reserve the call's worst case (its prompt, and an answer of max_tokens) on the
    batch's budget; pause the batch when it does not fit."""
    if price is None:
        return
    worst = price.cost(prompt_tokens, max_tokens)
    check = await asyncio.to_thread(ctx.services.hold_budget, worst)
    if not check.granted:
        raise PauseBatch(
            f"budget reached: {check.budget:.4f} allowed, {check.spent:.4f} spent, "
            f"{check.held:.4f} held by calls in flight, the next call may cost up to "
            f"{worst:.4f}; raise it with: batchyard resume {ctx.batch_id} --budget AMOUNT"
        )


async def _call(
    ctx: TaskContext, params: LlmParams, body: dict[str, Any], prompt_tokens: int
) -> ChatResult:
    """One call through the key's shared limiter; 429s pause the whole key and the call
    tries again, up to RATE_LIMIT_RETRIES times within this attempt."""
    try:
        api_key = params.api_key()
    except ConfigError as exc:
        raise PauseBatch(str(exc)) from None
    limiter = _limiter(ctx, params, api_key)
    client = _client(params.base_url, api_key)
    reserve = prompt_tokens + params.max_tokens
    for _ in range(RATE_LIMIT_RETRIES):
        async with limiter.slot(reserve) as slot:
            try:
                result = await client.complete(body)
            except ProviderError as exc:
                if exc.kind != "rate_limited":
                    raise _signal(exc) from None
                seconds = pause_for(exc.rate) if exc.rate else None
                await limiter.pause(seconds or DEFAULT_PAUSE, exc.message)
                ctx.log(f"rate limited, the key pauses {seconds or DEFAULT_PAUSE:.1f}s: {exc}")
                continue
            used = result.prompt_tokens + (
                params.max_tokens if params.tpm_counts == "max_tokens" else result.completion_tokens
            )
            slot.settle(used)
        wait = next_free_in(result.rate)
        if wait:
            await limiter.pause(wait, "the provider says the limit is used up")
        return result
    raise Retry(after=DEFAULT_PAUSE, reason=f"rate limited {RATE_LIMIT_RETRIES} times in a row")


def _signal(exc: ProviderError) -> Exception:
    """What a provider's error does to the item: quota pauses the batch, a request the
    provider refuses fails the item now, anything else is retried with backoff."""
    if exc.kind == "quota":
        return PauseBatch(f"the provider refused for quota or billing: {exc.message}")
    if exc.kind == "fatal":
        return Fail(exc.message)
    return exc


def _limiter(ctx: TaskContext, params: LlmParams, api_key: str | None) -> SharedLimiter:
    # Batch limits (--rate-limit, --tokens-per-minute) and --param rpm/tpm say the same.
    return ctx.services.limiter(
        params.limiter_key(api_key),
        rpm=ratelimit.window_safe(params.rpm),
        tpm=ratelimit.window_safe(params.tpm),
        concurrency=params.concurrency,
    )


def _client(base_url: str, api_key: str | None) -> ChatClient:
    """One HTTP client (and its connection pool) per event loop, endpoint and key."""
    loop = asyncio.get_running_loop()
    clients = _clients.setdefault(loop, {})
    key = f"{base_url}\n{hash(api_key)}"
    client = clients.get(key)
    if client is None:
        client = clients[key] = ChatClient(base_url, api_key)
    return client


def _answer(ctx: TaskContext, params: LlmParams, result: ChatResult) -> Any:
    if not params.json_mode:
        return result.content
    try:
        return orjson.loads(_unfence(result.content))
    except orjson.JSONDecodeError as exc:
        ctx.log(result.content, kind="answer")
        raise Fail(
            f"the answer is not valid JSON ({exc}); the raw answer is in this item's log: "
            f"{result.content[:200]!r}"
        ) from None


def _unfence(text: str) -> str:
    """An answer wrapped in a Markdown code fence, unwrapped."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        first, _, rest = stripped.partition("\n")
        return rest if first.strip().isalpha() or not first.strip() else stripped
    return stripped
