"""A queue message as one archive line, exactly: body, ids, every attribute, binary ones as base64.

The archive object is gzip JSON Lines (the contract's ``queues/runner_id=…/queue=…/archived_at=….jsonl.gz``).
A message attribute is kept in SQS's own JSON wire form, ``{"DataType": …, "StringValue": …}``
or ``{"DataType": …, "BinaryValue": "<base64>"}``: the data type is kept verbatim (custom types
such as ``Number.int``, ``String.custom``, ``Binary.gif`` included), and base64 is how SQS
itself carries binary values in JSON. boto3 hands binary values over as ``bytes``, which
``json`` cannot write; encoding them here, explicitly, is what keeps one such message from
failing every archive of its queue.

Verification reads the object back and checks it against what SQS said, not only against
what was written: each line must equal the record written, its body must hash to SQS's
``MD5OfBody`` and its attributes, decoded from the archive, to SQS's ``MD5OfMessageAttributes``
(the algorithm SQS documents for that digest).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import struct
from typing import Any

# Field tags of SQS's MD5OfMessageAttributes algorithm.
_STRING_FIELD, _BINARY_FIELD, _STRING_LIST_FIELD, _BINARY_LIST_FIELD = 1, 2, 3, 4


class ArchiveVerificationError(RuntimeError):
    """An archive object read back does not match what was written (or what SQS holds); nothing was deleted."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def attribute_record(value: dict[str, Any]) -> dict[str, Any]:
    """One message attribute as archived: SQS's JSON form, binary values (and lists of them) in base64."""
    record: dict[str, Any] = {"DataType": value["DataType"]}
    if "StringValue" in value:
        record["StringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        record["BinaryValue"] = _b64(value["BinaryValue"])
    if value.get("StringListValues"):
        record["StringListValues"] = list(value["StringListValues"])
    if value.get("BinaryListValues"):
        record["BinaryListValues"] = [_b64(v) for v in value["BinaryListValues"]]
    return record


def archive_record(message: dict[str, Any]) -> dict[str, Any]:
    """A received message (ReceiveMessage with every system and message attribute) as one archive record."""
    attributes = dict(message.get("Attributes", {}))
    return {
        "message_id": message["MessageId"],
        "body": message["Body"],
        "md5_of_body": message.get("MD5OfBody"),
        "attributes": attributes,  # system attributes: SentTimestamp, ApproximateReceiveCount, MessageGroupId, …
        "message_attributes": {name: attribute_record(v) for name, v in message.get("MessageAttributes", {}).items()},
        "md5_of_message_attributes": message.get("MD5OfMessageAttributes"),
        "sent_timestamp": attributes.get("SentTimestamp"),
    }


def attributes_md5(attributes: dict[str, dict[str, Any]]) -> str:
    """SQS's MD5OfMessageAttributes of archived attributes (base64 decoded back to the bytes SQS hashed)."""
    digest = hashlib.md5(usedforsecurity=False)

    def length_prefixed(data: bytes) -> None:
        digest.update(struct.pack("!I", len(data)))
        digest.update(data)

    for name in sorted(attributes):
        value = attributes[name]
        length_prefixed(name.encode())
        length_prefixed(value["DataType"].encode())
        if "StringValue" in value:
            digest.update(bytes([_STRING_FIELD]))
            length_prefixed(value["StringValue"].encode())
        elif "BinaryValue" in value:
            digest.update(bytes([_BINARY_FIELD]))
            length_prefixed(base64.b64decode(value["BinaryValue"], validate=True))
        elif "StringListValues" in value:
            digest.update(bytes([_STRING_LIST_FIELD]))
            for item in value["StringListValues"]:
                length_prefixed(item.encode())
        elif "BinaryListValues" in value:
            digest.update(bytes([_BINARY_LIST_FIELD]))
            for item in value["BinaryListValues"]:
                length_prefixed(base64.b64decode(item, validate=True))
    return digest.hexdigest()


def encode_archive(records: list[dict[str, Any]]) -> bytes:
    return gzip.compress("".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())


def check_read_back(uri: str, stored: bytes, records: list[dict[str, Any]]) -> None:
    """Raise ArchiveVerificationError unless ``stored`` holds exactly ``records`` and each matches SQS's digests."""
    try:
        lines = gzip.decompress(stored).decode().splitlines()
        read = [json.loads(line) for line in lines]
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as error:
        raise ArchiveVerificationError(f"{uri}: not readable gzip JSON Lines: {error}") from error
    if len(read) != len(records):
        raise ArchiveVerificationError(f"{uri}: read back {len(read)} records, wrote {len(records)}")
    for back, written in zip(read, records):
        if back != written:
            raise ArchiveVerificationError(f"{uri}: message {written['message_id']} read back differs from what was written")
        if back["md5_of_body"] and hashlib.md5(back["body"].encode(), usedforsecurity=False).hexdigest() != back["md5_of_body"]:
            raise ArchiveVerificationError(f"{uri}: message {back['message_id']}: body does not match SQS's MD5OfBody")
        if back["md5_of_message_attributes"] and attributes_md5(back["message_attributes"]) != back["md5_of_message_attributes"]:
            raise ArchiveVerificationError(
                f"{uri}: message {back['message_id']}: attributes do not match SQS's MD5OfMessageAttributes")
