"""Move creation times into the past inside an in-process moto server.

AWS sets launch and creation times itself and offers no API to change them, and neither
does moto's server. A realistic fleet needs old things (orphans past their max runtime,
parameters and queues older than their thresholds), so the sandbox, tests and benchmarks
run moto in their own process and set those times on moto's backend objects directly.
This is the one place that reaches into moto; the code under test never does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

from sandbox.server import MOTO_ACCOUNT_ID


class BackdateError(RuntimeError):
    pass


def _naive_utc(when: datetime) -> datetime:
    # moto stores naive UTC datetimes
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def backdate_instances(instance_ids: Iterable[str], launched_at: datetime, region: str, account: str = MOTO_ACCOUNT_ID) -> None:
    backdate_instance_launches({instance_id: launched_at for instance_id in instance_ids}, region, account)


def backdate_instance_launches(launches: Mapping[str, datetime], region: str, account: str = MOTO_ACCOUNT_ID) -> None:
    """Set each instance's launch time (instance id -> when)."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][region]
    # moto's get_instance scans every instance: map them once, or large fleets seed in quadratic time.
    by_id = {instance.id: instance for reservation in backend.reservations.values() for instance in reservation.instances}
    for instance_id, launched_at in launches.items():
        instance = by_id.get(instance_id)
        if instance is None:
            raise BackdateError(
                f"instance {instance_id} is not in this process's moto backend: "
                "backdating needs the moto server to run in-process (sandbox.server.start_moto)"
            )
        instance.launch_time = _naive_utc(launched_at)


def backdate_queues(queue_names: Iterable[str], created_at: datetime, region: str, account: str = MOTO_ACCOUNT_ID) -> None:
    from moto.sqs.models import sqs_backends

    backend = sqs_backends[account][region]
    ts = created_at.timestamp()
    for name in queue_names:
        queue = backend.queues.get(name)
        if queue is None:
            raise BackdateError(f"queue {name} is not in this process's moto backend")
        queue.created_timestamp = ts
        queue.last_modified_timestamp = ts


def backdate_parameters(names: Iterable[str], modified_at: datetime, region: str, account: str = MOTO_ACCOUNT_ID) -> None:
    from moto.ssm.models import ssm_backends

    backend = ssm_backends[account][region]
    stamp = _naive_utc(modified_at)
    for name in names:
        history = backend._parameters.get(name)
        if not history:
            raise BackdateError(f"parameter {name} is not in this process's moto backend")
        for version in history:
            version.last_modified_date = stamp


def set_instance_states(instance_ids: Iterable[str], state: str, region: str, account: str = MOTO_ACCOUNT_ID) -> None:
    """Put instances in an EC2 state moto's API cannot hold them in (``shutting-down`` passes in an instant)."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][region]
    by_id = {i.id: i for reservation in backend.reservations.values() for i in reservation.instances}
    codes = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
    for instance_id in instance_ids:
        instance = by_id.get(instance_id)
        if instance is None:
            raise BackdateError(f"instance {instance_id} is not in this process's moto backend")
        instance._state.name, instance._state.code = state, codes[state]
