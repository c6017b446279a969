"""Test-wide setup: an in-process embedded AWS (moto) started before anything imports app.py.

The mock must be running before app.py (and powertools) create clients,
so it starts at import time of this module. Tables come from the pynamodb models (one definition).
"""

from __future__ import annotations

import functools
import json
import os
import re
import uuid
from contextlib import contextmanager
from datetime import date

os.environ.update(
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    SPOT_STAGE="dev",
    SPOT_TENANCY="self-hosted",
    POWERTOOLS_METRICS_DISABLED="true",
)
for _var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "TABLE_PREFIX"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from moto import mock_aws  # noqa: E402

from localmode.embedded_aws import speed_up_moto  # noqa: E402

# Property tests are judged on what they check, never on how fast one example ran: a worker of this suite holds
# gigabytes of moto state (a full GC pass pauses it for longer than Hypothesis' default 200 ms deadline) and shares
# two cores with another, and an example slow once fails the test ("unreliable results"/"Unreliable test timings").
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

_aws = mock_aws(config={"stepfunctions": {"execute_state_machine": True},
                        "lambda": {"use_docker": False}})
_aws.start()
speed_up_moto()  # the same answers; costs that no longer grow with what earlier tests of the session wrote

ADMIN_KEY = "test-admin-key-" + uuid.uuid4().hex


def pytest_unconfigure(config):
    _aws.stop()


_DATE_TEXT = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ]\d{2}:\d{2}")


def pytest_make_parametrize_id(config, val, argname):
    """A parameter holding a time of these days (one computed when the module is collected) gets a test id without
    it: xdist's workers collect a second apart at times, and xdist stops the run when their test ids differ. Fixed
    times (far past, far future) keep their readable ids."""
    found = _DATE_TEXT.search(val) if isinstance(val, str) else None
    if found is None:
        return None
    try:
        day = date(*map(int, found.groups()))
    except ValueError:
        return None
    return f"{argname}-time" if abs((day - date.today()).days) <= 3 else None


@pytest.fixture(scope="session")
def aws_tables():
    """Every product table, created once from the pynamodb models (and the model bucket, the fan-out queues)."""
    from chalicelib.aws.s3 import ensure_bucket
    from chalicelib.tables.provisioning import ensure_tables
    from localmode.queues import ensure_queues

    ensure_tables()
    ensure_bucket()
    ensure_queues()
    return True


@pytest.fixture(scope="session")
def admin_key(aws_tables):
    """The admin key; its SHA-256 hash sits in SSM as it would in AWS."""
    import boto3

    from chalicelib.auth import hash_secret
    from chalicelib.settings import get_settings

    boto3.client("ssm").put_parameter(Name=get_settings().admin_key_parameter, Type="SecureString",
                                      Value=hash_secret(ADMIN_KEY), Overwrite=True)
    return ADMIN_KEY


@pytest.fixture(scope="session")
def chalice_app(aws_tables):
    from app import app

    return app


@pytest.fixture
def api(chalice_app, admin_key):
    """The in-process Chalice test client (dev stage environment applied)."""
    from chalice.test import Client

    with Client(chalice_app, stage_name="dev") as client:
        yield client


class Caller:
    """Thin helper over chalice.test.Client: JSON in, (status, JSON) out."""

    def __init__(self, http, token: str | None = None, admin: str | None = None):
        self.http, self.token, self.admin = http, token, admin

    def headers(self, extra=None):
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.admin:
            headers["X-Admin-Key"] = self.admin
        return {**headers, **(extra or {})}

    def call(self, method, path, body=None, raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs = {"headers": self.headers(headers)}
        if data is not None:
            kwargs["body"] = data
        response = getattr(self.http, method.lower())(path, **kwargs)
        try:
            payload = json.loads(response.body) if response.body else None
        except ValueError:
            payload = response.body
        return response.status_code, payload

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)


@pytest.fixture
def admin(api, admin_key):
    """A caller holding the admin key."""
    return Caller(api.http, admin=admin_key)


@pytest.fixture
def tenants_of_this_test() -> set[str]:
    """The client ids ``make_tenant`` created in the running test."""
    return set()


@pytest.fixture
def make_tenant(admin, api, tenants_of_this_test):
    """Create a client through the admin API; returns (client_id, Caller with its token).

    Legacy agent mode is on (``legacy=True``): most tests drive the agent routes with the client token,
    as v4 agents do. Tests of verified agents pass ``legacy=False`` (tests/api/test_agent_identity.py)."""

    def _make(name: str | None = None, legacy: bool = True):
        status, body = admin.post("/api/admin/clients/create",
                                  {"name": name or f"tenant-{uuid.uuid4().hex[:10]}", "legacy_agents": legacy})
        assert status == 201, body
        tenants_of_this_test.add(body["client_id"])
        return body["client_id"], Caller(api.http, token=body["client_token"])

    return _make


@pytest.fixture
def fleet_jobs_see_this_test_only(monkeypatch, tenants_of_this_test):
    """The decision cycle (its dispatcher) and the replica coordinator walk every agent they act on. In the
    shared embedded AWS that is every earlier test's agents too (hundreds by the end of a run: minutes per
    cycle), so tests of those jobs let them see the agents of their own tenants only. Each agent is handled
    on its own, so what a test asserts about its agents is unchanged."""
    from chalicelib.repositories import agents

    for name in ("live_agent_keys", "agents_with_standbys"):
        every = getattr(agents, name)
        monkeypatch.setattr(agents, name, lambda every=every: (
            a for a in every() if a.client_id in tenants_of_this_test))


@pytest.fixture
def aws_signs_locally(monkeypatch):
    """The in-process server trusts local mode's test certificate as if it were AWS's for every region
    (tests run in the dev stage, where the real server never trusts it): documents signed by
    localmode.identity_signer / FakeImds then verify, as real IMDS documents do in AWS."""
    from chalicelib import identity_documents

    monkeypatch.setattr(identity_documents, "trusted_certificates",
                        lambda region: [identity_documents.local_certificate()])


@functools.cache
def aws_client(service: str, region: str | None = None):
    """One boto3 client per service and region for the whole session, on the in-process mock.

    Building a client costs ~0.1-0.25 s (botocore builds a method and its docstring for every operation;
    EC2 has ~700), far more than the mocked call it makes; helpers called around every request (the
    ``snapshot_*`` helpers, ``account_instance``, the failover helpers) use this instead of ``boto3.client``.
    """
    import boto3

    return boto3.client(service, region_name=region or os.environ["AWS_DEFAULT_REGION"])


@contextmanager
def dynamodb_calls():
    """Every DynamoDB call made inside, as (operation, table, index, select): what a code path reads."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call
    seen: list[tuple[str, str, str | None, str | None]] = []

    def counted(client, op, params):
        if client.meta.service_model.service_name == "dynamodb":
            seen.append((op, params.get("TableName", ""), params.get("IndexName"), params.get("Select")))
        return original(client, op, params)

    BaseClient._make_api_call = counted
    try:
        yield seen
    finally:
        BaseClient._make_api_call = original


# Instance types tests make up so that each test's pools are its own: "t<8 hex>.large"
# (tests.api._support.random_instance_type) and "<family>.<size with 6+ hex digits in a row>" ("m5.c1a2b3c4dxl",
# "m5.041500123456xl"; no real size has more than two digits). An agent's report
# creates pools only for a type the catalogue lists (chalicelib/reported_pools.py); ``made_up_types_are_catalogued``
# (autouse) counts these as listed. tests/api/test_security_walk_7.py makes up types this pattern leaves out.
MADE_UP_TYPE = re.compile(r"t[0-9a-f]{8}\.large|[a-z][0-9]\.[a-z]?[0-9a-f]{6,}[0-9a-z]*")


@pytest.fixture(autouse=True)
def made_up_types_are_catalogued(monkeypatch):
    from chalicelib import reported_pools

    listed = reported_pools.catalogued
    monkeypatch.setattr(reported_pools, "catalogued", lambda t: listed(t) or bool(MADE_UP_TYPE.fullmatch(t)))


def new_instance_id() -> str:
    """A random, well-formed EC2 instance id."""
    return "i-" + uuid.uuid4().hex[:17]


def account_instance(az: str = "eu-west-1c") -> str:
    """A live instance in the (home) moto account, untagged: what an agent launched itself. The product only
    accepts instance ids that exist in the client's account."""
    client = aws_client("ec2", az[:-1])
    from localmode.embedded_aws import image_id
    image = image_id(client)
    return client.run_instances(ImageId=image, InstanceType="m5.large", MinCount=1, MaxCount=1,
                                Placement={"AvailabilityZone": az})["Instances"][0]["InstanceId"]


def registration(**overrides):
    """A valid register body (legacy agent v4 fields)."""
    body = {"instance_id": new_instance_id(), "instance_type": "m5.large", "region": "eu-west-1",
            "az": "eu-west-1a", "ami_id": "ami-12345678", "hostname": "web-1",
            "agent_version": "5.0.0", "logical_agent_id": f"web-{uuid.uuid4().hex[:8]}",
            "mode": "spot", "private_ip": "10.0.0.1"}
    body.update(overrides)
    return body


@pytest.fixture
def tenant_with_agent(make_tenant):
    """A tenant with one registered agent: (client_id, caller, agent_id, register body)."""
    client_id, caller = make_tenant()
    body = registration()
    status, reply = caller.post("/api/agents/register", body)
    assert status == 200, reply
    return client_id, caller, reply["agent_id"], body


def invoke_schedule(api, name: str, now=None):
    """Deliver one 'Scheduled Event' to an ``@app.schedule`` handler, as EventBridge would.

    The event's ``time`` is the run's clock (now unless given), as EventBridge sets it. A fan-out dispatcher is
    followed by its workers over the messages it sent, as in local mode (``localmode.queues.after_dispatch``:
    the decision-worker; the savings-worker then savings-fleet): the result holds the dispatcher's counts and
    the workers' outcomes.
    """
    from datetime import datetime, timezone

    from localmode.queues import after_dispatch

    now = now or datetime.now(timezone.utc)
    event = api.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                         detail={}, resources=[])
    event["time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = api.lambda_.invoke(name, event).payload
    return {**result, **after_dispatch(name, now, "dev")}


@pytest.fixture(scope="session")
def failover_machine(aws_tables):
    """The failover state machine in moto, from the one ASL file, its tasks run by the in-process
    handlers, Wait/Retry time skipped. Returns its ARN. Executions run in moto's
    threads next to the test's own calls, so every request is made atomic (``atomic_moto_requests``)."""
    from localmode.workflows import compress_time, ensure_failover_state_machine, install_lambda_bridge

    serialise_moto_requests()  # executions run in moto's threads next to the tests' own calls
    install_lambda_bridge("dev")
    compress_time(None)
    return ensure_failover_state_machine("dev")


def serialise_moto_requests() -> None:
    """Handle each AWS request atomically, as the real services do; moto's in-memory backends are not
    thread-safe (a transaction that fails restores a deep copy of the table, losing another thread's
    write; "dictionary changed size during iteration" when one thread queries a table another is
    writing). Lambda invocations (Step Functions → our tasks) are not serialised: they run handlers
    that make their own requests. Installed once, for the rest of the session."""
    import threading

    from moto.core.botocore_stubber import BotocoreStubber

    real_process = BotocoreStubber.process_request
    if getattr(real_process, "serialised", False):
        return
    lock = threading.RLock()

    def process_request(self, request):
        if "://lambda." in request.url:
            return real_process(self, request)
        with lock:
            return real_process(self, request)

    process_request.serialised = True
    BotocoreStubber.process_request = process_request


@pytest.fixture
def atomic_moto_requests():
    """For tests that call handlers from several threads at once (see ``serialise_moto_requests``)."""
    serialise_moto_requests()
