"""``termination_queue_sensor``: wakes ``process_terminations`` when the termination queue holds work.

The tick is cheap and read-only: one look at the instance for an unfinished drain run and
one GetQueueAttributes. It never receives or deletes a message (the run does that), and it
never raises: an AWS error becomes a logged SkipReason, and the next tick tries again.
"""



from botocore.exceptions import BotoCoreError, ClientError
from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from pipelines.common.aws import error_code, queue_url
from pipelines.common.fleets import exclusive
from resources.aws import AwsClients
from resources.fleets import PARTITION_TAG, SINGLE, Fleets, fleet_clients, fleet_settings
from resources.settings import FleetSettings

# A drain run in any of these states will take the waiting messages (Dagster's own list of
# unfinished states, spelt out with the public enum).
NOT_FINISHED_STATUSES = [
    DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING, DagsterRunStatus.MANAGED,
]

# The tick must stay short even when AWS does not answer: its two calls use clients with
# short timeouts and a single retry (the run's clients keep the resource's patient ones).
TICK_TIMEOUTS = {"connect_timeout": 2.0, "read_timeout": 5.0, "max_attempts": 2}
_urls: dict[tuple, str] = {}  # (region, endpoint, queue name or URL) -> queue URL


def tick_clients(aws: AwsClients) -> AwsClients:
    """A copy of ``aws`` with short timeouts, kept per configuration so its boto3 clients are built once."""
    return aws.replaced(**TICK_TIMEOUTS)


def build_termination_sensor(job: Any, fleets: Fleets = SINGLE) -> SensorDefinition:
    """The termination queue sensor that wakes ``job`` (the drain job) when messages wait (in each
    fleet's queue, with a fleet list: one drain run per fleet at a time, fleets side by side)."""

    @sensor(
        job=job,
        name="termination_queue_sensor",
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Every 30 s: start one {job.name} run when the termination queue has visible messages.",
    )
    def termination_queue_sensor(context: SensorEvaluationContext, aws: AwsClients, settings: FleetSettings):
        """Request a drain run when termination messages are waiting and no drain run is unfinished.

        One run drains up to 1,000 messages, so a run per tick (not per message) keeps up. No
        run key: a message whose run failed comes back and must be able to start a later run.
        Skip reasons say why nothing started: the queue is empty, a drain is already queued or
        running, or the queue could not be read.
        """
        if fleets.listed:
            return evaluate_fleets(context, aws, settings, job.name, fleets)
        return evaluate(context, aws, settings, job.name)

    return termination_queue_sensor


def evaluate_fleets(context: SensorEvaluationContext, aws: AwsClients, settings: FleetSettings, job_name: str,
                    fleets: Fleets) -> Any:
    """One tick per fleet: a drain run for each fleet whose queue holds messages and has no unfinished drain.
    A fleet that cannot be read (its role cannot be assumed) is skipped, named, and the others go on."""
    requests: list[RunRequest] = []
    reasons: list[str] = []
    for fleet in fleets.fleets:
        result = evaluate(context, fleet_clients(aws, fleet), fleet_settings(settings, fleet), job_name, fleet.name)
        if isinstance(result, RunRequest):
            requests.append(result)
        else:
            reasons.append(f"{fleet.name}: {result.skip_message}")
    if requests:
        return SensorResult(run_requests=requests)
    return SkipReason("; ".join(reasons))


def evaluate(context: SensorEvaluationContext, aws: AwsClients, settings: FleetSettings, job_name: str,
             fleet: str | None = None) -> Any:
    """One tick: skip while a drain run is unfinished or the queue is empty; else request a run
    (of ``fleet``'s partition, with a fleet list)."""
    active = context.instance.get_run_records(
        RunsFilter(job_name=job_name, statuses=NOT_FINISHED_STATUSES,
                   tags={PARTITION_TAG: fleet} if fleet else None), limit=1
    )
    if active:
        run = active[0].dagster_run
        return SkipReason(f"a drain run is already {run.status.value.lower()} ({run.run_id}); it takes the waiting messages")
    try:
        sqs = tick_clients(aws).sqs
        # A queue's URL never changes while it exists: resolve a name once per process, not on
        # every 30-second tick, and forget it if the queue turns out to be gone.
        cache_key = (sqs.meta.region_name, sqs.meta.endpoint_url, settings.termination_queue)
        url = _urls.get(cache_key) or _urls.setdefault(cache_key, queue_url(sqs, settings.termination_queue))
        try:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
        except ClientError:
            _urls.pop(cache_key, None)
            raise
        visible = int(attributes.get("ApproximateNumberOfMessages", "0"))
        in_flight = int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0"))
    except (ClientError, BotoCoreError, KeyError, ValueError) as error:
        code = error_code(error) or type(error).__name__
        where = f"fleet {fleet}: " if fleet else ""
        context.log.error(f"{where}could not read termination queue {settings.termination_queue}: {code}: {error}")
        return SkipReason(f"could not read the termination queue ({code}); trying again next tick")
    if visible == 0:
        held = f"; {in_flight} in flight, returning after their visibility timeout" if in_flight else ""
        return SkipReason(f"termination queue is empty{held}")
    context.log.info(f"{f'fleet {fleet}: ' if fleet else ''}{visible} termination message(s) waiting "
                     f"({in_flight} in flight): requesting a drain run")
    return RunRequest(
        run_key=None,
        partition_key=fleet,
        tags={"runs-fleet/trigger": "termination_queue_sensor", "runs-fleet/visible_messages": str(visible),
              **exclusive(job_name, fleet)},
    )
