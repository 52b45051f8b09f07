"""Which hourly rate prices a pool, and where it came from: pure, no AWS (the calls are in price_sources.py).

Sources, in the order a pool's on-demand instances are priced:

1. **pools-table override**: the pool's `hourly_price_usd` (contract, pools table). It prices
   every instance of the pool, spot ones too: the operator said what the pool costs.
2. **price-list**: the AWS Price List API's on-demand rate for the type in the fleet's region
   (Linux, shared tenancy), asked once a day.
3. **shipped-csv**: `prices.csv`, us-east-1 list prices (the offline fallback).
4. none: **unknown** (NaN), never 0.

A pool's spot instances (EC2 `InstanceLifecycle` = `spot`) are priced from the current
`DescribeSpotPriceHistory` rate of their type (**spot-history**; the highest among the
region's zones, an upper bound), or, with no spot price, at the pool's on-demand rate (an
upper bound too: a spot instance never costs more than on-demand).

``price_source`` names the sources that priced the pool's running instances, joined by
" + " (``price-list + spot-history`` for a mixed pool); a pool with nothing running shows
the source of its on-demand rate, the rate the report shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

OVERRIDE, PRICE_LIST, SPOT_HISTORY, SHIPPED_CSV, UNKNOWN = (
    "pools-table override", "price-list", "spot-history", "shipped-csv", "unknown")
SOURCES = (OVERRIDE, PRICE_LIST, SPOT_HISTORY, SHIPPED_CSV, UNKNOWN)


@dataclass(frozen=True)
class PoolRates:
    """The rates that price one pool, and which source gave each."""

    on_demand: float  # USD per instance-hour; NaN: unknown
    on_demand_source: str
    spot: float  # USD per instance-hour for its spot instances; NaN: no spot instance, or unknown
    spot_source: str | None  # None: the pool runs no spot instance
    source: str  # what the report's price_source column says

    def compute_cost(self, on_demand_hours: float, spot_hours: float) -> float:
        """rate × instance-hours for each kind; unknown (NaN) when hours need a rate nobody knows, 0 for no hours."""
        cost = 0.0
        for hours, rate in ((on_demand_hours, self.on_demand), (spot_hours, self.spot)):
            if hours > 0:
                if math.isnan(rate):
                    return math.nan
                cost += rate * hours
        return cost


def select_rates(
    instance_type: str | None,
    override: float | None,
    *,
    on_demand_running: int,
    spot_running: int,
    price_list: Mapping[str, float],
    spot_history: Mapping[str, float],
    shipped: Mapping[str, float],
) -> PoolRates:
    """The rates of a pool of ``instance_type`` (see the module docstring for the order of the sources)."""
    if override is not None and not math.isnan(override):
        return PoolRates(override, OVERRIDE, override if spot_running else math.nan,
                         OVERRIDE if spot_running else None, OVERRIDE)
    if instance_type in price_list:
        on_demand, od_source = price_list[instance_type], PRICE_LIST
    elif instance_type in shipped:
        on_demand, od_source = shipped[instance_type], SHIPPED_CSV
    else:
        on_demand, od_source = math.nan, UNKNOWN
    spot, spot_source = math.nan, None
    if spot_running:
        if instance_type in spot_history:
            spot, spot_source = spot_history[instance_type], SPOT_HISTORY
        else:
            spot, spot_source = on_demand, od_source  # no spot price: the on-demand rate bounds it
    used = [od_source] if on_demand_running or not spot_running else []
    if spot_source is not None and spot_source not in used:
        used.append(spot_source)
    if len(used) > 1 and UNKNOWN in used:
        used = [UNKNOWN]  # part of the pool cannot be priced: so cannot the pool
    return PoolRates(on_demand, od_source, spot, spot_source, " + ".join(used))
