"""Termination processing: a runner ended, so mark its job done and clean up what it left.

``sensors.termination.termination_queue_sensor`` wakes ``process_terminations``;
``redrive_termination_dlq`` is the operator's replay of the DLQ. See docs/termination.md.
"""

from dagster import Definitions

from pipelines.termination.jobs import process_terminations, redrive_termination_dlq
from sensors.termination import termination_queue_sensor

defs = Definitions(jobs=[process_terminations, redrive_termination_dlq], sensors=[termination_queue_sensor])
