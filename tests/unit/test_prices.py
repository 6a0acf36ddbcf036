"""The price table: defaults, overrides from jobqueue.toml, the arithmetic (cached input,
Batch API), unknown models (no cost, never a guess), the dry-run estimate, and any [prices]
table either parsing or failing with a ConfigError that names the field."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.errors import ConfigError, InvalidJob
from jobqueue.llm import prices
from jobqueue.llm.costs import check_budget


class TestPrices:
    def test_defaults_price_common_models_and_their_dated_names(self):
        table = prices.PriceTable()
        # 1M prompt + 1M output tokens of gpt-4.1-mini: $0.40 + $1.60
        assert table.cost("gpt-4.1-mini", 1_000_000, 1_000_000) == pytest.approx(2.0)
        assert table.cost("gpt-4o-2024-08-06", 1_000_000, 0) == pytest.approx(2.5)
        assert table.cost("text-embedding-3-small", 1_000_000) == pytest.approx(0.02)

    def test_cached_prompt_tokens_and_the_batch_api_are_cheaper(self):
        price = prices.Price(input=1.0, cached_input=0.25, output=4.0, batch_discount=0.5)
        assert price.cost(1_000_000, 0, cached_tokens=400_000) == pytest.approx(0.6 + 0.1)
        assert price.cost(1_000_000, 1_000_000, batch_api=True) == pytest.approx(2.5)
        # more cached tokens than prompt tokens cannot make a call cheaper than all-cached
        assert price.cost(10, 0, cached_tokens=99) == pytest.approx(10 * 0.25 / 1e6)

    def test_an_unknown_model_has_no_cost(self):
        table = prices.PriceTable()
        assert table.cost("mystery-model", 1000, 1000) is None
        assert table.cost(None, 1000) is None
        assert table.cost("gpt-4.1", None) is None  # usage unknown: no number either

    def test_the_config_overrides_and_adds_models(self):
        table = prices.parse({"prices": {"gpt-4.1-mini": {"input": 1, "output": 2},
                                         "local-llama": {"input": 0}}})
        assert table.cost("gpt-4.1-mini", 1_000_000, 1_000_000) == pytest.approx(3.0)
        assert table.cost("local-llama", 5000, 5000) == 0.0
        assert table.cost("gpt-4o", 1_000_000) == pytest.approx(2.5)  # defaults stay

    @pytest.mark.parametrize("table, field", [
        ({"m": {"output": 1}}, "prices.m.input"),
        ({"m": {"input": -1}}, "prices.m.input"),
        ({"m": {"input": True}}, "prices.m.input"),
        ({"m": {"input": float("nan")}}, "prices.m.input"),
        ({"m": {"input": float("inf")}}, "prices.m.input"),
        ({"m": {"input": 1, "outpt": 2}}, "prices.m.outpt"),
        ({"m": {"input": 1, "batch_discount": 2}}, "prices.m.batch_discount"),
        ({"m": 3}, "prices.m"),
    ])
    def test_bad_prices_name_the_field(self, table, field):
        with pytest.raises(ConfigError, match=f"jobqueue.toml: {field}"):
            prices.parse({"prices": table}, "jobqueue.toml")

    @given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=12))
    def test_any_prices_table_parses_or_fails_naming_it(self, value):
        try:
            table = prices.parse({"prices": value}, "f.toml")
        except ConfigError as exc:
            assert str(exc).startswith("f.toml: prices")
        else:
            for model in table.prices:
                assert table.cost(model, 1000, 1000) >= 0

    def test_estimate_counts_tokens_cost_and_time_at_the_limits(self):
        requests = [{"model": "gpt-4.1-mini", "max_tokens": 100,
                     "messages": [{"role": "user", "content": "x" * 400}]}] * 10
        e = prices.estimate(requests, rpm=60, tpm=1_000_000, keys=2, table=prices.PriceTable())
        assert (e.calls, e.prompt_tokens, e.max_output_tokens) == (10, 1000, 1000)
        assert e.cost_usd == pytest.approx((1000 * 0.40 + 1000 * 1.60) / 1e6)
        assert e.batch_api_cost_usd == pytest.approx(e.cost_usd / 2)
        assert (e.seconds, e.bound_by) == (5.0, "requests")  # 10 calls at 120 RPM
        unknown = prices.estimate([dict(requests[0], model="x")], 60, 1000, 1,
                                  prices.PriceTable())
        assert unknown.cost_usd is None and unknown.unpriced == ("x",)


class TestBudgetInput:
    @given(st.sampled_from(["owner", "batch", "campaign", "team", ""]),
           st.text(max_size=5), st.sampled_from(["day", "month", "total", "week"]),
           st.one_of(st.floats(allow_nan=True), st.integers(), st.booleans(), st.text()))
    def test_a_budget_is_checked_naming_the_field(self, scope, scope_id, period, usd):
        try:
            limit = check_budget(scope, scope_id, period, usd)
        except InvalidJob as exc:
            assert str(exc).split(":")[0] in ("scope", "id", "period", "usd")
        else:
            assert math.isfinite(limit) and limit >= 0
