"""What a model's tokens cost: the user's overrides first, then genai-prices' offline table.

Prices are USD per 1,000,000 tokens. genai-prices (pydantic's price table, bundled as a snapshot,
no network) is imported on the first lookup, because importing it takes about 0.2 s.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from batchyard.errors import ConfigError

if TYPE_CHECKING:
    from genai_prices.types import PriceCalculation

PER_TOKENS = 1_000_000
#: Tokens priced to read a per-token rate off the table: small enough to stay below the
#: long-context tiers some models charge more for (Gemini's starts at 128k or 200k tokens).
_SAMPLE_TOKENS = 1_000
_OVERRIDE_KEYS = ("input", "output", "cached_input")


@dataclass(frozen=True, slots=True, init=False)
class Price:
    """A model's price in USD per 1,000,000 tokens, and where it came from.

    ``cached_input`` (prompt tokens served from the provider's prompt cache) defaults to
    ``input``. ``source`` is ``"override"`` or ``"genai-prices <version>"``.
    """

    input: float
    output: float
    cached_input: float
    source: str

    def __init__(
        self,
        input: float,
        output: float,
        cached_input: float | None = None,
        source: str = "override",
    ) -> None:
        # NOTE: a hand-written __init__, so that the field is a plain float after defaulting.
        object.__setattr__(self, "input", input)
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "cached_input", input if cached_input is None else cached_input)
        object.__setattr__(self, "source", source)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD for one call; ``cached_tokens`` are the part of ``prompt_tokens`` read from cache."""
        fresh = prompt_tokens - cached_tokens
        total = (
            fresh * self.input + cached_tokens * self.cached_input + completion_tokens * self.output
        )
        return total / PER_TOKENS


def find_price(
    model: str,
    *,
    base_url: str | None = None,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> Price | None:
    """The price of ``model``, or ``None`` when neither the overrides nor the table know it.

    ``overrides`` (model name → ``input``, ``output``, optional ``cached_input``) win for the
    exact model name; they are checked whole, so a mistake in any entry raises
    :class:`~batchyard.errors.ConfigError`. Otherwise the table is asked for the provider at
    ``base_url`` (when it is one the table knows), then for whichever provider the model name
    matches (``openai/gpt-4o`` asks OpenAI for ``gpt-4o``).
    """
    if overrides:
        checked = parse_overrides(overrides)
        if model in checked:
            return Price(**checked[model], source="override")
    return _table_price(model, base_url)


def parse_overrides(value: str | Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Check price overrides given as a JSON object (text or already decoded).

    Returns ``{model: {"input": ..., "output": ..., "cached_input": ...?}}`` with float values.
    Raises :class:`~batchyard.errors.ConfigError` naming the model and field of the first
    mistake: not an object, an unknown or missing field, a value that is not a number >= 0.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"price overrides are not valid JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise ConfigError("price overrides must be a JSON object of model → prices")
    return {str(model): _parse_entry(str(model), entry) for model, entry in value.items()}


def _parse_entry(model: str, entry: Any) -> dict[str, float]:
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"price overrides[{model!r}] must be an object with input, output and optionally "
            f"cached_input (USD per 1M tokens)"
        )
    for key in entry:
        if key not in _OVERRIDE_KEYS:
            raise ConfigError(
                f"price overrides[{model!r}]: unknown field {key!r} "
                f"(expected {', '.join(_OVERRIDE_KEYS)})"
            )
    for key in ("input", "output"):
        if key not in entry:
            raise ConfigError(f"price overrides[{model!r}]: missing field {key!r}")
    return {key: _parse_rate(model, key, rate) for key, rate in entry.items()}


def _parse_rate(model: str, key: str, rate: Any) -> float:
    is_number = isinstance(rate, int | float) and not isinstance(rate, bool)
    if not is_number or not math.isfinite(rate) or rate < 0:
        raise ConfigError(
            f"price overrides[{model!r}][{key!r}] must be a number >= 0 (USD per 1M tokens), "
            f"not {rate!r}"
        )
    return float(rate)


@functools.lru_cache(maxsize=256)
def _table_price(model: str, base_url: str | None) -> Price | None:
    """The price genai-prices has for ``model`` today, trying each way to name its provider."""
    for where in _lookups(model, base_url):
        try:
            return _priced(where)
        except LookupError:
            continue
    return None


class _Lookup(NamedTuple):
    """One way to ask genai-prices for a model: by name, by provider id or by API URL."""

    model_ref: str
    provider_id: str | None = None
    provider_api_url: str | None = None


def _lookups(model: str, base_url: str | None) -> Iterator[_Lookup]:
    """The genai-prices lookups worth trying for ``model``, best first."""
    if base_url:
        yield _Lookup(model, provider_api_url=base_url)
    yield _Lookup(model)
    provider, slash, name = model.partition("/")
    if slash and provider and name:
        yield _Lookup(name, provider_id=provider)


def _priced(where: _Lookup) -> Price:
    """Per-1M rates read off the prices of samples of input, output and cache-read tokens.

    Raises :class:`LookupError` when the table does not know the model (or provider).
    """
    from genai_prices import Usage, __version__, calc_price  # NOTE: lazily: a 0.2 s import

    def bill(**tokens: int) -> PriceCalculation:
        usage, url = Usage(**tokens), where.provider_api_url
        if url is not None:
            return calc_price(usage, where.model_ref, provider_api_url=url)
        return calc_price(usage, where.model_ref, provider_id=where.provider_id)

    n = _SAMPLE_TOKENS
    return Price(
        input=_per_million(bill(input_tokens=n).input_price),
        output=_per_million(bill(output_tokens=n).output_price),
        cached_input=_per_million(bill(input_tokens=n, cache_read_tokens=n).input_price),
        source=f"genai-prices {__version__}",
    )


def _per_million(sample_price: Decimal) -> float:
    return float(sample_price * PER_TOKENS / _SAMPLE_TOKENS)
