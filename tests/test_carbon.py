"""The per-call carbon figure equals ecologits' own estimate, whatever the model, zone and timing."""

from __future__ import annotations

import math

import pytest

from api.usage.accounting import carbon_footprint, ecologits_footprint

MODELS = [(8, 8, "FRA"), (70, 70, "USA"), (1, 1, "WOR"), (400, 17, "SWE"), (1000, 1000, "no-such-zone")]


@pytest.mark.parametrize(("total", "active", "zone"), MODELS)
@pytest.mark.parametrize("tokens", [1, 7, 250, 4000])
@pytest.mark.parametrize("latency", [0.0005, 0.05, 1.0, 30.0, 1000.0])
def test_footprint_equals_ecologits(total: int, active: int, zone: str, tokens: int, latency: float) -> None:
    ours = carbon_footprint(total, active, tokens, zone, latency)._asdict()
    theirs = ecologits_footprint(total, active, tokens, zone, max(latency, 1e-3))._asdict()
    assert ours.keys() == theirs.keys()
    for field, value in ours.items():
        assert value > 0 and math.isclose(value, theirs[field], rel_tol=1e-6), field


def test_a_slower_call_of_the_same_length_costs_more_until_the_model_speed() -> None:
    fast, slow, slower = (carbon_footprint(8, 8, 100, "FRA", s).kwh_max for s in (0.01, 1.0, 10_000.0))
    assert fast < slow < slower
    assert slower == carbon_footprint(8, 8, 100, "FRA", 20_000.0).kwh_max  # capped at ecologits' generation time
