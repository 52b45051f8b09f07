"""Termination processing: a runner ended, so mark its job done and clean up what it left.

``termination_queue_sensor`` (built in definitions.py by ``sensors.termination``) wakes ``process_terminations``;
``redrive_termination_dlq`` is the operator's replay of the DLQ. See docs/termination.md.
"""

from dagster import Definitions

from pipelines.termination.jobs import process_terminations, redrive_termination_dlq

JOBS = [process_terminations, redrive_termination_dlq]

defs = Definitions(jobs=JOBS)
