"""Where prices come from on AWS: the Price List API (on-demand) and the spot price history; the calls only.

Which rate prices a pool is decided in ``pricing.select_rates``; this module fetches the
rates it chooses between, and never fails the report: a source that cannot answer is an
empty answer plus a one-line note saying why, and the report falls back (CSV, on-demand).

- **Price List** (`pricing:GetProducts`): served only from us-east-1, ap-south-1 and
  eu-central-1, whatever the fleet's region; asked per instance type with the fleet's
  `regionCode`, Linux, shared tenancy, no pre-installed software, capacity status `Used`.
  List prices change rarely, so answers are cached for the UTC day: in this process, and as
  `prices/price-list/date=YYYY-MM-DD/region=REGION.json` in the archive bucket, so the next
  run (a new process) the same day asks nothing.
- **Spot price history** (`ec2:DescribeSpotPriceHistory`): the price in effect now (start
  time = now) of each type, Linux/UNIX, per zone; the highest zone's price is taken.
  Not cached: spot prices move through the day.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.common.aws import error_code
from pipelines.common.contract import loggable, utc
from resources.aws import AwsClients

PRICE_LIST_REGIONS = ("us-east-1", "ap-south-1", "eu-central-1")
SPOT_PRODUCTS = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]
CACHE_PREFIX = "prices/price-list"

_cache: dict[tuple[str, str], dict[str, float | None]] = {}  # (day, region) -> type -> rate (None: no product)
_cache_lock = threading.Lock()


@dataclass
class Fetched:
    """Rates by instance type, and why a source could not answer (None: it answered)."""

    rates: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    cached: int = 0  # types answered from the day's cache
    asked: int = 0  # types asked of AWS


def price_list_region(fleet_region: str) -> str:
    """The Price List endpoint nearest the fleet: ap-south-1 for Asia Pacific, eu-central-1 for Europe,
    the Middle East and Africa, us-east-1 otherwise."""
    if fleet_region.startswith("ap-"):
        return "ap-south-1"
    if fleet_region.startswith(("eu-", "me-", "af-", "il-")):
        return "eu-central-1"
    return "us-east-1"


def pricing_client(aws: AwsClients, fleet_region: str) -> Any:
    """A Price List client in its endpoint's region, with the fleet's identity and endpoint settings.

    Two attempts and short timeouts: an unreachable endpoint costs seconds, not minutes, and
    the report falls back to the shipped table anyway.
    """
    clients = AwsClients(
        region_name=price_list_region(fleet_region), profile_name=aws.profile_name,
        aws_access_key_id=aws.aws_access_key_id, aws_secret_access_key=aws.aws_secret_access_key,
        aws_session_token=aws.aws_session_token, endpoint_url=aws.endpoint_url, use_ssl=aws.use_ssl,
        verify=aws.verify, retry_mode=aws.retry_mode, max_attempts=2, connect_timeout=5, read_timeout=20,
    )
    return clients.client("pricing")


def on_demand_rate(price_list: Iterable[str]) -> float | None:
    """The hourly on-demand USD rate in GetProducts' PriceList (JSON strings); None if none is there.

    Several matching products (rare after the filters) give the highest rate: a bound, not a guess.
    """
    rates = []
    for raw in price_list:
        product = json.loads(raw) if isinstance(raw, str) else raw
        for offer in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in offer.get("priceDimensions", {}).values():
                if dimension.get("unit") not in ("Hrs", "Hours"):
                    continue
                try:
                    usd = float(dimension.get("pricePerUnit", {}).get("USD", "nan"))
                except ValueError:
                    continue
                if usd > 0:
                    rates.append(usd)
    return max(rates) if rates else None


def _products(pricing: Any, instance_type: str, region: str) -> list[str]:
    filters = [{"Type": "TERM_MATCH", "Field": name, "Value": value} for name, value in (
        ("instanceType", instance_type), ("regionCode", region), ("operatingSystem", "Linux"),
        ("tenancy", "Shared"), ("preInstalledSw", "NA"), ("capacitystatus", "Used"),
        ("licenseModel", "No License required"))]
    found: list[str] = []
    for page in pricing.get_paginator("get_products").paginate(
            ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1"):
        found += page.get("PriceList", [])
    return found


def _read_cache(aws: AwsClients, bucket: str | None, day: str, region: str) -> dict[str, float | None]:
    with _cache_lock:
        known = dict(_cache.get((day, region), {}))
    if bucket:
        try:
            body = aws.s3.get_object(Bucket=bucket, Key=cache_key(day, region))["Body"].read()
            stored = json.loads(body)
            known = {**{k: (float(v) if v is not None else None) for k, v in stored.items()}, **known}
        except (ClientError, BotoCoreError, ValueError, AttributeError):
            pass  # no cache yet (NoSuchKey), or unreadable: ask AWS
    return known


def cache_key(day: str, region: str) -> str:
    return f"{CACHE_PREFIX}/date={day}/region={region}.json"


def fetch_on_demand(aws: AwsClients, region: str, types: Iterable[str], now: datetime,
                    cache_bucket: str | None = None) -> Fetched:
    """Today's Price List rate of each of ``types`` in ``region`` (cached per UTC day; see the module docstring).

    The first failing call (not implemented by a stand-in, AccessDenied, endpoint unreachable)
    stops the asking: what was cached stands, ``failure`` says why.
    """
    day = utc(now).strftime("%Y-%m-%d")
    wanted = sorted({t for t in types if t})
    known = _read_cache(aws, cache_bucket, day, region)
    result = Fetched(cached=sum(1 for t in wanted if t in known))
    missing = [t for t in wanted if t not in known]
    fresh: dict[str, float | None] = {}
    if missing:
        try:
            pricing = pricing_client(aws, region)
            for instance_type in missing:
                result.asked += 1
                fresh[instance_type] = on_demand_rate(_products(pricing, instance_type, region))
        except (ClientError, BotoCoreError) as error:
            result.failure = _why(error)
    if fresh:
        known.update(fresh)
        with _cache_lock:
            _cache.setdefault((day, region), {}).update(fresh)
        if cache_bucket:
            try:
                aws.s3.put_object(Bucket=cache_bucket, Key=cache_key(day, region), ContentType="application/json",
                                  Body=json.dumps(known, sort_keys=True).encode())
            except (ClientError, BotoCoreError):
                pass  # the cache is an optimisation; the rates are in hand
    result.rates = {t: rate for t in wanted if (rate := known.get(t)) is not None}
    return result


def fetch_spot(ec2: Any, types: Iterable[str], now: datetime) -> Fetched:
    """The spot price in effect at ``now`` of each of ``types`` (Linux/UNIX), the highest among the region's zones."""
    wanted = sorted({t for t in types if t})
    result = Fetched(asked=len(wanted))
    if not wanted:
        return result
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    try:
        pages = ec2.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=wanted, ProductDescriptions=SPOT_PRODUCTS, StartTime=utc(now), EndTime=utc(now))
        for page in pages:
            for entry in page.get("SpotPriceHistory", []):
                key = (entry["InstanceType"], entry.get("AvailabilityZone", ""))
                stamp, price = utc(entry["Timestamp"]), float(entry["SpotPrice"])
                if key not in latest or stamp > latest[key][0]:
                    latest[key] = (stamp, price)
    except (ClientError, BotoCoreError) as error:
        result.failure = _why(error)
        return result
    for (instance_type, _), (_, price) in latest.items():
        if price > 0:
            result.rates[instance_type] = max(price, result.rates.get(instance_type, 0.0))
    return result


def _why(error: BaseException) -> str:
    """The error's code and message on one line, short. An answer that is a web page, not an AWS error (moto
    has no Price List API and answers its 500 page), is said to be one instead of quoting its markup."""
    message = str(error)
    aws_message = str(getattr(error, "response", {}).get("Error", {}).get("Message", ""))
    if aws_message.lstrip().startswith("<"):
        message = message.replace(aws_message, "").rstrip(": ") + ": the endpoint answered a web page, not an AWS error"
    return f"{error_code(error) or type(error).__name__}: {loggable(message, 240)}"


def clear_cache() -> None:
    """Forget the in-process Price List cache (tests, and a process that outlives a price change)."""
    with _cache_lock:
        _cache.clear()
