"""How the code location reaches AWS: one grouped Dagster resource of boto3 clients.

Built on dagster-aws's ``ResourceWithBoto3Configuration`` (region, profile, endpoint,
credentials, max attempts) plus botocore's retry mode. Anything left unset falls through to
botocore's own environment handling, which is what makes the same code run against a moto
server or LocalStack (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``) and real AWS
(unset).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field, PrivateAttr

from resources.settings import SettingsError

SERVICES = ("ec2", "ecs", "sqs", "dynamodb", "ssm", "s3", "cloudwatch")
RETRY_MODES = ("legacy", "standard", "adaptive")

# Called with every client this module creates. Benchmarks count calls and the fault tests
# inject errors through botocore's event system on the real clients, never by patching
# project code.
_client_observers: list[Callable[[Any], None]] = []


# Creating a boto3 session loads botocore's service models again (close to a second for a
# few clients), and Dagster builds a fresh resource for every run, so sessions are shared
# per identity. Client creation from a shared session is not thread-safe: one lock.
_sessions: dict[tuple[str | None, ...], boto3.session.Session] = {}
_sessions_lock = threading.Lock()
# AwsClients.replaced's instances, by configuration (their clients follow forget_sessions: see client()).
_variants: dict[tuple, "AwsClients"] = {}
_variants_lock = threading.Lock()


def forget_sessions() -> None:
    """Drop the shared sessions (and with them assumed-role credentials): every client is made anew on
    next use. For a stand-in that forgets its identities (a reset moto server); AWS never needs it."""
    with _sessions_lock:
        _sessions.clear()


def add_client_observer(observer: Callable[[Any], None]) -> Callable[[], None]:
    """Register ``observer(client)`` for every new client; returns a function that removes it."""
    _client_observers.append(observer)
    return lambda: _client_observers.remove(observer)


class AwsClients(ResourceWithBoto3Configuration):
    """Boto3 clients for EC2, ECS, SQS, DynamoDB, SSM, S3 and CloudWatch, sharing one configuration.

    Unset fields fall back to botocore's environment: AWS_DEFAULT_REGION, AWS_PROFILE,
    AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>; ``load_aws_clients`` also takes AWS_REGION.
    """

    retry_mode: Literal["legacy", "standard", "adaptive"] = Field(
        default="standard",
        description="botocore retry mode: standard (backoff with jitter) or adaptive (adds client-side rate limiting).",
    )
    connect_timeout: float = Field(default=10.0, description="Seconds to wait for a connection.")
    read_timeout: float = Field(default=60.0, description="Seconds to wait for a response (long polls wait 20 s).")
    role_arn: str | None = Field(default=None, description="A fleet's role, assumed with the identity above (RUNS_FLEET_FLEETS).")
    external_id: str | None = Field(default=None, description="The ExternalId sts:AssumeRole sends for role_arn.")

    _clients: dict[str, tuple[Any, Any]] = PrivateAttr(default_factory=dict)  # service -> (session, client)

    def _session(self) -> boto3.session.Session:
        """The shared session of this identity (call with ``_sessions_lock`` held)."""
        key = (self.profile_name, self.region_name, self.aws_access_key_id, self.aws_secret_access_key,
               self.aws_session_token, self.role_arn, self.external_id)
        if key not in _sessions:
            source = boto3.session.Session(
                profile_name=self.profile_name,
                region_name=self.region_name,
                aws_access_key_id=self.aws_access_key_id,
                aws_secret_access_key=self.aws_secret_access_key,
                aws_session_token=self.aws_session_token,
            )
            _sessions[key] = source if self.role_arn is None else self._assumed(source)
        return _sessions[key]

    def _assumed(self, source: boto3.session.Session) -> boto3.session.Session:
        """A session whose credentials are ``role_arn`` assumed with ``source``'s: botocore's own assume-role
        fetcher and refreshable credentials (fetched on first use, refreshed before they expire)."""
        extra: dict[str, str] = {"RoleSessionName": "runs-fleet-housekeeping"}
        if self.external_id:
            extra["ExternalId"] = self.external_id
        source_credentials = source.get_credentials()
        if source_credentials is None:
            raise RuntimeError(f"no credentials to assume {self.role_arn} with")
        def sts_client(*args: Any, **kwargs: Any) -> Any:
            # Observed like every other client: benchmarks count AssumeRole, fault tests deny it.
            client = source.client(*args, **kwargs)
            for observe in list(_client_observers):
                observe(client)
            return client

        fetcher = AssumeRoleCredentialFetcher(
            client_creator=sts_client, source_credentials=source_credentials, role_arn=self.role_arn,
            extra_args=extra,
        )
        botocore_session = botocore.session.get_session()
        # botocore has no public setter for a session's credential provider; this is how its own
        # assume-role provider's result is attached (boto3 reads it through get_credentials()).
        botocore_session._credentials = DeferredRefreshableCredentials(  # noqa: SLF001
            method="assume-role", refresh_using=fetcher.fetch_credentials)
        return boto3.session.Session(botocore_session=botocore_session, region_name=self.region_name)

    def replaced(self, **changes: Any) -> "AwsClients":
        """This resource with some fields changed (a fleet's region and role, a sensor tick's short timeouts),
        one instance per distinct configuration in the process, so its boto3 clients are built once and not
        on every tick or run."""
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        fields.update(changes)
        key = (type(self), tuple(sorted((k, repr(v)) for k, v in fields.items())))
        with _variants_lock:
            if key not in _variants:
                _variants[key] = type(self)(**fields)
            return _variants[key]

    def credentials(self) -> Any:
        """This identity's current credentials, fetched now (for a role: assumed now, or failing now)."""
        with _sessions_lock:
            session = self._session()
        credentials = session.get_credentials()
        return credentials.get_frozen_credentials() if credentials is not None else None

    def client(self, service: str) -> Any:
        """A cached boto3 client for ``service`` (boto3 clients are thread-safe)."""
        with _sessions_lock:
            session = self._session()
            cached = self._clients.get(service)
            # A client belongs to its session: one made before ``forget_sessions`` is made again.
            if cached is not None and cached[0] is session:
                return cached[1]
            config = Config(
                retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                max_pool_connections=20,
            )
            kwargs: dict[str, Any] = {"config": config, "use_ssl": self.use_ssl, "verify": self.verify}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            client = session.client(service, **kwargs)
            for observe in list(_client_observers):
                observe(client)
            self._clients[service] = (session, client)
            return client

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def ecs(self) -> Any:
        return self.client("ecs")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def cloudwatch(self) -> Any:
        return self.client("cloudwatch")


def load_aws_clients(environ: Mapping[str, str] | None = None) -> AwsClients:
    """Build the AWS resource from the environment, failing now on values botocore would reject later."""
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    raw_attempts = env.get("AWS_MAX_ATTEMPTS")
    if raw_attempts is not None:
        try:
            attempts = int(raw_attempts)
        except ValueError:
            raise SettingsError(f"AWS_MAX_ATTEMPTS={raw_attempts!r} is not a whole number") from None
        if attempts < 1:
            raise SettingsError(f"AWS_MAX_ATTEMPTS={raw_attempts!r} must be at least 1")
        kwargs["max_attempts"] = attempts
    raw_mode = env.get("AWS_RETRY_MODE")
    if raw_mode is not None:
        if raw_mode not in RETRY_MODES:
            raise SettingsError(f"AWS_RETRY_MODE={raw_mode!r} is not one of {', '.join(RETRY_MODES)}")
        kwargs["retry_mode"] = raw_mode
    for var in ["AWS_ENDPOINT_URL", *(f"AWS_ENDPOINT_URL_{s.upper()}" for s in SERVICES)]:
        value = env.get(var)
        if value is not None and not value.startswith(("http://", "https://")):
            raise SettingsError(f"{var}={value!r} is not an http(s) URL")
    # The contract names AWS_REGION first; botocore itself only reads AWS_DEFAULT_REGION.
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region_name"] = region
    # Profile and endpoints are left to botocore, which reads the same variables (including
    # the per-service endpoints a single endpoint_url field could not express).
    return AwsClients(**kwargs)
