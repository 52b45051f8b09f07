"""A job record as one archive line: a DynamoDB item <-> one line of plain JSON, exactly.

The archive is read by people and by Athena, DuckDB or pandas, so a line is the record as
plain JSON (``{"job_id": "8812", "exit_code": 0, ...}``), not DynamoDB's typed form. The
mapping is a bijection for the types a JSON document can hold: S <-> string, N <-> number
(the digits DynamoDB returned, written verbatim, read back verbatim), BOOL <-> true/false,
NULL <-> null, M <-> object, L <-> array. A record with a type JSON has no exact form for
(string/number/binary sets, binary) cannot be archived faithfully, so it raises
``UnarchivableRecord`` and the caller keeps it in the table and reports it.

Keys are written sorted, so equal items always give byte-identical lines: that is what lets
a re-run recognise a record that is already in the archive by comparing lines.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
import re
from typing import Any

# JSON's number grammar; DynamoDB returns numbers normalised, which always match it.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?\Z")


class UnarchivableRecord(ValueError):
    """The record holds a value the plain-JSON archive cannot reproduce exactly; it is kept."""


class _Number(str):
    """A JSON number's original text, so decoding gives back DynamoDB's exact digits."""


def _encode_value(value: dict[str, Any], path: str) -> str:
    if not isinstance(value, dict) or len(value) != 1:
        raise UnarchivableRecord(f"attribute {path} is not a DynamoDB typed value")
    ((kind, inner),) = value.items()
    if kind == "S":
        return json.dumps(inner)
    if kind == "N":
        if not isinstance(inner, str) or not _JSON_NUMBER.match(inner):
            raise UnarchivableRecord(f"attribute {path} holds number {inner!r}, which is not a JSON number")
        return inner
    if kind == "BOOL":
        return "true" if inner else "false"
    if kind == "NULL":
        return "null"
    if kind == "M":
        return _encode_map(inner, path)
    if kind == "L":
        return "[" + ",".join(_encode_value(v, f"{path}[{i}]") for i, v in enumerate(inner)) + "]"
    raise UnarchivableRecord(f"attribute {path} has DynamoDB type {kind}, which plain JSON cannot hold exactly")


def _encode_map(item: dict[str, dict[str, Any]], path: str = "") -> str:
    fields = (f"{json.dumps(name)}:{_encode_value(item[name], f'{path}.{name}' if path else name)}" for name in sorted(item))
    return "{" + ",".join(fields) + "}"


def encode_record(item: dict[str, dict[str, Any]]) -> str:
    """The record's archive line (no newline): plain JSON, keys sorted, numbers verbatim."""
    return _encode_map(item)


def _to_typed(value: Any) -> dict[str, Any]:
    if isinstance(value, _Number):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, dict):
        return {"M": {k: _to_typed(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"L": [_to_typed(v) for v in value]}
    raise ValueError(f"unexpected JSON value of type {type(value).__name__}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid in an archive line")


def decode_record(line: str) -> dict[str, dict[str, Any]]:
    """The DynamoDB item an archive line holds; ``encode_record(decode_record(l)) == l`` for every line we write."""
    value = json.loads(line, parse_int=_Number, parse_float=_Number, parse_constant=_no_constants)
    if not isinstance(value, dict):
        raise ValueError("an archive line must be a JSON object")
    return {k: _to_typed(v) for k, v in value.items()}


def job_id_of(item: dict[str, dict[str, Any]]) -> str:
    """The record's key, or UnarchivableRecord if it has none a delete could name."""
    value = item.get("job_id", {})
    if not isinstance(value, dict) or not isinstance(value.get("S"), str) or not value["S"]:
        raise UnarchivableRecord("record has no string job_id")
    return value["S"]


def completed_at_of(item: dict[str, dict[str, Any]]) -> str:
    value = item.get("completed_at", {})
    return value.get("S", "") if isinstance(value, dict) else ""


def instant_key(timestamp: str) -> tuple[int, Any]:
    """Chronological sort key of an ISO 8601 timestamp string.

    Plain string order is wrong once fractional seconds appear: ``…23:59:59Z`` sorts after
    ``…23:59:59.999999Z`` because ``Z`` > ``.``. Unparseable values sort after every real instant.
    """
    try:
        moment = datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return (1, timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # the contract's timestamps are UTC
    return (0, moment)


def earliest(*timestamps: str) -> str:
    present = [t for t in timestamps if t]
    return min(present, key=instant_key) if present else ""


def latest(*timestamps: str) -> str:
    present = [t for t in timestamps if t]
    return max(present, key=instant_key) if present else ""
