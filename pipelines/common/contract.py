"""The fleet's vocabulary, once: tags, job statuses, queue names, error codes, time format, log-safe text.

Every name here is a name of ``docs/contract.md`` (or of AWS's answers about it); the
capabilities import them from here rather than spelling them again.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timezone

# Tags on a managed EC2 instance.
MANAGED_TAG = "runs-fleet:managed"
POOL_TAG = "runs-fleet:pool"
JOB_ID_TAG = "runs-fleet:job-id"
PROTECT_TAG = "runs-fleet:protect"

# A job record's statuses; the finished ones are what archival takes and termination writes.
FINISHED_STATUSES = ("completed", "failed", "cancelled", "interrupted")
JOB_STATUSES = frozenset({"queued", "running", *FINISHED_STATUSES})

# Per-runner queues: ``{prefix}{kind}-{runner-id}``, and the archive layout's ``queue=`` value.
QUEUE_KINDS = ("input", "output", "dlq")

# What SQS answers for a queue that does not exist (the query and the JSON protocol's codes).
QUEUE_GONE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# A runner id becomes part of an SSM parameter name and three queue names, so it must be a plain
# token: no '/', no spaces. EC2 ids (i-0abc…) and ECS task ids (hex) both fit. SQS names allow 80
# characters; the longest prefix ("…-output-") leaves room for 64.
_RUNNER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
JOB_ID_MAX = 256  # a job id is a table key and is logged: the longest one accepted

# A time as a message gives it: ISO 8601 in UTC (``Z`` or a zero offset), ASCII digits only.
_UTC_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-]00:00)")


def parse_runner_queue_name(name: str, prefix: str) -> tuple[str, str] | None:
    """``{prefix}{kind}-{runner-id}`` → (kind, runner_id); None for any other queue under the prefix."""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix):]
    for kind in QUEUE_KINDS:
        if rest.startswith(kind + "-") and len(rest) > len(kind) + 1:
            return kind, rest[len(kind) + 1:]
    return None


def utc(when: datetime) -> datetime:
    """An aware UTC time (a naive one, as some stand-ins answer, is taken as UTC)."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def iso(when: datetime) -> str:
    """The contract's time format, e.g. 2026-11-22T10:05:14Z (a naive time is taken as UTC)."""
    return utc(when).strftime(TIME_FORMAT)


def parse_iso(value: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset) as an aware UTC datetime; raises ValueError otherwise."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


def parse_day(raw: str) -> date:
    """A day written strictly as YYYY-MM-DD (a partition key, a request's date, a start date); raises
    ValueError saying what is wrong: not that shape, or not a real date."""
    if not _DAY.match(raw):
        raise ValueError("is not a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValueError("is not a real date") from None


def is_runner_id(text: str) -> bool:
    """A plain token fit for a runner's parameter and queue names: letters, digits, '-' or '_', at most 64."""
    return _RUNNER_ID.fullmatch(text) is not None


def parse_utc_time(value: str) -> datetime:
    """A message's time, strictly: the shape ``2026-11-22T10:05:14Z`` (a fraction and ``+00:00`` allowed)
    and a real instant; raises ValueError otherwise."""
    if not _UTC_TIME.fullmatch(value):
        raise ValueError("is not an ISO 8601 UTC time")
    return parse_iso(value)


def _hidden(c: str) -> bool:
    # Control, format, separator or surrogate: a newline forges a log line, a lone surrogate cannot be
    # written as UTF-8, a right-to-left mark hides what is shown.
    return unicodedata.category(c)[0] in "CZ"


def plain_token(text: str) -> bool:
    """One visible token (an id that is logged and used as a key): no space, control, format, separator
    or surrogate character."""
    return not any(_hidden(c) for c in text)


def loggable(text: str, limit: int) -> str:
    """Outside text, safe on one log line: at most ``limit`` characters, and every control, format,
    separator or surrogate character (a newline would forge a log line) shown as '?'."""
    return "".join(c if c == " " or not _hidden(c) else "?" for c in text[:limit])


def md_cell(text: object) -> str:
    """A value fit for one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def object_link(bucket: str, key: str, region: str | None, endpoint: str | None = None) -> str:
    """Where a person opens an archive object: the AWS console's object page (region-aware). Against a
    local stand-in (``AWS_ENDPOINT_URL``, e.g. the sandbox's moto) no console exists and its objects are
    private, so the answer is the CLI line that prints the object instead."""
    from urllib.parse import quote

    if endpoint:
        return f"aws --endpoint-url {endpoint.rstrip('/')} s3 cp s3://{bucket}/{key} -"
    region = region or "us-east-1"
    return (f"https://{region}.console.aws.amazon.com/s3/object/{quote(bucket)}"
            f"?region={quote(region)}&bucketType=general&prefix={quote(key, safe='')}")
