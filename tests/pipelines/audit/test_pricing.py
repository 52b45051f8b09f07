"""Prices that follow AWS: the pure choice of a pool's rates (table-driven, no AWS), the Price List and spot
history calls (moto has no Price List API: its answer, a 500, is the fallback path; the answering path is
a botocore Stubber on the real pricing client, reached through resources.aws's client observer), and the
cost report saying which source priced each pool.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta, timezone

import pytest
from botocore.stub import Stubber
from dagster import DagsterInstance, materialize

from pipelines.audit import price_sources
from pipelines.audit.pool_audit import pool_cost_report, pool_inventory
from pipelines.audit.price_sources import (
    cache_key, fetch_on_demand, fetch_spot, on_demand_rate, price_list_region,
)
from pipelines.audit.pricing import (
    OVERRIDE, PRICE_LIST, SHIPPED_CSV, SPOT_HISTORY, UNKNOWN, select_rates,
)
from resources.aws import AwsClients, add_client_observer
from tests.metadata import row_for

NAN = math.nan
LIST = {"t3.medium": 0.05, "m5.large": 0.11}
SPOT = {"t3.medium": 0.015}
CSV = {"t3.medium": 0.0416, "c5.large": 0.085}


# (type, override, on-demand running, spot running) -> (on-demand rate, spot rate, source)
SELECT_CASES = [
    ("override wins over everything, spot too", ("t3.medium", 0.2, 1, 1), (0.2, 0.2, OVERRIDE)),
    ("override, nothing spot", ("t3.medium", 0.2, 2, 0), (0.2, NAN, OVERRIDE)),
    ("price list before the csv", ("t3.medium", None, 1, 0), (0.05, NAN, PRICE_LIST)),
    ("csv when the price list lacks the type", ("c5.large", None, 1, 0), (0.085, NAN, SHIPPED_CSV)),
    ("no source at all: unknown", ("i3.large", None, 1, 0), (NAN, NAN, UNKNOWN)),
    ("all spot: spot history", ("t3.medium", None, 0, 3), (0.05, 0.015, SPOT_HISTORY)),
    ("mixed: both sources named", ("t3.medium", None, 2, 1), (0.05, 0.015, f"{PRICE_LIST} + {SPOT_HISTORY}")),
    ("spot without history: the on-demand rate bounds it", ("c5.large", None, 0, 1), (0.085, 0.085, SHIPPED_CSV)),
    ("nothing running: the on-demand source", ("m5.large", None, 0, 0), (0.11, NAN, PRICE_LIST)),
    ("part of a pool unpriceable: unknown", ("i3.large", None, 1, 1), (NAN, NAN, UNKNOWN)),
    ("no type (pool with several)", (None, None, 1, 0), (NAN, NAN, UNKNOWN)),
]


@pytest.mark.parametrize("case,given,want", SELECT_CASES, ids=[c[0] for c in SELECT_CASES])
def test_select_rates(case, given, want):
    instance_type, override, on_demand, spot = given
    rates = select_rates(instance_type, override, on_demand_running=on_demand, spot_running=spot,
                         price_list=LIST, spot_history=SPOT, shipped=CSV)
    got = (rates.on_demand, rates.spot, rates.source)
    for g, w in zip(got[:2], want[:2]):
        assert (math.isnan(g) and math.isnan(w)) or g == w, (case, got)
    assert got[2] == want[2], case


def test_compute_cost_prices_each_kind_of_hour_and_is_unknown_only_when_needed():
    mixed = select_rates("t3.medium", None, on_demand_running=1, spot_running=1, price_list=LIST,
                         spot_history=SPOT, shipped=CSV)
    assert mixed.compute_cost(10, 4) == pytest.approx(0.05 * 10 + 0.015 * 4)
    unknown = select_rates("i3.large", None, on_demand_running=1, spot_running=0, price_list=LIST,
                           spot_history=SPOT, shipped=CSV)
    assert math.isnan(unknown.compute_cost(1, 0)) and unknown.compute_cost(0, 0) == 0.0


@pytest.mark.parametrize("fleet,endpoint", [("us-west-2", "us-east-1"), ("eu-west-1", "eu-central-1"),
                                            ("ap-northeast-1", "ap-south-1"), ("me-south-1", "eu-central-1"),
                                            ("sa-east-1", "us-east-1"), ("ca-central-1", "us-east-1")])
def test_the_price_list_endpoint_nearest_the_fleet(fleet, endpoint):
    assert price_list_region(fleet) == endpoint


def product(usd: str, unit: str = "Hrs") -> str:
    """One GetProducts PriceList entry, shaped as AWS answers (a JSON string)."""
    return json.dumps({
        "product": {"attributes": {"instanceType": "t3.medium", "regionCode": "us-east-1"}, "sku": "SKU1"},
        "terms": {"OnDemand": {"SKU1.JRTCKXETXF": {"priceDimensions": {"SKU1.JRTCKXETXF.6YS6EN2CT7": {
            "unit": unit, "pricePerUnit": {"USD": usd}, "description": "$0.0416 per On Demand Linux t3.medium Instance Hour",
        }}}}},
    })


def test_on_demand_rate_reads_hourly_usd_and_skips_zero_and_other_units():
    assert on_demand_rate([product("0.0416000000")]) == 0.0416
    assert on_demand_rate([product("0.0000000000"), product("0.0416")]) == 0.0416
    assert on_demand_rate([product("3.5", unit="Quantity")]) is None
    assert on_demand_rate([]) is None


@pytest.fixture()
def fresh_cache():
    price_sources.clear_cache()
    yield
    price_sources.clear_cache()


@pytest.fixture()
def stubbed_pricing():
    """Every pricing client created meanwhile answers from a Stubber (the real client, botocore's events)."""
    stubbers: list[Stubber] = []
    answers: list[tuple[str, dict]] = []  # ("ok", response) or ("error", {code})

    def observe(client):
        if client.meta.service_model.service_name != "pricing":
            return
        stubber = Stubber(client)
        for kind, value in answers:
            if kind == "ok":
                stubber.add_response("get_products", value)
            else:
                stubber.add_client_error("get_products", service_error_code=value["code"], http_status_code=400)
        stubber.activate()
        stubbers.append(stubber)

    remove = add_client_observer(observe)
    yield answers, stubbers
    remove()


def test_price_list_answers_are_cached_for_the_day_in_process_and_in_the_bucket(aws, settings, fresh_cache,
                                                                                 stubbed_pricing):
    answers, stubbers = stubbed_pricing
    answers += [("ok", {"PriceList": [product("0.0416")], "FormatVersion": "aws_v1"}),
                ("ok", {"PriceList": [], "FormatVersion": "aws_v1"})]
    now = datetime(2026, 11, 25, 9, tzinfo=timezone.utc)
    first = fetch_on_demand(aws, "us-east-1", ["t3.medium", "zz.huge"], now, cache_bucket=settings.archive_bucket)
    assert first.failure is None and first.rates == {"t3.medium": 0.0416}  # zz.huge: no product, not 0
    assert (first.asked, first.cached) == (2, 0)
    stubbers[-1].assert_no_pending_responses()
    stored = json.loads(aws.s3.get_object(Bucket=settings.archive_bucket,
                                          Key=cache_key("2026-11-25", "us-east-1"))["Body"].read())
    assert stored == {"t3.medium": 0.0416, "zz.huge": None}

    answers.clear()  # from now on any GetProducts call would fail the stubber
    again = fetch_on_demand(aws, "us-east-1", ["t3.medium", "zz.huge"], now + timedelta(hours=3),
                            cache_bucket=settings.archive_bucket)
    assert (again.rates, again.asked, again.cached) == ({"t3.medium": 0.0416}, 0, 2)
    price_sources.clear_cache()  # a new process the same day: the bucket's copy answers
    from_bucket = fetch_on_demand(aws, "us-east-1", ["t3.medium"], now, cache_bucket=settings.archive_bucket)
    assert (from_bucket.rates, from_bucket.asked) == ({"t3.medium": 0.0416}, 0)

    answers.append(("ok", {"PriceList": [product("0.0420")], "FormatVersion": "aws_v1"}))
    next_day = fetch_on_demand(aws, "us-east-1", ["t3.medium"], now + timedelta(days=1),
                               cache_bucket=settings.archive_bucket)
    assert (next_day.rates, next_day.asked) == ({"t3.medium": 0.042}, 1)  # a new day asks again


def test_a_price_list_that_cannot_answer_is_a_failure_note_not_an_error(aws, fresh_cache):
    now = datetime.now(timezone.utc)
    # moto has no Price List API: the real call reaches the moto server, which answers 500.
    moto = fetch_on_demand(aws, "us-east-1", ["t3.medium"], now)
    unreachable = fetch_on_demand(AwsClients(endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                                             max_attempts=1), "us-east-1", ["t3.medium"], now)
    for result in (moto, unreachable):
        assert result.rates == {} and result.failure
        assert "\n" not in result.failure and len(result.failure) < 300
    assert moto.failure.startswith("500") and unreachable.failure.startswith("EndpointConnectionError")
    assert "<" not in moto.failure and moto.failure.endswith("the endpoint answered a web page, not an AWS error")


def test_a_denied_price_list_is_a_failure_note_naming_the_code(aws, fresh_cache, stubbed_pricing):
    answers, _ = stubbed_pricing
    answers.append(("error", {"code": "AccessDeniedException"}))
    result = fetch_on_demand(aws, "us-east-1", ["t3.medium", "m5.large"], datetime.now(timezone.utc))
    assert result.rates == {} and result.failure.startswith("AccessDeniedException")
    assert result.asked == 1  # the first failure stops the asking


def test_spot_history_on_moto_gives_the_current_price_of_each_type(aws):
    result = fetch_spot(aws.ec2, ["t3.medium", "m5.large"], datetime.now(timezone.utc))
    assert result.failure is None
    assert result.rates == {"t3.medium": 0.00001, "m5.large": 0.00001}  # moto's fixed spot price, every zone
    assert fetch_spot(aws.ec2, [], datetime.now(timezone.utc)).rates == {}


def test_the_report_names_the_source_of_each_pool_and_warns_once_when_the_price_list_fails(aws, settings,
                                                                                          fresh_cache):
    for pool, itype, price in (("od", "t3.medium", None), ("spotty", "m5.large", None), ("fixed", "c5.large", "0.5")):
        item = {"pool_name": {"S": pool}, "instance_type": {"S": itype}, "ebs_gb": {"N": "20"}}
        if price:
            item["hourly_price_usd"] = {"N": price}
        aws.dynamodb.put_item(TableName=settings.pools_table, Item=item)

    def launch(pool, itype, spot=False):
        tags = [{"Key": "runs-fleet:managed", "Value": "true"}, {"Key": "runs-fleet:pool", "Value": pool}]
        extra = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
        aws.ec2.run_instances(ImageId="ami-12c6146b", InstanceType=itype, MinCount=1, MaxCount=1,
                              TagSpecifications=[{"ResourceType": "instance", "Tags": tags}], **extra)

    launch("od", "t3.medium")
    launch("spotty", "m5.large", spot=True)
    launch("spotty", "m5.large")
    launch("fixed", "c5.large", spot=True)
    instance = DagsterInstance.ephemeral()
    result = materialize([pool_inventory, pool_cost_report], resources={"aws": aws, "settings": settings},
                         instance=instance)
    assert result.success  # moto answers pricing:GetProducts with a 500: the report falls back, never fails
    report = {r["pool"]: r for r in result.output_for_node("pool_cost_report").to_dict("records")}
    assert report["od"]["price_source"] == SHIPPED_CSV and report["od"]["hourly_rate_usd"] == 0.0416
    assert report["spotty"]["price_source"] == f"{SHIPPED_CSV} + {SPOT_HISTORY}"
    assert (report["spotty"]["spot_running"], report["spotty"]["spot_rate_usd"]) == (1, 0.00001)
    assert report["fixed"]["price_source"] == OVERRIDE and report["fixed"]["spot_rate_usd"] == 0.5

    md = result.asset_materializations_for_node("pool_cost_report")[0].metadata
    table = md["report"].value
    assert row_for(table, "spotty", "pool")["price source"] == f"{SHIPPED_CSV} + {SPOT_HISTORY}"
    assert row_for(table, "spotty", "pool")["spot"] == 1
    assert "unavailable" in md["price_notes"].value["price-list"]
    warnings = [e.user_message for e in instance.all_logs(result.run_id)
                if e.level == logging.WARNING and e.dagster_event is None]
    price_warnings = [w for w in warnings if "Price List" in w]
    assert len(price_warnings) == 1 and "prices.csv" in price_warnings[0], warnings
