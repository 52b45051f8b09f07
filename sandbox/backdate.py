"""Move creation times into the past inside an in-process moto server.

AWS sets launch and creation times itself and offers no API to change them, and neither
does moto's server. A realistic fleet needs old things (orphans past their max runtime,
parameters and queues older than their thresholds), so the sandbox, tests and benchmarks
run moto in their own process and set those times on moto's backend objects directly.
This is the one place that reaches into moto; the code under test never does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from sandbox.server import MOTO_ACCOUNT_ID


class BackdateError(RuntimeError):
    pass


def _naive_utc(when: datetime) -> datetime:
    # moto stores naive UTC datetimes
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def backdate_instances(instance_ids: Iterable[str], launched_at: datetime, region: str) -> None:
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[MOTO_ACCOUNT_ID][region]
    for instance_id in instance_ids:
        try:
            instance = backend.get_instance(instance_id)
        except Exception as error:  # moto raises its own InvalidInstanceID error
            raise BackdateError(
                f"instance {instance_id} is not in this process's moto backend: "
                "backdating needs the moto server to run in-process (sandbox.server.start_moto)"
            ) from error
        instance.launch_time = _naive_utc(launched_at)


def backdate_queues(queue_names: Iterable[str], created_at: datetime, region: str) -> None:
    from moto.sqs.models import sqs_backends

    backend = sqs_backends[MOTO_ACCOUNT_ID][region]
    ts = created_at.timestamp()
    for name in queue_names:
        queue = backend.queues.get(name)
        if queue is None:
            raise BackdateError(f"queue {name} is not in this process's moto backend")
        queue.created_timestamp = ts
        queue.last_modified_timestamp = ts


def backdate_parameters(names: Iterable[str], modified_at: datetime, region: str) -> None:
    from moto.ssm.models import ssm_backends

    backend = ssm_backends[MOTO_ACCOUNT_ID][region]
    stamp = _naive_utc(modified_at)
    for name in names:
        history = backend._parameters.get(name)
        if not history:
            raise BackdateError(f"parameter {name} is not in this process's moto backend")
        for version in history:
            version.last_modified_date = stamp
