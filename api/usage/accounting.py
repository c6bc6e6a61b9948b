"""What a call cost: money from the router's prices, energy and emissions from ecologits."""

from __future__ import annotations

from dataclasses import dataclass

from ecologits.electricity_mix_repository import electricity_mixes
from ecologits.impacts.llm import compute_llm_impacts
from ecologits.utils.range_value import RangeValue

# Generic datacenter efficiency bounds (ecologits' providers range over these).
_PUE = RangeValue(min=1.09, max=1.2)
_WUE = RangeValue(min=0.09, max=0.999)


@dataclass(frozen=True)
class Carbon:
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


def carbon_footprint(
    total_params_billions: int, active_params_billions: int, completion_tokens: int, zone: str, latency_seconds: float
) -> Carbon:
    """ecologits' estimate for one generation. Output tokens are the completion tokens only
    (the prompt is not generated), and zero when the model's size is unknown."""
    if completion_tokens <= 0 or (total_params_billions <= 0 and active_params_billions <= 0):
        return NO_CARBON
    total = total_params_billions or active_params_billions
    active = active_params_billions or total_params_billions
    mix = electricity_mixes.find_electricity_mix(zone=zone) or electricity_mixes.find_electricity_mix(zone="WOR")
    assert mix is not None
    impacts = compute_llm_impacts(
        model_active_parameter_count=active,
        model_total_parameter_count=total,
        output_token_count=completion_tokens,
        if_electricity_mix_adpe=mix.adpe,
        if_electricity_mix_pe=mix.pe,
        if_electricity_mix_gwp=mix.gwp,
        if_electricity_mix_wue=mix.wue,
        datacenter_pue=_PUE,
        datacenter_wue=_WUE,
        request_latency=max(latency_seconds, 1e-3),
    )
    kwh_min, kwh_max = _bounds(impacts.energy.value)
    kg_min, kg_max = _bounds(impacts.gwp.value)
    return Carbon(kwh_min, kwh_max, kg_min, kg_max)
