"""The AWS account an agent's or a client's EC2 work runs in (chalicelib.aws.accounts does the credentials).

An agent's instance was verified in one account at registration (``AgentRecord.account_id``, when known);
otherwise the client's single bound account, or the home account when self-hosted. A client with no usable
binding gets AccountNotBound (an Ec2Error to the workflows, 409 to the API): nothing is done anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from chalicelib.aws import accounts, ec2
from chalicelib.aws.accounts import AwsAccount
from chalicelib.repositories import agents, clients
from chalicelib.repositories import replicas as replica_repo


class AccountNotBound(ec2.LaunchError):
    """No account of the client to act in (a launch fails cleanly; the API answers 409)."""

    conflict_code = "account_not_bound"


def for_client(client_id: str, account_id: str | None = None, *, client=None) -> AwsAccount:
    """The account to act in for ``client_id`` (``account_id``: the instance's verified account if known).
    ``client``: its record when the caller read it already (not read again)."""
    client = client if client is not None else clients.get(client_id)
    if client is None:
        raise AccountNotBound(f"client {client_id} not found")
    try:
        return accounts.resolve(client, account_id)
    except accounts.AccountNotBound as exc:
        raise AccountNotBound(str(exc)) from exc


def for_agent(agent, *, client=None) -> AwsAccount:
    """The account the agent's instances live in (``client``: the agent's client record, if read already)."""
    return for_client(agent.client_id, getattr(agent, "account_id", None), client=client)


def for_replica(replica) -> AwsAccount:
    """The account a standby lives in: its agent's (a standby is launched, or attached after a describe, in the
    agent's account). A replica row names no account: its client's default one is wrong for a client bound to
    several (AccountNotBound) or, self-hosted, bound to another than the home account (nothing found there)."""
    agent = agents.get(replica.client_id, replica.agent_id)
    return for_client(replica.client_id, getattr(agent, "account_id", None))


def unreachable_account(replica) -> str | None:
    """The account a standby runs in when the product can no longer act there: its agent's recorded account (a
    verified one, or the one a forced unbinding pinned) that is no longer bound to the client. None when that
    account is bound (or the home account, self-hosted) or unknown: the product may still reach the standby there,
    so it must try (and an EC2 failure leaves the standby as it was)."""
    agent = agents.get(replica.client_id, replica.agent_id)
    if not getattr(agent, "account_id", None):
        return None  # nothing to check against: the client is not read
    return lost_account(clients.get(replica.client_id), agent)


def lost_account(client, agent) -> str | None:
    """``unreachable_account`` from records already read (the client's, the agent's: no read here): the agent's
    recorded account when it is no longer bound to ``client``, else None (bound, the home account self-hosted, or
    not known)."""
    account_id = getattr(agent, "account_id", None)
    if not account_id or client is None:
        return None
    try:
        accounts.resolve(client, account_id)
    except accounts.AccountNotBound:
        return account_id
    return None


def registered_to(client_id: str) -> Callable[[str], bool]:
    """``instance_id → True`` when the instance is registered to one of the client's agents (a hand-over may
    take traffic from it): the ownership checks of chalicelib/aws/ec2.py ask it about instances we did not
    launch."""
    return lambda instance_id: agents.get_instance(client_id, instance_id) is not None


def not_anothers(agent, instance_id: str | None) -> str | None:
    """``instance_id`` (an instance the agent's row names) unless the instances table gives it to another agent,
    of this client or another: a legacy agent's heartbeat may name an instance nobody registered yet, which
    another agent registers later. The launches copy, and the hand-over checks count as the agent's own, only
    what is not someone else's."""
    if not instance_id:
        return None
    row = agents.instance_row(instance_id)
    if row is not None and (row.client_id, row.agent_id) != (agent.client_id, agent.agent_id):
        return None
    return instance_id


class AccountUse(NamedTuple):
    """What the product still runs for a client in one of its accounts (an unbinding's check)."""

    agents: list  # live AgentRecords whose EC2 work runs there
    standbys: list  # active ReplicaRecords there (their agent's account: ``for_replica``), or possibly there
    unknown: tuple = ()  # live AgentRecords that may run there: their account is not known (``in_account``)


def account_of(client, agent) -> str | None:
    """The account ``agent``'s EC2 work runs in as things stand (None: nowhere, AccountNotBound)."""
    try:
        return accounts.resolve(client, getattr(agent, "account_id", None)).account_id
    except accounts.AccountNotBound:
        return None


def in_account(client, account_id: str) -> AccountUse:
    """The client's live agents and active standbys in ``account_id`` (one partition query of its agents, one of
    each such agent's replicas; admin-time). A deleted agent's standby still counts: it still runs there.

    An agent whose row names no account (a legacy agent: no identity document) resolves to none once its client is
    bound to several accounts, yet its instance runs in one of them. Its account is then what the product recorded
    elsewhere: an instance row of the agent whose identity document proved an account (``proven_account_of``; a
    replica row names no account, a standby runs in its agent's). With nothing recorded the product cannot know,
    and the safe answer is that it *may* run in ``account_id``: such an agent is in ``unknown`` (its standbys with
    the others), which refuses a plain unbinding naming it as possibly affected. Guessing "not there" would let the
    unbinding go and the product then act for it in the client's remaining account, where its instance may not be;
    the operator, who may know better, forces."""
    live, standbys, unknown = [], [], []
    for agent in agents.all_for_client(client.client_id):
        where = account_of(client, agent)
        possibly = False
        if where is None and not getattr(agent, "account_id", None):
            where = agents.proven_account_of(agent)
            possibly = where is None
        if where != account_id and not possibly:
            continue
        if not agent.deleted:
            (unknown if possibly else live).append(agent)
        standbys += [r for r in replica_repo.for_agent(agent.agent_id, include_final=False)
                     if r.client_id == client.client_id]
    return AccountUse(live, standbys, tuple(unknown))
