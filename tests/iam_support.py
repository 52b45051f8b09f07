"""IAM helpers for the least-privilege tests: principals on the moto server, call counting, enforcement.

Three facts about moto 5 shape this module (see docs/least-privilege.md):

- moto checks IAM only once its request counter passes ``moto.settings.INITIAL_NO_AUTH_ACTION_COUNT``
  (default: never). The session's moto server runs in this process, so ``iam_enforced()`` lowers
  that setting for one block and always restores it.
- moto names an action by the *API operation* (``sqs:DeleteMessageBatch``) under the *signing
  name* (``monitoring:PutMetricData``), where IAM names ``sqs:DeleteMessage`` and
  ``cloudwatch:PutMetricData``.
- moto matches a statement's Resource against the request's resource only for SQS (the queue's
  ARN) and S3 (bucket / object ARN); every other service asks about resource ``"*"``, which a
  scoped ARN never matches. Conditions are never given context values, so they never decide.

``moto_enforceable(document)`` therefore turns the deployed policy into one statement per
action, under moto's names for it, keeping the template's own resources where moto can check
them (SQS, S3) and ``"*"`` elsewhere. It grants exactly the template's action set, nothing more.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from moto import settings as moto_settings
from moto.core.authorization import ActionAuthenticatorMixin

from resources.aws import AwsClients, add_client_observer

# API operations whose IAM action has another name (AWS's Service Authorization Reference).
IAM_ACTION_OF_CALL: dict[str, str] = {
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:DeleteObjects": "s3:DeleteObject",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    # TransactWriteItems has no IAM action of its own: each action inside is authorised as its
    # single-item operation (AWS: "Using IAM with DynamoDB transactions"). The project's only
    # transactions are archival's conditional deletes, so the call needs dynamodb:DeleteItem.
    "dynamodb:TransactWriteItems": "dynamodb:DeleteItem",
}

# The name moto's request signature carries for a service, where it is not the IAM prefix.
MOTO_SIGNING_NAME = {"cloudwatch": "monitoring"}

# Operations for which moto's SQS cannot tell the queue (no QueueUrl parameter): it asks about "*".
SQS_UNADDRESSED = {"sqs:GetQueueUrl", "sqs:ListQueues"}


def iam_action(call: str) -> str:
    """The IAM action an API call ("service:Operation", boto3 service name) needs."""
    return IAM_ACTION_OF_CALL.get(call, call)


def policy_document(iam: Any, policy_arn: str) -> dict[str, Any]:
    policy = iam.get_policy(PolicyArn=policy_arn)["Policy"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=policy["DefaultVersionId"])["PolicyVersion"]["Document"]
    return json.loads(document) if isinstance(document, str) else document


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_actions(document: dict[str, Any]) -> set[str]:
    """Every action the policy allows (the template lists them; no wildcards, test_infra checks)."""
    return {action for statement in document["Statement"] for action in _as_list(statement["Action"])}


def resources_by_action(document: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for statement in document["Statement"]:
        for action in _as_list(statement["Action"]):
            found[action] += [r for r in _as_list(statement["Resource"]) if r not in found[action]]
    return dict(found)


def moto_names(action: str) -> list[str]:
    """The action names moto may check for IAM ``action`` (the action itself, its batch calls, its signing name)."""
    service, operation = action.split(":", 1)
    # moto checks SQS batch calls and DynamoDB transactions under the API operation's own name.
    names = [action] + [call for call, needs in IAM_ACTION_OF_CALL.items()
                        if needs == action and service in ("sqs", "dynamodb")]
    if service in MOTO_SIGNING_NAME:
        names += [f"{MOTO_SIGNING_NAME[service]}:{name.split(':', 1)[1]}" for name in list(names)]
    return names


def moto_enforceable(document: dict[str, Any], without: str | None = None) -> dict[str, Any]:
    """The deployed policy as moto can enforce it: one statement per action (all but ``without``)."""
    statements = []
    for action, resources in sorted(resources_by_action(document).items()):
        if action == without:
            continue
        service = action.split(":", 1)[0]
        keeps_resource = service == "s3" or (service == "sqs" and action not in SQS_UNADDRESSED)
        statements.append({
            "Sid": "".join(ch for ch in action.title() if ch.isalnum()),
            "Effect": "Allow",
            "Action": moto_names(action),
            "Resource": resources if keeps_resource else "*",
        })
    return {"Version": "2012-10-17", "Statement": statements}


def make_principal(iam: Any, document: dict[str, Any], name: str | None = None) -> AwsClients:
    """An IAM user holding only ``document`` (as a managed policy), and the project's AWS resource for it."""
    name = name or f"housekeeping-{uuid.uuid4().hex[:8]}"
    arn = iam.create_policy(PolicyName=f"{name}-policy", PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    iam.create_user(UserName=name)
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    # Denied calls are not retried by botocore; short timeouts keep a wedged call from hanging the test.
    return AwsClients(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                      connect_timeout=5, read_timeout=20)


@contextmanager
def iam_enforced() -> Iterator[None]:
    """moto checks every request's signature and policy inside the block; the previous state comes back after."""
    previous = (moto_settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count)
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = previous


class CallRecorder:
    """Counts every AWS call ("service:Operation") per piece, and which calls were denied.

    Hooks botocore's events on every client ``resources.aws`` creates while installed; the
    piece being run is whatever ``piece`` was set to last (workers threads included).
    """

    def __init__(self) -> None:
        self.piece = "-"
        self.calls: dict[str, Counter[str]] = defaultdict(Counter)
        self.denied: dict[str, Counter[str]] = defaultdict(Counter)
        self._lock = threading.Lock()
        self._remove: Callable[[], None] | None = None

    def _observe(self, client: Any) -> None:
        service = client.meta.service_model.service_name

        def before(model: Any, **_: Any) -> None:
            with self._lock:
                self.calls[self.piece][f"{service}:{model.name}"] += 1

        def after(model: Any, http_response: Any, parsed: Any, **_: Any) -> None:
            code = str((parsed or {}).get("Error", {}).get("Code", ""))
            if http_response.status_code == 403 or "AccessDenied" in code:
                with self._lock:
                    self.denied[self.piece][f"{service}:{model.name}"] += 1

        client.meta.events.register("before-call", before)
        client.meta.events.register("after-call", after)

    def __enter__(self) -> CallRecorder:
        self._remove = add_client_observer(self._observe)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._remove:
            self._remove()

    def actions(self, piece: str) -> set[str]:
        return {iam_action(call) for call in self.calls[piece]}

    def denied_actions(self, piece: str) -> set[str]:
        return {iam_action(call) for call in self.denied[piece]}
