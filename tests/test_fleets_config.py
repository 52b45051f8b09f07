"""RUNS_FLEET_FLEETS: the fleet list is validated at load, errors name the file, the entry and the field;
no list is the single ``default`` fleet, exactly today's environment."""

from __future__ import annotations

import pytest

from resources import load_aws_clients, load_settings
from resources.fleets import (
    SINGLE, FleetError, fleet_clients, fleet_settings, load_fleets, parse_fleets,
)

GOOD = """
fleets:
  - name: prod-use1
    region: us-east-1
    role_arn: arn:aws:iam::111111111111:role/runs-fleet-housekeeping
    external_id: runs-fleet
    names: {jobs_table: jobs-prod, archive_bucket: archive-prod}
  - name: dev
"""


def test_no_list_is_the_single_default_fleet_made_of_the_environment():
    fleets = load_fleets({})
    assert fleets is SINGLE and fleets.names == ["default"] and not fleets.listed
    aws, settings = load_aws_clients({}), load_settings({})
    assert fleet_clients(aws, fleets.fleets[0]) is aws
    assert fleet_settings(settings, fleets.fleets[0]) is settings
    # Outside a partitioned run, and for every run of a single fleet, the default fleet.
    assert fleets.of_tags({}).name == "default"


def test_a_good_list_gives_each_fleet_its_region_role_and_names(tmp_path):
    path = tmp_path / "fleets.yaml"
    path.write_text(GOOD)
    fleets = load_fleets({"RUNS_FLEET_FLEETS": str(path)})
    assert fleets.listed and fleets.names == ["prod-use1", "dev"]
    prod = fleets.get("prod-use1")
    aws = fleet_clients(load_aws_clients({}), prod)
    assert (aws.region_name, aws.role_arn, aws.external_id) == ("us-east-1", prod.role_arn, "runs-fleet")
    settings = fleet_settings(load_settings({"RUNS_FLEET_DRY_RUN": "true"}), prod)
    assert (settings.jobs_table, settings.archive_bucket, settings.pools_table) == (
        "jobs-prod", "archive-prod", "runs-fleet-pools")
    assert settings.dry_run is True  # the deployment's kill switch holds in every fleet
    assert fleets.of_tags({"dagster/partition": "dev"}).name == "dev"
    assert fleets.of_tags({"dagster/partition/fleet": "prod-use1", "dagster/partition": "2026-11-10|prod-use1"}) \
        .name == "prod-use1"
    with pytest.raises(FleetError, match="names no fleet"):
        fleets.of_tags({})
    with pytest.raises(FleetError, match="no fleet named 'staging'"):
        fleets.of_tags({"dagster/partition": "staging"})


@pytest.mark.parametrize("text, expected", [
    ("fleets: []", "fleets: List should have at least 1 item"),
    ("- name: a", "expected a mapping with a 'fleets' list"),
    ("fleets: [{name: Prod}]", "fleets[0] (Prod): name: String should match pattern"),
    ("fleets: [{name: a, region: mars}]", "fleets[0] (a): region: String should match pattern"),
    ("fleets: [{name: a, role_arn: 'arn:aws:iam::1:role/x'}]", "fleets[0] (a): role_arn: String should match"),
    ("fleets: [{name: a}, {name: b, external_id: 12345}]", "fleets[1] (b): external_id: Input should be a valid string"),
    ("fleets: [{name: a, names: {dry_run: 'false'}}]", "fleets[0] (a): names: Value error, 'dry_run' is not a "
     "resource name"),
    ("fleets: [{name: a, names: {ssm_prefix: nope}}]", "must start and end with '/'"),
    ("fleets: [{name: a, colour: blue}]", "fleets[0] (a): colour: Extra inputs are not permitted"),
    ("fleets: [{name: a}, {name: a}]", "fleets[1] (a): name: listed twice"),
    ("fleets: [{name: a, dry_run: 'false'}]", "fleets[0] (a): dry_run: Input should be a valid boolean"),
    ("fleets: [{name: a}\n", "not YAML"),
])
def test_a_bad_list_fails_naming_the_file_entry_and_field(text, expected):
    with pytest.raises(FleetError) as error:
        parse_fleets(text, "/etc/fleets.yaml")
    assert str(error.value).startswith("RUNS_FLEET_FLEETS=/etc/fleets.yaml: ")
    assert expected in str(error.value)


def test_a_fleet_can_be_put_in_dry_run_but_cannot_lift_the_deployments():
    fleets = parse_fleets("fleets: [{name: careful, dry_run: true}, {name: normal}, {name: lifted, dry_run: false}]",
                          "f.yaml")
    live, stopped = load_settings({}), load_settings({"RUNS_FLEET_DRY_RUN": "true"})
    assert fleet_settings(live, fleets.get("careful")).dry_run is True
    assert fleet_settings(live, fleets.get("normal")).dry_run is False
    assert fleet_settings(stopped, fleets.get("lifted")).dry_run is True
    assert live.dry_run is False  # the deployment's own settings are untouched


def test_an_unreadable_or_empty_setting_fails_naming_it(tmp_path):
    with pytest.raises(FleetError, match="is set but empty"):
        load_fleets({"RUNS_FLEET_FLEETS": " "})
    with pytest.raises(FleetError, match="cannot read it"):
        load_fleets({"RUNS_FLEET_FLEETS": str(tmp_path / "missing.yaml")})


from hypothesis import given, strategies as st  # noqa: E402

from resources.fleets import RENAMEABLE, Fleet, Fleets  # noqa: E402

_names = st.dictionaries(st.sampled_from(sorted(k for k in RENAMEABLE if k != "ssm_prefix")),
                         st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), max_size=4)
_fleets = st.lists(st.tuples(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), _names, st.booleans()),
                   min_size=1, max_size=6, unique_by=lambda t: t[0])


@given(entries=_fleets, deployment_dry_run=st.booleans(), pick=st.integers(min_value=0))
def test_a_run_gets_exactly_its_fleets_names_and_never_a_lifted_kill_switch(entries, deployment_dry_run, pick):
    fleets = Fleets(tuple(Fleet(name=n, names=names, dry_run=d) for n, names, d in entries), listed=True)
    base = load_settings({"RUNS_FLEET_DRY_RUN": "true" if deployment_dry_run else "false"})
    name, names, dry = entries[pick % len(entries)]
    fleet = fleets.of_tags({"dagster/partition": name})
    assert fleet.name == name
    settings = fleet_settings(base, fleet)
    assert settings.dry_run == (deployment_dry_run or dry)
    for field in RENAMEABLE:
        assert getattr(settings, field) == names.get(field, getattr(base, field))
