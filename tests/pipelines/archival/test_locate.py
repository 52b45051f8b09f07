"""The locate_archived_job job: from a job id to its day, part and manifest, as an operator runs it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dagster import DagsterInstance, DagsterInvalidConfigError

from definitions import defs
from tests.metadata import rows
from tests.pipelines.archival.helpers import DAY, day_jobs, put_jobs

OP = "find_job_in_archive"


def locate(job_id: str, instance=None, raise_on_error=True):
    return defs.resolve_job_def("locate_archived_job").execute_in_process(
        run_config={"ops": {OP: {"config": {"job_id": job_id}}}}, instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error)


def logged(result, instance) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def metadata_of(result) -> dict:
    (output,) = [e for e in result.all_node_events if e.is_successful_output]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def archive(day):
    result = defs.resolve_job_def("archive_old_jobs").execute_in_process(
        partition_key=day.isoformat(), instance=DagsterInstance.ephemeral(),
        run_config={"ops": {"archive_job_records_for_day": {"config": {}}}})
    assert result.success


def test_a_run_names_the_day_part_and_manifest_of_an_archived_job(aws, settings):
    later = DAY + timedelta(days=2)
    put_jobs(aws, settings, day_jobs("x", 12) + day_jobs("y", 12, later))
    archive(DAY)
    archive(later)

    instance = DagsterInstance.ephemeral()
    result = locate("y-5", instance)

    assert result.success
    metadata = metadata_of(result)
    prefix = f"s3://{settings.archive_bucket}/jobs/completed_date={later}/"
    assert metadata["archived"] is True and metadata["days"] == 1
    assert rows(metadata["locations"]) == [{"completed_date": later.isoformat(), "part": prefix + "part-00000.jsonl.gz",
                                           "manifest": prefix + "_manifest.json"}]
    assert prefix + "part-00000.jsonl.gz" in metadata["answer"]
    assert metadata["index_objects_read"] >= 1 and metadata["list_pages"] == 1
    assert result.output_for_node(OP)["archived"][0]["completed_date"] == later.isoformat()
    assert any(f"job y-5 is archived on {later}: part {prefix}part-00000" in m for m in logged(result, instance))


def test_a_job_not_archived_is_said_so_clearly(aws, settings):
    put_jobs(aws, settings, day_jobs("x", 3))
    archive(DAY)

    instance = DagsterInstance.ephemeral()
    result = locate("8812", instance)

    assert result.success
    metadata = metadata_of(result)
    assert metadata["archived"] is False and metadata["days"] == 0 and rows(metadata["locations"]) == []
    assert "Not archived" in metadata["answer"]
    assert any("job 8812 is not archived" in m for m in logged(result, instance))


@pytest.mark.parametrize("bad", ["", "a b", "x\nINJECTED", "zero\u200bwidth", "7" * 257])
def test_a_job_id_that_is_not_a_plain_token_is_refused_naming_the_field(aws, settings, bad):
    result = locate(bad, raise_on_error=False)
    assert not result.success
    failure = " ".join(str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure)
    assert "job_id" in failure


def test_the_job_id_is_required():
    with pytest.raises(DagsterInvalidConfigError, match="job_id"):
        defs.resolve_job_def("locate_archived_job").execute_in_process(
            run_config={"ops": {OP: {"config": {}}}}, instance=DagsterInstance.ephemeral())
