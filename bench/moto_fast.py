"""moto's superlinear paths, replaced in-process for the benchmarks only (never product code).

Each patch returns the same answer as moto's own code, only sooner; ``tests/bench/`` checks
that on a small fleet (answers with and without the patches, compared). :func:`apply`
installs them all and returns a function that puts moto back.

| patch | moto's cost | here |
|---|---|---|
| ``ec2_tag_lookup`` | every tag lookup of a resource scans every tag of every resource (several per instance per DescribeInstances): quadratic | the backend's tag dict, one lookup |
| ``ec2_instance_ids`` | DescribeInstances with ``InstanceIds`` tests every id against every reservation (ids x reservations per call) | a set |
| ``ssm_describe`` | DescribeParameters filters every parameter for each page, 10 a page whatever ``MaxResults`` says; a ``Name`` filter tests each parameter against every name | one filtered list per pagination (recomputed on page 1 and after any write), ``MaxResults`` honoured up to AWS's 50; a ``Name`` (Equals) filter looks the names up |
| ``sqs_retention`` | each received message's retention check builds every queue attribute, counting all messages: quadratic per receive | the queue's retention period read directly |
| ``sqs_send`` | validating and sending each message builds every queue attribute twice, each counting all its messages (a 10,000-message FIFO queue: hours to fill) | while a message is validated and sent, the one attribute read (ContentBasedDeduplication) is read directly; the visible-messages list reads the clock once, not twice per message |
| ``dynamodb_transact`` | ``TransactWriteItems`` deep-copies every table it names before each transaction (100,000 records per 100 deletes) | conditions checked first for all items; nothing written unless all pass; the items written are snapshotted and put back if a write fails |
| ``dynamodb_json`` | moto 5.2's model-driven response serialiser (~5 ms an item) | ``json.dumps`` of the same wire dict |
| ``serializer_keys`` | the same serialiser works out every attribute's possible names (six alias rules) for every object it writes: ~5 ms an instance in a DescribeInstances page | the names worked out once per (picker, class, attribute, shape) |

What a patch changes besides speed: ``ssm_describe`` pages by ``MaxResults`` (1-50) as AWS
does, where moto always pages 10, so the page count differs (the concatenated answer does
not); ``dynamodb_transact`` does not reproduce moto's error entries for a write that fails
*after* another item's condition failed (moto then reports both).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from typing import Any

_undo: list[Callable[[], None]] = []


def _swap(owner: Any, name: str, new: Any) -> None:
    if name in owner.__dict__:
        old = owner.__dict__[name]
        _undo.append(lambda: setattr(owner, name, old))
    else:  # inherited: undo by removing the override
        _undo.append(lambda: delattr(owner, name))
    setattr(owner, name, new)


def ec2_tag_lookup() -> None:
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self):
        resource_id = getattr(self, "id", None)
        if not resource_id:
            return []
        tags = self.ec2_backend.tags.get(resource_id) or {}
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [{"resource_id": resource_id, "key": k, "value": v, "resource_type": kind} for k, v in tags.items()]

    _swap(TaggedEC2Resource, "get_tags", get_tags)


def ec2_instance_ids() -> None:
    from moto.ec2.exceptions import InvalidInstanceIdError
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.utils import filter_reservations

    def get_reservations_by_instance_ids(self, instance_ids, filters=None):
        wanted = set(instance_ids)
        reservations = []
        for reservation in self.all_reservations():
            if any(instance.id in wanted for instance in reservation.instances):
                reservation.instances = [i for i in reservation.instances if i.id in wanted]
                reservations.append(reservation)
        found = [i.id for r in reservations for i in r.instances]
        if len(found) != len(instance_ids):
            raise InvalidInstanceIdError(list(set(instance_ids).difference(set(found)))[0])
        if filters is not None:
            reservations = filter_reservations(reservations, filters)
        return reservations

    _swap(InstanceBackend, "get_reservations_by_instance_ids", get_reservations_by_instance_ids)


def ssm_describe() -> None:
    from moto.core.responses import ActionResult
    from moto.ssm.models import SimpleSystemManagerBackend
    from moto.ssm.responses import SimpleSystemManagerResponse

    original = SimpleSystemManagerBackend.describe_parameters
    # moto's server answers each request on a thread of its own: one cache for all of them.
    cache: dict[tuple, tuple[int, list]] = {}
    cache_lock = threading.Lock()
    versions: dict[int, int] = {}  # id(backend) -> writes seen

    def bump(method_name: str) -> None:
        method = SimpleSystemManagerBackend.__dict__[method_name]

        def wrapper(self, *args, **kwargs):
            versions[id(self)] = versions.get(id(self), 0) + 1
            return method(self, *args, **kwargs)

        _swap(SimpleSystemManagerBackend, method_name, wrapper)

    for name in ("put_parameter", "delete_parameter", "delete_parameters", "add_tags_to_resource",
                 "remove_tags_from_resource", "label_parameter_version", "unlabel_parameter_version"):
        if name in SimpleSystemManagerBackend.__dict__:
            bump(name)

    def describe_parameters(self, filters, parameter_filters):
        names = None
        for f in parameter_filters or []:
            if f.get("Key") == "Name" and f.get("Option", "Equals") == "Equals":
                names = ["/" + v.lstrip("/") for v in f.get("Values", [])]
        if names is None or filters:
            return original(self, filters, parameter_filters)
        self._validate_parameter_filters(parameter_filters, by_path=False)
        order = {n: k for k, n in enumerate(self._parameters)}
        hits = []
        lookup = {}
        for wanted in set(names):
            for name in (wanted, wanted.lstrip("/")):
                if name in self._parameters:
                    lookup[name] = True
        for name in sorted(lookup, key=order.__getitem__):
            parameter = self.get_parameter(name)
            if self._match_filters(parameter, parameter_filters):
                hits.append(parameter)
        return hits

    def response(self) -> ActionResult:
        max_results = self._get_param("MaxResults")
        page_size = min(int(max_results), 50) if max_results else 10
        filters = self._get_param("Filters")
        parameter_filters = self._get_param("ParameterFilters")
        token = self._get_param("NextToken")
        token = int(token.strip()) if isinstance(token, str) and token.strip() else 0
        key = (id(self.ssm_backend), json.dumps([filters, parameter_filters], sort_keys=True, default=str))
        version = versions.get(id(self.ssm_backend), 0)
        with cache_lock:
            cached = cache.get(key)
        if token == 0 or cached is None or cached[0] != version:
            result = self.ssm_backend.describe_parameters(filters, parameter_filters)
            with cache_lock:
                if len(cache) > 64:
                    cache.clear()
                cache[key] = (version, result)
        else:
            result = cached[1]
        page = result[token:token + page_size]
        body: dict[str, Any] = {"Parameters": [p.describe_response_object(False) for p in page]}
        if len(page) == page_size and token + page_size <= len(result):
            body["NextToken"] = str(token + page_size)
        return ActionResult(body)

    _swap(SimpleSystemManagerBackend, "describe_parameters", describe_parameters)
    _swap(SimpleSystemManagerResponse, "describe_parameters", response)


def sqs_retention() -> None:
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    def is_message_valid_based_on_retention_period(self, queue_name, message):
        queue = self.get_queue(queue_name)
        return int(queue.message_retention_period) + message.sent_timestamp / 1000 > unix_time()

    _swap(SQSBackend, "is_message_valid_based_on_retention_period", is_message_valid_based_on_retention_period)


def sqs_send() -> None:
    from moto.core.utils import unix_time_millis
    from moto.sqs.models import Queue, SQSBackend

    full = Queue.__dict__["attributes"]
    cheap = threading.local()

    def attributes(self):
        # While a message is validated and sent, moto reads only ContentBasedDeduplication
        # from every queue attribute it builds (counting all messages, twice per message).
        if getattr(cheap, "on", 0):
            value = getattr(self, "content_based_deduplication", None)
            return {"ContentBasedDeduplication": str(value).lower() if isinstance(value, bool) else value}
        return full.fget(self)

    def sending(method_name: str) -> None:
        method = SQSBackend.__dict__[method_name]

        def wrapper(self, *args, **kwargs):
            cheap.on = getattr(cheap, "on", 0) + 1
            try:
                return method(self, *args, **kwargs)
            finally:
                cheap.on -= 1

        _swap(SQSBackend, method_name, wrapper)

    _swap(Queue, "attributes", property(attributes))
    for name in ("_validate_message", "send_message"):
        sending(name)

    def messages(self):
        # One clock reading for the whole list instead of two per message (datetime-based).
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    _swap(Queue, "messages", property(messages))


def dynamodb_transact() -> None:
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models import get_filter_expression as filter_expression  # the one moto's own uses

    def transact_write_items(self, transact_items):
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        seen: set[tuple[str, str]] = set()
        planned = []
        errors: list = []
        for item in transact_items:
            if len(list(item.keys())) > 1:
                raise TransactWriteSingleOpException
            original_item = None
            try:
                op_type, op = next(iter(item.items()))
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    raise ValueError("Unsupported transaction operation")
                table_name = op["TableName"]
                if op_type == "Put":
                    table = self.get_table(table_name)
                    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = op["Item"][table.range_key_attr]
                else:
                    key = op["Key"]
                marker = (str(table_name), str(dict(sorted(key.items()))))
                if marker in seen:
                    raise MultipleTransactionsException()
                seen.add(marker)
                current = self.get_item(table_name, key)
                condition = op.get("ConditionExpression")
                if condition is not None:
                    check = filter_expression(condition, op.get("ExpressionAttributeNames"),
                                              op.get("ExpressionAttributeValues"))
                    if not check.expr(current):
                        if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                            original_item = current.to_json()["Attributes"]
                        raise ConditionalCheckFailed(item=original_item)
                planned.append((op_type, op, table_name, key, current))
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                raise
            except ConditionalCheckFailed as e:
                errors.append(("ConditionalCheckFailed", str(e.message), original_item))
            except Exception as e:  # noqa: BLE001 - moto's own shape
                errors.append((type(e).__name__, str(e), original_item))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        snapshots = [(table_name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None)
                     for _, _, table_name, key, current in planned]
        try:
            for op_type, op, table_name, key, _ in planned:
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                condition = op.get("ConditionExpression")
                if op_type == "Put":
                    self.put_item(table_name, op["Item"], condition_expression=condition,
                                  expression_attribute_names=names, expression_attribute_values=values)
                elif op_type == "Delete":
                    self.delete_item(table_name, key, condition_expression=condition,
                                     expression_attribute_names=names, expression_attribute_values=values)
                elif op_type == "Update":
                    self.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                     condition_expression=condition, expression_attribute_names=names,
                                     expression_attribute_values=values)
        except Exception as e:
            for table_name, key, before in snapshots:
                if before is None:
                    if self.get_item(table_name, key) is not None:
                        self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, before)
            raise TransactionCanceledException([(type(e).__name__, str(e), None)]) from e

    _swap(DynamoDBBackend, "transact_write_items", transact_write_items)


def serializer_keys() -> None:
    from moto.core import serialize

    picker = serialize.AttributePicker
    original = picker.__dict__["__call__"]
    cache: dict[tuple, tuple[Any, list[str]]] = {}
    transforms: dict[tuple, list] = {}  # pickers live as long as moto's responses: ids are not reused

    def __call__(self, context):
        obj, shape = context.obj, context.shape
        if "Meta" in getattr(obj, "__dict__", ()):  # an object's own aliases: as moto does
            return original(self, context)
        # The aliases depend on the picker, the object's class, the key and the shape only; the
        # shape is kept alive with its entry so its id is never reused for another.
        key = (type(self), type(obj), context.key, id(shape))
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = (shape, list(self.get_possible_keys(context)))
        for possible_key in hit[1]:
            value = serialize.get_value(obj, possible_key, serialize.MISSING)
            if value is not serialize.MISSING:
                break
        else:
            value = None
        if self.response_transformers:
            # Only a transform whose path ends in this key can match ``key_path.endswith(path)``:
            # a dotted path's last name equal to the key, or an undotted one the key ends with.
            tkey = (id(self), context.key)
            candidates = transforms.get(tkey)
            if candidates is None:
                candidates = transforms[tkey] = [
                    (path, transform) for path, transform in self.response_transformers.items()
                    if (path.rsplit(".", 1)[-1] == context.key if "." in path else context.key.endswith(path))]
            if candidates:
                key_path = f"{context.key_path}.{context.key}"
                for transform_path, transform in candidates:
                    if key_path.endswith(transform_path):
                        return transform(value)
        return value

    _swap(picker, "__call__", __call__)


def dynamodb_json() -> None:
    from moto.dynamodb.responses import DynamoResult

    original = DynamoResult.execute_result

    def execute_result(self, context):
        try:
            body = json.dumps(self.result)
        except TypeError:
            return original(self, context)
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, body

    _swap(DynamoResult, "execute_result", execute_result)


PATCHES = {
    "ec2_tag_lookup": ec2_tag_lookup, "ec2_instance_ids": ec2_instance_ids, "ssm_describe": ssm_describe,
    "sqs_retention": sqs_retention, "sqs_send": sqs_send, "dynamodb_transact": dynamodb_transact, "dynamodb_json": dynamodb_json,
    "serializer_keys": serializer_keys,
}


def apply(names: tuple[str, ...] | None = None) -> Callable[[], None]:
    """Install the named patches (default: all); returns a function that undoes them."""
    start = len(_undo)
    for name in names or tuple(PATCHES):
        PATCHES[name]()
    mine = _undo[start:]
    del _undo[start:]

    def undo() -> None:
        for restore in reversed(mine):
            restore()

    return undo


def one_instance_per_reservation(region: str) -> int:
    """Split moto's multi-instance reservations so DescribeInstances pages by instance, as AWS does.

    Seeding launches instances in bulk (RunInstances of hundreds a call) and moto pages
    DescribeInstances by reservation, so a fleet of 10,000 would fit one page; AWS pages by
    instance (``MaxResults`` instances). With one instance per reservation the two agree.
    Returns the reservation count.
    """
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import Reservation
    from moto.ec2.utils import random_reservation_id

    from sandbox.server import MOTO_ACCOUNT_ID

    backend = ec2_backends[MOTO_ACCOUNT_ID][region]
    split = {}
    for rid, reservation in list(backend.reservations.items()):
        if len(reservation.instances) <= 1:
            split[rid] = reservation
            continue
        for n, instance in enumerate(reservation.instances):
            new = Reservation(rid if n == 0 else random_reservation_id(), reservation.owner_id)
            new.groups = list(reservation.groups)
            new.instances = [instance]
            split[new.id] = new
    backend.reservations.clear()
    backend.reservations.update(split)
    return len(split)
