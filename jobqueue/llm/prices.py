"""What a model's tokens cost: the price table (USD per 1M tokens) and the arithmetic.

    [prices."gpt-4.1-mini"]
    input = 0.40          # per 1M prompt tokens
    cached_input = 0.10   # per 1M prompt tokens the provider served from its prompt cache
    output = 1.60         # per 1M completion tokens
    batch_discount = 0.5  # share taken off through the provider's Batch API

DEFAULTS are OpenAI's public list prices (standard tier) as of PRICES_AS_OF; a `[prices]`
table in jobqueue.toml replaces a model's entry or adds one. A model with no price has no cost:
every function answers None for it, never a guessed number. A dated model name the provider
reports (`gpt-4o-2024-08-06`) is priced as its base name when it has no entry of its own.

This module imports neither openai nor the database: the CLI (`batch submit --dry-run`) and
the web app use it too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobqueue import config
from jobqueue.errors import ConfigError

PRICES_AS_OF = "2025-06"


@dataclass(frozen=True)
class Price:
    input: float  # USD per 1M prompt tokens
    output: float = 0.0  # USD per 1M completion tokens (embeddings: none)
    cached_input: float | None = None  # default: the input price
    batch_discount: float = 0.5  # Batch API: half price at OpenAI

    def cost(self, prompt_tokens: int, completion_tokens: int = 0, cached_tokens: int = 0,
             batch_api: bool = False) -> float:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        usd = ((prompt_tokens - cached) * self.input + cached * cached_price
               + completion_tokens * self.output) / 1_000_000
        if batch_api:
            usd *= 1 - self.batch_discount
        return round(usd, 10)


DEFAULTS: dict[str, Price] = {
    "gpt-4o": Price(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4o-mini": Price(input=0.15, cached_input=0.075, output=0.60),
    "gpt-4.1": Price(input=2.00, cached_input=0.50, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, cached_input=0.025, output=0.40),
    "o3": Price(input=2.00, cached_input=0.50, output=8.00),
    "o3-mini": Price(input=1.10, cached_input=0.55, output=4.40),
    "o4-mini": Price(input=1.10, cached_input=0.275, output=4.40),
    "text-embedding-3-small": Price(input=0.02),
    "text-embedding-3-large": Price(input=0.13),
    "text-embedding-ada-002": Price(input=0.10),
}

_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_FIELDS = {"input", "cached_input", "output", "batch_discount"}


class PriceTable:
    """The prices in force: DEFAULTS overlaid with the config's `[prices."MODEL"]` tables."""

    def __init__(self, overrides: dict[str, Price] | None = None, defaults: bool = True):
        self.prices = (dict(DEFAULTS) if defaults else {}) | (overrides or {})

    def price(self, model: str | None) -> Price | None:
        if not model:
            return None
        found = self.prices.get(model)
        if found is None:
            found = self.prices.get(_DATED.sub("", model))
        return found

    def cost(self, model: str | None, prompt_tokens: int | None,
             completion_tokens: int | None = 0, cached_tokens: int | None = 0,
             batch_api: bool = False) -> float | None:
        """USD for one call's usage; None when the model has no price or usage is unknown."""
        price = self.price(model)
        if price is None or prompt_tokens is None:
            return None
        return price.cost(prompt_tokens, completion_tokens or 0, cached_tokens or 0,
                          batch_api)


def parse(data: dict[str, Any], source: str = "config") -> PriceTable:
    table = data.get("prices", {})
    if not isinstance(table, dict):
        raise ConfigError(f'{source}: prices: must be a table of [prices."MODEL"] tables')
    overrides = {}
    for model, entry in table.items():
        where = f"{source}: prices.{model}"
        if not isinstance(entry, dict):
            raise ConfigError(f'{where}: must be a table ([prices."{model}"] with input = ...)')
        unknown = set(entry) - _FIELDS
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field (known: "
                              f"{', '.join(sorted(_FIELDS))})")
        if "input" not in entry:
            raise ConfigError(f"{where}.input: required (USD per 1M prompt tokens)")
        values = {}
        for name, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where}.{name}: must be a number of USD >= 0, "
                                  f"got {value!r}")
            values[name] = float(value)
        if not values.get("batch_discount", 0.5) <= 1:
            raise ConfigError(f"{where}.batch_discount: a share from 0 to 1, "
                              f"got {values['batch_discount']!r}")
        overrides[model] = Price(**values)
    return PriceTable(overrides)


def load(path: Path | str | None = None) -> PriceTable:
    """The price table of the config file (the defaults alone when there is no file)."""
    return config.load(parse, path, missing_ok=not config.explicitly_configured())


@dataclass(frozen=True)
class Estimate:
    """What a set of calls will cost before it runs: prompt tokens estimated as characters / 4
    (the limiter's estimate), output counted at each request's max_tokens (an upper bound)."""

    calls: int
    prompt_tokens: int
    max_output_tokens: int
    cost_usd: float | None  # None: some model has no price (see unpriced)
    batch_api_cost_usd: float | None
    unpriced: tuple[str, ...]  # models with no price
    seconds: float  # at the platform's configured limits, all keys together
    bound_by: str  # "requests" or "tokens": which limit sets the time

    def as_dict(self) -> dict:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "max_output_tokens": self.max_output_tokens,
                "cost_usd": self.cost_usd, "batch_api_cost_usd": self.batch_api_cost_usd,
                "unpriced_models": list(self.unpriced), "seconds": round(self.seconds, 1),
                "bound_by": self.bound_by}


def estimate(requests, rpm: int, tpm: int, keys: int, table: PriceTable) -> Estimate:
    """The estimate of chat `requests` ({model, messages, max_tokens}) on a platform whose
    keys allow `rpm` and `tpm` each."""
    from jobqueue.llm.ratelimit import estimate_tokens

    calls = prompt = output = 0
    usd = batch_usd = 0.0
    unpriced: set[str] = set()
    for request in requests:
        out = request["max_tokens"]
        tokens_in = estimate_tokens(request["messages"], out) - out
        calls += 1
        prompt += tokens_in
        output += out
        price = table.price(request["model"])
        if price is None:
            unpriced.add(request["model"])
            continue
        usd += price.cost(tokens_in, out)
        batch_usd += price.cost(tokens_in, out, batch_api=True)
    by_requests = calls / (rpm * keys) * 60
    by_tokens = (prompt + output) / (tpm * keys) * 60
    return Estimate(calls, prompt, output, None if unpriced else round(usd, 6),
                    None if unpriced else round(batch_usd, 6), tuple(sorted(unpriced)),
                    max(by_requests, by_tokens),
                    "requests" if by_requests >= by_tokens else "tokens")
