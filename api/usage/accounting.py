"""What a call cost: money from the router's prices, energy and emissions from ecologits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple
from functools import lru_cache
from itertools import repeat
from operator import add, mul

from ecologits.electricity_mix_repository import electricity_mixes
from ecologits.impacts.llm import compute_llm_impacts
from ecologits.utils.range_value import RangeValue

# Generic datacenter efficiency bounds (ecologits' providers range over these).
_PUE = RangeValue(min=1.09, max=1.2)
_WUE = RangeValue(min=0.09, max=0.999)


class Carbon(NamedTuple):
    kwh_min: float = 0.0
    kwh_max: float = 0.0
    kgco2eq_min: float = 0.0
    kgco2eq_max: float = 0.0

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {"kWh": {"min": self.kwh_min, "max": self.kwh_max}, "kgCO2eq": {"min": self.kgco2eq_min, "max": self.kgco2eq_max}}


NO_CARBON = Carbon()


def cost_nanos(prompt_tokens: int, completion_tokens: int, prompt_price_micros: int, completion_price_micros: int) -> int:
    """Cost in billionths of a currency unit, rounded up. Prices are per million tokens, in
    millionths: tokens × micros / 10⁶ is micro-units, so tokens × micros / 10³ is nano-units."""
    return -(-(prompt_tokens * prompt_price_micros + completion_tokens * completion_price_micros) // 1000)


def _bounds(value: float | RangeValue) -> tuple[float, float]:
    if isinstance(value, RangeValue):
        return float(value.min), float(value.max)
    return float(value), float(value)


def ecologits_footprint(
    total_params_billions: float, active_params_billions: float, completion_tokens: float, zone: str, latency_seconds: float
) -> Carbon:
    """ecologits' estimate for one generation of `completion_tokens` by a model of this size
    hosted in `zone`, that took `latency_seconds` (0: no server time; inf: ecologits' model)."""
    mix = electricity_mixes.find_electricity_mix(zone=zone) or electricity_mixes.find_electricity_mix(zone="WOR")
    assert mix is not None
    impacts = compute_llm_impacts(
        model_active_parameter_count=active_params_billions,
        model_total_parameter_count=total_params_billions,
        output_token_count=completion_tokens,
        if_electricity_mix_adpe=mix.adpe,
        if_electricity_mix_pe=mix.pe,
        if_electricity_mix_gwp=mix.gwp,
        if_electricity_mix_wue=mix.wue,
        datacenter_pue=_PUE,
        datacenter_wue=_WUE,
        request_latency=latency_seconds,
    )
    kwh_min, kwh_max = _bounds(impacts.energy.value)
    kg_min, kg_max = _bounds(impacts.gwp.value)
    return Carbon(kwh_min, kwh_max, kg_min, kg_max)


@dataclass(frozen=True)
class LinearFootprint:
    """ecologits' estimate for one model and zone, as the straight lines it is made of.

    Its energy and emissions are a per-token GPU part plus a part proportional to the
    generation time, and the generation time is min(measured latency, tokens × the model's
    time per token). Reading the coefficients off ecologits once per model replaces a
    dependency-graph evaluation (~0.1 ms) per call by a few multiplications; a test holds the
    result equal to ecologits' own.
    """

    per_token: tuple[float, float, float, float]
    per_second: tuple[float, float, float, float]
    seconds_per_token: float

    @classmethod
    def of(cls, total_params_billions: float, active_params_billions: float, zone: str) -> LinearFootprint:
        def read(tokens: float, latency: float) -> tuple[float, float, float, float]:
            carbon = ecologits_footprint(total_params_billions, active_params_billions, tokens, zone, latency)
            return carbon.kwh_min, carbon.kwh_max, carbon.kgco2eq_min, carbon.kgco2eq_max

        per_token = read(1, 0.0)  # no generation time: the GPU part alone
        # A million tokens take far longer than one second on any model, so one second is used.
        one_second = read(1_000_000, 1.0)
        per_second = tuple(s - 1_000_000 * t for s, t in zip(one_second, per_token, strict=True))
        unbounded = read(1, math.inf)  # one token, at the model's own speed
        seconds_per_token = (unbounded[1] - per_token[1]) / per_second[1] if per_second[1] > 0 else 0.0
        return cls(per_token, per_second, seconds_per_token)  # type: ignore[arg-type]

    def footprint(self, completion_tokens: int, latency_seconds: float) -> Carbon:
        seconds = min(latency_seconds, completion_tokens * self.seconds_per_token)
        # Every call: the maps run in C, a generator would run in Python.
        return Carbon(*map(add, map(mul, self.per_token, repeat(completion_tokens)), map(mul, self.per_second, repeat(seconds))))


_linear_footprint = lru_cache(maxsize=4096)(LinearFootprint.of)


def carbon_footprint(
    total_params_billions: float, active_params_billions: float, completion_tokens: int, zone: str, latency_seconds: float
) -> Carbon:
    """ecologits' estimate for one generation. Output tokens are the completion tokens only
    (the prompt is not generated), and zero when the model's size is unknown."""
    if completion_tokens <= 0 or (total_params_billions <= 0 and active_params_billions <= 0):
        return NO_CARBON
    total = total_params_billions or active_params_billions
    active = active_params_billions or total_params_billions
    return _linear_footprint(total, active, zone).footprint(completion_tokens, max(latency_seconds, 1e-3))
