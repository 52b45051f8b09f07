"""Every destructive piece under injected faults, through Dagster, against the moto server.

For each piece (termination drain, the three sweeps, archival, restore, DLQ replay) and
each fault (transient throttling/HTTP 500 every Nth request, partial batch failures, a
crash at the step boundary before the piece's first destructive batch):

1. the faulty run finishes or fails cleanly — Dagster reports it, or (a crash) the
   process "dies" at the injected point; it never hangs;
2. a re-run without faults converges on exactly the end state of a clean run on an
   identical fleet (instances' states, parameter names, queue names and contents,
   tracking records, job items, verified job archives, archived queue messages,
   termination queue and DLQ contents — ids replaced by labels);
3. nothing is lost: every job record is in the table or in a verified archive (and then found
   by its job id in the job index, at its day and latest part), every queue message in its
   queue, the DLQ or the archive.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from dagster import DagsterInstance

from pipelines.archival.jobs import archive_old_jobs, restore_archived_jobs
from pipelines.sweeps import orphaned_instances as oi
from pipelines.sweeps import orphaned_queues as oq
from pipelines.sweeps import stale_ssm
from pipelines.termination.jobs import process_terminations, redrive_termination_dlq
from tests.faults.conftest import Faults, InjectedCrash, expire_in_flight
from tests.faults import world as w

# ---- the pieces ----------------------------------------------------------------------------------


@dataclass
class Piece:
    name: str
    build: Callable[[Any, Any], dict[str, Any]]  # -> originals: {"jobs": {...}, "messages": [...]}
    run: Callable[[Any, Any], Any]  # -> Dagster result
    # step boundaries: name -> (service, Operation) whose first matching call starts that step
    crashes: dict[str, tuple[tuple[str, str], Callable[[dict[str, Any]], bool]]]
    partial_ops: set[tuple[str, str]]
    run_twice: bool = False  # pieces whose work arrives over time (messages) get a second pass
    transient_every: int = 3  # every Nth HTTP request fails: alternately throttling and HTTP 500


_INSTANCE: list[DagsterInstance] = []


def _execute(job, aws, settings, run_config, **kwargs):
    # One in-memory instance for the module: runs are independent, and creating one per run is slow.
    if not _INSTANCE:
        _INSTANCE.append(DagsterInstance.ephemeral())
    return job.execute_in_process(run_config=run_config, resources={"aws": aws, "settings": settings},
                                  instance=_INSTANCE[0], raise_on_error=False, **kwargs)


# termination: three runners finish; one left messages in its output queue; jobs go from running to done
def build_termination(aws, settings):
    url = w.termination_url(aws, settings)
    originals: dict[str, Any] = {"jobs": {}, "messages": [], "terminations": {}}
    for n in range(3):
        runner = f"i-0term{n:012d}"
        originals["jobs"][f"t{n}"] = w.put_job(aws, settings, f"t{n}", "running", runner=runner)
        w.put_params(aws, settings, [runner], 5)
        w.queue_set(aws, settings, runner, 1, messages=2 if n == 0 else 0)
        if n == 0:
            originals["messages"] += [json.dumps({"runner": runner, "line": i}) for i in range(2)]
        body = {"instance_id": runner, "job_id": f"t{n}", "status": "completed" if n else "failed",
                "exit_code": n and 0 or 1, "duration_seconds": 300, "started_at": "2026-11-22T10:00:00Z",
                "completed_at": "2026-11-22T10:05:00Z"}
        w.send_fifo(aws, url, body, group=runner)
        originals["terminations"][json.dumps(body, sort_keys=True)] = body
    return originals


def run_termination(aws, settings):
    config = {"wait_seconds": 0, "visibility_timeout_seconds": 5, "workers": 2, "batch_size": 2}
    return _execute(process_terminations, aws, settings, {"ops": {"drain_termination_queue": {"config": config}}})


# orphaned instances: two orphans (one with a finished job), one busy, one young, one protected
def build_orphaned_instances(aws, settings):
    w.put_pool(aws, settings, "small", 60)
    w.put_job(aws, settings, "j-run", "running")
    w.put_job(aws, settings, "j-done", "completed", completed_at="2026-11-22T10:00:00Z")
    w.launch(aws, "orphan-idle", 200)
    w.launch(aws, "orphan-finished", 200, job_id="j-done")
    w.launch(aws, "busy", 200, job_id="j-run")
    w.launch(aws, "young", 10)
    w.launch(aws, "protected", 200, protect=True)
    return {"jobs": {}, "messages": []}


def run_orphaned_instances(aws, settings):
    return _execute(oi.orphaned_instances_sweep, aws, settings, {"ops": {oi.ACT_OP: {"config": {"max_fraction": 1.0, "confirm_after_minutes": 0}}}})


# stale SSM: four dead runners' old parameters, a live runner's, a young one
def build_stale_ssm(aws, settings):
    live = w.launch(aws, "live", 5)
    w.put_params(aws, settings, [f"i-0dead{n:012d}" for n in range(4)] + [live], 120)
    w.put_params(aws, settings, ["i-0young000000001"], 10)
    return {"jobs": {}, "messages": []}


def run_stale_ssm(aws, settings):
    return _execute(stale_ssm.stale_ssm_sweep, aws, settings,
                    {"ops": {stale_ssm.ACT_OP: {"config": {"max_fraction": 1.0, "confirm_after_minutes": 0}}}})


# orphaned queues: two gone runners' old queue sets (one holding messages), a live runner's, a young one
def build_orphaned_queues(aws, settings):
    live = w.launch(aws, "live", 5)
    originals: dict[str, Any] = {"jobs": {}, "messages": []}
    w.queue_set(aws, settings, "i-0gone000000000a", 30, messages=3)
    originals["messages"] += [json.dumps({"runner": "i-0gone000000000a", "line": i}) for i in range(3)]
    w.queue_set(aws, settings, "i-0gone000000000b", 30)
    w.queue_set(aws, settings, live, 30)
    w.queue_set(aws, settings, "i-0young00000000c", 2)
    return originals


def run_orphaned_queues(aws, settings):
    return _execute(oq.orphaned_queues_sweep, aws, settings, {"ops": {oq.ACT_OP: {"config": {"max_fraction": 1.0, "confirm_after_minutes": 0}}}})


# archival: one day of 12 finished jobs and two running ones
def _day_jobs(aws, settings, count):
    statuses = ("completed", "failed", "cancelled", "interrupted")
    return {f"a{n}": w.put_job(aws, settings, f"a{n}", statuses[n % 4],
                               completed_at=f"{w.DAY}T{n % 24:02d}:{n % 60:02d}:00Z") for n in range(count)}


def build_archive(aws, settings):
    jobs = _day_jobs(aws, settings, 12)
    jobs["r1"] = w.put_job(aws, settings, "r1", "running")
    jobs["r2"] = w.put_job(aws, settings, "r2", "running")
    return {"jobs": jobs, "messages": []}


def run_archive(aws, settings):
    return _execute(archive_old_jobs, aws, settings, {"ops": {"archive_job_records_for_day": {"config": {}}}},
                    partition_key=w.DAY.isoformat())


# restore: an archived day (archived cleanly while building), written back
def build_restore(aws, settings):
    jobs = _day_jobs(aws, settings, 12)
    result = run_archive(aws, settings)
    assert result.success and w.world(aws, settings)["jobs"] == {}
    return {"jobs": jobs, "messages": []}


def run_restore(aws, settings):
    return _execute(restore_archived_jobs, aws, settings, {"ops": {"restore_job_records_for_day": {"config": {}}}},
                    partition_key=w.DAY.isoformat())


# DLQ replay: five messages of three groups in the termination DLQ
def build_redrive(aws, settings):
    dlq = aws.sqs.get_queue_url(QueueName=w.termination_dlq_name(settings))["QueueUrl"]
    bodies = []
    for n in range(5):
        body = {"instance_id": f"i-0dlq{n:013d}", "job_id": f"d{n}", "status": "completed"}
        w.send_fifo(aws, dlq, body, group=f"g{n % 3}")
        bodies.append(json.dumps(body, sort_keys=True))
    return {"jobs": {}, "messages": bodies}


def run_redrive(aws, settings):
    return _execute(redrive_termination_dlq, aws, settings, {"ops": {"replay_termination_dlq": {"config": {}}}})


def _on_queue(name_part: str) -> Callable[[dict[str, Any]], bool]:
    return lambda params: name_part in params.get("QueueUrl", "")


def _any(params: dict[str, Any]) -> bool:
    return True


def _key_starts(prefix: str) -> Callable[[dict[str, Any]], bool]:
    return lambda params: params.get("Key", "").startswith(prefix)


def _key_ends(suffix: str) -> Callable[[dict[str, Any]], bool]:
    return lambda params: params.get("Key", "").endswith(suffix)


PIECES = {
    "process_terminations": Piece(
        "process_terminations", build_termination, run_termination,
        {"DeleteParameters": (("ssm", "DeleteParameters"), _any),  # jobs marked done, runners not yet cleaned up
         "DeleteQueue": (("sqs", "DeleteQueue"), _any),  # runner queue messages archived, queues not yet deleted
         "DeleteMessageBatch": (("sqs", "DeleteMessageBatch"), _on_queue("runs-fleet-termination.fifo"))},
        {("sqs", "DeleteMessageBatch"), ("sqs", "ChangeMessageVisibilityBatch"), ("dynamodb", "BatchWriteItem"),
         ("dynamodb", "BatchGetItem")},
        run_twice=True,
        transient_every=6,
    ),
    "orphaned_instances_sweep": Piece(
        "orphaned_instances_sweep", build_orphaned_instances, run_orphaned_instances,
        {"TerminateInstances": (("ec2", "TerminateInstances"), _any)}, {("dynamodb", "BatchGetItem")},
    ),
    "stale_ssm_sweep": Piece(
        "stale_ssm_sweep", build_stale_ssm, run_stale_ssm, {"DeleteParameters": (("ssm", "DeleteParameters"), _any)},
        {("ssm", "DeleteParameters")},
    ),
    "orphaned_queues_sweep": Piece(
        "orphaned_queues_sweep", build_orphaned_queues, run_orphaned_queues,
        {"PutObject": (("s3", "PutObject"), _any),  # messages received, not yet archived
         "DeleteQueue": (("sqs", "DeleteQueue"), _any),
         "BatchWriteItem": (("dynamodb", "BatchWriteItem"), _any)},  # queues gone, tracking records not yet
        {("dynamodb", "BatchWriteItem"), ("dynamodb", "BatchGetItem"), ("sqs", "DeleteMessageBatch")},
        transient_every=5,
    ),
    "archive_old_jobs": Piece(
        "archive_old_jobs", build_archive, run_archive,
        {"PutObject-manifest": (("s3", "PutObject"), _key_ends("_manifest.json")),  # part written, no manifest yet
         "PutObject-index": (("s3", "PutObject"), _key_starts("index/")),  # manifest written, no index yet
         "TransactWriteItems": (("dynamodb", "TransactWriteItems"), _any)},  # archive verified, nothing deleted
        {("dynamodb", "TransactWriteItems")},
        transient_every=5,
    ),
    "restore_archived_jobs": Piece(
        "restore_archived_jobs", build_restore, run_restore, {"BatchWriteItem": (("dynamodb", "BatchWriteItem"), _any)},
        {("dynamodb", "BatchWriteItem"), ("dynamodb", "BatchGetItem")},
    ),
    "redrive_termination_dlq": Piece(
        "redrive_termination_dlq", build_redrive, run_redrive,
        {"SendMessageBatch": (("sqs", "SendMessageBatch"), _any),  # DLQ messages received and held, none sent
         "DeleteMessageBatch": (("sqs", "DeleteMessageBatch"), _on_queue("runs-fleet-termination-dlq.fifo"))},
        {("sqs", "SendMessageBatch"), ("sqs", "DeleteMessageBatch")}, transient_every=5,
    ),
}

SCENARIOS = [
    (name, fault)
    for name, piece in PIECES.items()
    for fault in ["transient", "partial", *(f"crash-before-{boundary}" for boundary in piece.crashes)]
]
assert len(SCENARIOS) == 28  # the count docs/faults.md reports



# ---- the checks ----------------------------------------------------------------------------------

_CLEAN: dict[str, dict[str, Any]] = {}


def _run_to_rest(piece: Piece, aws, settings):
    """A run without faults (twice for a queue drain: the second pass picks up what came back)."""
    result = piece.run(aws, settings)
    if piece.run_twice:
        result = piece.run(aws, settings)
    return result


def clean_end_state(piece: Piece, aws, settings, stack_reset: Callable[[], Any]) -> dict[str, Any]:
    """The end state of a clean run on an identical fleet (computed once per piece; the stack is reset after)."""
    if piece.name not in _CLEAN:
        piece.build(aws, settings)
        result = _run_to_rest(piece, aws, settings)
        assert result.success
        _CLEAN[piece.name] = w.world(aws, settings)
        stack_reset()
    return _CLEAN[piece.name]


def assert_nothing_lost(settings, originals: dict[str, Any], end: dict[str, Any]) -> None:
    """Check a world snapshot: every original record and message is still somewhere safe."""
    archive = end["job_archive"]
    assert all(day["verified"] for day in archive.values()), "an archive day does not match its manifest"
    archived = {job_id: rec for day in archive.values() for job_id, rec in day["records"].items()}
    for job_id in originals["jobs"]:
        assert job_id in end["jobs"] or job_id in archived, f"job record {job_id} lost"
        if job_id not in end["jobs"]:  # deleted: the index leads to it without knowing its day
            where = [(day, entry["latest_part"][job_id]) for day, entry in archive.items()
                     if job_id in entry["latest_part"]]
            assert end["job_index"].get(job_id) == where, f"job {job_id} deleted but not findable by its id"
    held = (end["termination_queue"] + end["termination_dlq"]
            + [b for bodies in end["runner_queue_bodies"].values() for b in bodies]
            + [body for _, body in end["queue_archive"]])
    for body in originals["messages"]:
        assert body in held, f"message lost: {body[:60]}"
    # A termination message may go only once its work is done: its job marked, its runner's parameter gone.
    for body, message in originals.get("terminations", {}).items():
        if body in held:
            continue
        job = end["jobs"][message["job_id"]]
        assert job["status"]["S"] == message["status"], f"termination of {message['job_id']} deleted unprocessed"
        assert settings.ssm_parameter_name(message["instance_id"]) not in end["parameters"]


HANG_SECONDS = 60  # a faulty run that takes longer than this has hung


@pytest.fixture()
def no_hang() -> Iterator[None]:
    """Fail the test (instead of blocking the suite) if a run hangs."""
    def hung(signum, frame):
        raise AssertionError(f"scenario still running after {HANG_SECONDS}s: hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _record(piece: str, fault: str, outcome: str, injected: dict[str, int], seconds: float, aws, settings) -> None:
    """With FAULTS_REPORT=path, append one JSON line per scenario (docs/faults.md's table comes from it)."""
    path = os.environ.get("FAULTS_REPORT")
    if path:
        archived = w.queue_archive(aws, settings, {})
        with open(path, "a") as out:
            out.write(json.dumps({"piece": piece, "fault": fault, "faulty_run": outcome, "injected": injected,
                                  "seconds": round(seconds, 1), "queue_messages_archived": len(archived),
                                  "queue_archive_copies": w.archived_queue_copies(aws, settings)}) + "\n")


def _failure_messages(result) -> list[str]:
    """What Dagster reported about each failure, with the error and its causes."""
    out = []
    for e in result.all_events:
        if e.is_failure:
            error = getattr(e.event_specific_data, "error", None)
            out.append((e.message or "") + (" " + error.to_string() if error is not None else ""))
    return out


@pytest.mark.parametrize("piece_name,fault", SCENARIOS, ids=[f"{p}-{f}" for p, f in SCENARIOS])
def test_fault_scenario(piece_name, fault, aws, settings, faults: Faults, stack, moto_url, no_hang):
    from sandbox.deploy import deploy_stack
    from sandbox.server import reset_moto

    piece = PIECES[piece_name]

    def stack_reset():
        reset_moto(moto_url)
        deploy_stack(aws.client("cloudformation"), aws.dynamodb)

    expected = clean_end_state(piece, aws, settings, stack_reset)
    originals = piece.build(aws, settings)

    if fault == "transient":
        faults.transient_every = piece.transient_every
    elif fault == "partial":
        faults.partial_ops = set(piece.partial_ops)
    else:
        faults.crash_op, faults.crash_when = piece.crashes[fault.removeprefix("crash-before-")]

    crashed = None
    started = time.monotonic()
    with faults.armed():
        try:
            result = piece.run(aws, settings)
        except InjectedCrash as crash:  # the process died where the fault said; nothing after it ran
            crashed, result = crash, None
    assert sum(faults.injected.values()) > 0, f"no fault was injected: {faults}"
    outcome = "crashed" if crashed else ("succeeded" if result.success else "failed (reported by Dagster)")

    if fault.startswith("crash"):
        # Either the crash killed the run, or Dagster caught it and reported a failed run.
        if result is not None:
            assert not result.success and any("injected crash" in m for m in _failure_messages(result)), \
                _failure_messages(result)
        else:
            assert "injected crash" in str(crashed)
        after = w.world(aws, settings)
        assert_nothing_lost(settings, originals, after)
        # The crash left work undone, so the convergence below is not vacuous.
        assert after != expected
    else:
        # Transient errors and partial batches: botocore and the code's own retries absorb them,
        # or the run fails through Dagster's reporting, naming what failed.
        assert crashed is None and result is not None
        if not result.success:
            assert _failure_messages(result), "a failed run must say why"
        assert_nothing_lost(settings, originals, w.world(aws, settings))

    # Messages received by the faulty run and not deleted come back after their visibility
    # timeout; the re-run starts after that (moto's clock for them is moved on, as backdating does).
    expire_in_flight(aws.sqs.meta.region_name)
    again = _run_to_rest(piece, aws, settings)
    assert again.success, _failure_messages(again)
    end = w.world(aws, settings)
    assert_nothing_lost(settings, originals, end)
    assert end == expected
    _record(piece_name, fault, outcome, dict(faults.injected), time.monotonic() - started, aws, settings)
