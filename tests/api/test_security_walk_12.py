"""Security walk 12: the AWS side of tenancy — what reaches the sentinel as an event of a client's account, the
credentials the service holds for each client's account binding (the ExternalId, the per-container session cache),
and what a client's own AWS account can make the service do to another tenant. Each test is one attack; its
docstring says what happened before the fix (when it found something) and what holds now."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from chalicelib.sentinel import on_event
from chalicelib.settings import event_queue_name, forwarded_event_dead_letter_queue_name
from chalicelib.tables import InterruptionTable
from components.sentinel import REDRIVEN_FROM
from tests.api.test_ownership import assume_role_tenancy  # noqa: F401 - a fixture
from tests.conftest import aws_client
from tests.e2e.failover_support import ACCOUNT, REGION, register_agent, warning

ATTACKER_ACCOUNT = "210987654321"  # a client account (moto keeps accounts apart)
EXTERNAL_ID = "so-walk12-external-id-0123456789"


def _in_account(account: str, role_name: str) -> boto3.Session:
    """A session in ``account`` (moto links an assumed role's credentials to the role's account)."""
    credentials = aws_client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role_name}",
                                                RoleSessionName="walk12")["Credentials"]
    return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                         aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"])


def _drain(sqs, url: str) -> list[str]:
    bodies = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [m["Body"] for m in batch]
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    return bodies


# --- the redrive of a client account's dead-lettered events ----------------------------------------------------------


@pytest.mark.usefixtures("failover_machine")
def test_a_client_cannot_redrive_an_event_of_another_tenants_account_into_the_sentinel(make_tenant, monkeypatch,
                                                                                         capsys):
    """The attack: tenant B's primary runs in account 123456789012. Client X owns account 210987654321, whose stack
    (infra/client-account-role.yaml) dead-letters what EventBridge cannot forward into a queue *X owns*: anyone of X's
    account with SQS rights can put any message there (the queue policy only restricts other principals). X puts in
    an interruption warning naming B's primary with ``"account": "123456789012"`` and asks the operator to redrive
    (its alarm fires; the runbook says to). ``infra/event_source.py redrive --client-role-arn`` sent every body as
    is to the sentinel's event queue, and the sentinel believes an event's ``account`` (on the live path EventBridge
    sets it and a cross-account rule cannot rewrite it): before the fix the forged warning started B's failover
    (a replacement launched, B's traffic moved, B's old primary retired under auto-terminate). Now a client redrive
    sends on only EventBridge events whose ``account`` is the access role's account; the forged one (and anything
    that is not an event) stays in X's queue, the command exits 1 naming how many, and B's instance has no
    interruption. X's genuine event of its own account is still moved."""
    from infra import event_source
    from infra.policies import client_role_name

    victim_id, _, _, victim_primary, _ = register_agent(make_tenant)
    stage = f"t{uuid.uuid4().hex[:8]}"  # the session's moto is shared: queues of this test only
    role = client_role_name(stage)
    attacker_sqs = _in_account(ATTACKER_ACCOUNT, role).client("sqs", region_name=REGION)
    dead_letters = attacker_sqs.create_queue(QueueName=forwarded_event_dead_letter_queue_name(stage))["QueueUrl"]
    assert f"/{ATTACKER_ACCOUNT}/" in dead_letters
    own = json.dumps({**warning("i-0aaaaaaaaaaaaaaaa"), "account": ATTACKER_ACCOUNT})
    forged = json.dumps({**warning(victim_primary), "account": ACCOUNT})
    for body in (own, forged, "not an event"):
        attacker_sqs.send_message(QueueUrl=dead_letters, MessageBody=body)
    sqs = aws_client("sqs", REGION)
    event_queue = sqs.create_queue(QueueName=event_queue_name(stage))["QueueUrl"]
    monkeypatch.setattr(event_source, "redrive_forwarded", functools.partial(event_source.redrive_forwarded, wait_s=0))

    code = event_source.main(["redrive", "--stage", stage, "--region", REGION, "--forwarded-from", REGION,
                              "--client-role-arn", f"arn:aws:iam::{ATTACKER_ACCOUNT}:role/{role}",
                              "--external-id", EXTERNAL_ID])

    moved = _drain(sqs, event_queue)
    for body in moved:  # what the sentinel's event source mapping would deliver (a body not JSON: its DLQ)
        if body.startswith("{"):
            on_event(json.loads(body))
    assert list(InterruptionTable.query(victim_id, consistent_read=True)) == []
    assert [json.loads(body) for body in moved] == [{**json.loads(own), REDRIVEN_FROM: ATTACKER_ACCOUNT}]  # marked
    assert code == 1 and f"2 message(s) of {forwarded_event_dead_letter_queue_name(stage)}" in capsys.readouterr().err
    attributes = attacker_sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["All"])["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 2


# --- which account a standby is retired in --------------------------------------------------------------------------

FIRST, SECOND = "111111111111", "333333333333"  # two accounts bound to one client


def _standby_in_second_account(admin, make_tenant) -> tuple[str, object, str, dict]:
    """A client bound to two accounts (assume-role tenancy) whose verified agent runs in the second, and a standby
    the product launched there for it: (client id, caller, agent id, replica reply)."""
    from localmode.identity_signer import signed_identity
    from tests.api.test_ownership import in_account, manual
    from tests.conftest import registration
    from tests.e2e.failover_support import ZONES, launch_primary, unique_type

    client_id, caller = make_tenant()
    for account in (FIRST, SECOND):
        status, reply = admin.post(f"/api/admin/clients/{client_id}/accounts",
                                   {"account_id": account, "role_arn": f"arn:aws:iam::{account}:role/SpotOptimizer-dev"})
        assert status == 201, reply
    itype = unique_type()
    with in_account(SECOND):
        primary = launch_primary(itype)
    document, signature = signed_identity(instance_id=primary, instance_type=itype, az=ZONES[0], region=REGION,
                                          account_id=SECOND)
    status, reply = caller.post("/api/agents/register", {
        **registration(instance_id=primary, instance_type=itype, region=REGION, az=ZONES[0], mode="spot"),
        "identity_document": document, "identity_signature": signature})
    assert status == 200, reply
    agent_id = reply["agent_id"]
    manual(caller, agent_id)
    status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {"pool_id": f"{itype}.{ZONES[1]}"})
    assert status == 201 and standby["instance_id"], standby
    return client_id, caller, agent_id, standby


def _state_in(account: str, instance_id: str) -> str:
    from tests.api.test_ownership import in_account

    with in_account(account):
        [instance] = [i for r in aws_client("ec2", REGION).describe_instances(InstanceIds=[instance_id])["Reservations"]
                      for i in r["Instances"]]
    return instance["State"]["Name"]


@pytest.mark.usefixtures("aws_signs_locally", "assume_role_tenancy")
@pytest.mark.parametrize("how", ["client-deletes-it", "it-expires"])
def test_a_standby_in_a_clients_second_account_is_retired_there(admin, make_tenant, monkeypatch, how):
    """The defect: ``replicas.retire`` (every end of a standby: the client's DELETE, expiry, a failed launch, the
    coordinator, the failover) chose its account with ``tenancy.for_client(client_id, replica.account_id)``, and a
    replica row has no ``account_id``: always the client's *default* account. For a client bound to several accounts
    (assume-role tenancy) that is AccountNotBound: the client's DELETE of its standby answered 409
    ``account_not_bound`` and the standby kept running (and billing) in its account; an expired pre-warmed standby
    raised out of the cleanup job's first step (``expire_standbys``), so the job stopped there on every run — no
    orphan reaped and no stuck interruption swept, for every tenant, as long as that standby stayed (self-hosted, a
    client bound to another account had its standbys "terminated" in the home account, where they are not, and left
    running). Now a standby is retired in its agent's account (``tenancy.for_replica``: where it was launched or
    attached), the same as the agent's other EC2 work."""
    from chalicelib.jobs import cleanup
    from chalicelib.repositories import replicas as replica_repo
    from chalicelib.tables.replicas import ReplicaTable

    client_id, caller, agent_id, standby = _standby_in_second_account(admin, make_tenant)
    assert _state_in(SECOND, standby["instance_id"]) == "running"

    if how == "client-deletes-it":
        status, reply = caller.call("DELETE", f"/api/agents/{agent_id}/replicas/{standby['replica_id']}")
        assert status == 200 and reply["status"] == "terminated", reply
    else:
        ReplicaTable(agent_id, standby["replica_id"]).update(
            actions=[ReplicaTable.expires_at.set(datetime.now(UTC) - timedelta(minutes=1))])
        every = replica_repo.active_with_expiry
        monkeypatch.setattr(replica_repo, "active_with_expiry",
                            lambda: [r for r in every() if r.client_id == client_id])  # the shared moto's others
        assert cleanup.expire_standbys(datetime.now(UTC)) == [standby["replica_id"]]

    assert _state_in(SECOND, standby["instance_id"]) in ("shutting-down", "terminated")


# --- the credentials held for a binding -------------------------------------------------------------------------------


def test_one_clients_role_session_is_never_used_for_another_client_or_after_its_unbinding(admin, make_tenant,
                                                                                           monkeypatch):
    """The attack (confused deputy): tenant B has bound its account Y through its role; tenant A gets Y bound to
    itself with B's role ARN (the operator trusts what A says is its account), hoping the service acts in Y for A
    with the credentials it already holds for B. Holds: every AssumeRole of A's binding carries A's own ExternalId
    (B's role trusts B's alone, so AWS refuses it: 409 ``role_not_assumable``; moto does not check trust policies,
    hence the spy), and the per-container session cache is keyed by role, ExternalId and session name (which names
    the client), so B's cached session is never handed to A. Once B unbinds Y, nothing resolves to Y for B any more
    (409 ``account_not_bound``) although its session is still cached, and a rebinding with another role uses that
    role, not the cached one."""
    from chalicelib import tenancy
    from chalicelib.aws import accounts

    assumed: list[dict] = []
    real = accounts._client

    def spying(service, region):
        client = real(service, region)
        if service == "sts":
            client.meta.events.register("provide-client-params.sts.AssumeRole",
                                        lambda params, **_: assumed.append(dict(params)))
        return client

    monkeypatch.setattr(accounts, "_client", spying)
    account, role = "444444444444", "arn:aws:iam::444444444444:role/SpotOptimizer-dev"
    (b_id, b_caller), (a_id, a_caller) = make_tenant(), make_tenant()
    b_external = b_caller.get("/api/client/accounts")[1]["external_id"]
    a_external = a_caller.get("/api/client/accounts")[1]["external_id"]
    assert admin.post(f"/api/admin/clients/{b_id}/accounts", {"account_id": account, "role_arn": role})[0] == 201
    b_ec2 = accounts.role_client("ec2", REGION, tenancy.for_client(b_id, account))

    assert admin.post(f"/api/admin/clients/{a_id}/accounts", {"account_id": account, "role_arn": role})[0] == 201
    a_ec2 = accounts.role_client("ec2", REGION, tenancy.for_client(a_id, account))

    assert a_ec2 is not b_ec2
    assert [(c["ExternalId"], c["RoleSessionName"]) for c in assumed if c["RoleArn"] == role] == [
        (b_external, f"spot-optimizer-dev-{b_id}"), (a_external, f"spot-optimizer-dev-{a_id}")]
    assert admin.call("DELETE", f"/api/admin/clients/{b_id}/accounts/{account}")[0] == 200
    with pytest.raises(tenancy.AccountNotBound):
        tenancy.for_client(b_id, account)
    other_role = "arn:aws:iam::444444444444:role/SpotOptimizer-dev-2"
    assert admin.post(f"/api/admin/clients/{a_id}/accounts", {"account_id": account, "role_arn": other_role})[0] == 201
    assert tenancy.for_client(a_id, account).role_arn == other_role
    assert accounts.role_client("ec2", REGION, tenancy.for_client(a_id, account)) is not a_ec2
    assert assumed[-1]["RoleArn"] == other_role and assumed[-1]["ExternalId"] == a_external


# --- the event bus after a client's deletion ----------------------------------------------------------------------


@pytest.mark.parametrize("trouble", ["the-bus-refuses-once", "the-listing-index-lags"])
def test_deleting_a_client_closes_the_event_bus_to_its_account(admin, make_tenant, monkeypatch, trouble):
    """The defect: the product's default bus accepts a client account's events only while a client of the stage binds
    it. ``DELETE /api/admin/clients/{id}`` closed it last, after deleting every row of the client, asking the clients'
    listing index whether anyone still bound the account. Two ways it stayed open for good to the deleted client's
    account (its ``events:PutEvents`` statement kept, and counted against the bus policy's 10 KB, ~45 accounts):
    the bus refusing once (503, "retry" — and the retry is 404, the client being gone, so nothing ever closes it),
    and the index, which is eventually consistent, still listing the just-deleted client with its binding (the
    account looked bound: nothing closed, no error). Unbinding an account asked the same index right after its
    write. Now the bus is closed before the rows are deleted (a failure is a 503 the DELETE can repeat, the client
    still there) and the question is whether any *other* client binds the account (``besides``), so neither the
    index's lag nor the client's own row keeps the account on the bus."""
    from botocore.exceptions import ClientError

    from chalicelib.aws import event_bus
    from chalicelib.tables.clients import CLIENT_LISTING, ClientTable
    from tests.api.test_ownership import bus_principals, fresh_account

    account = fresh_account()
    client_id, _ = make_tenant()
    assert admin.post(f"/api/admin/clients/{client_id}/accounts",
                      {"account_id": account, "role_arn": f"arn:aws:iam::{account}:role/SpotOptimizer-dev"})[0] == 201
    sid = f"spot-optimizer-dev-{account}"
    assert sid in bus_principals()

    if trouble == "the-bus-refuses-once":
        real_revoke, calls = event_bus.revoke, []

        def refuse_once(*args, **kwargs):
            calls.append(args)
            if len(calls) == 1:
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "RemovePermission")
            return real_revoke(*args, **kwargs)

        monkeypatch.setattr(event_bus, "revoke", refuse_once)
        status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}")
        assert status == 503 and reply["error"] == "event_bus_unavailable", reply
    else:
        stale, listing = ClientTable.get(client_id), ClientTable.by_created

        def lagging(hash_key, *args, **kwargs):  # the index still shows the deleted row
            rows = list(type(listing).query(listing, hash_key, *args, **kwargs))
            return rows if hash_key != CLIENT_LISTING or any(r.client_id == client_id for r in rows) else rows + [stale]

        monkeypatch.setattr(listing, "query", lagging)

    status, reply = admin.call("DELETE", f"/api/admin/clients/{client_id}")
    assert status == 200, reply
    assert sid not in bus_principals()
